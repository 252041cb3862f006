"""Checkpoint folders: config.json (everything needed to rebuild the graph and prepare its
input), checkpoint lookup (the latest, or CKPT/best/'s), and restore with a check that the checkpoint
matches the graph."""
import json
import os
import re

import tensorflow.compat.v1 as tf

from model.atomic import atomic_output
from model.dcr import NetworkConfig
from model.errors import InputError
from model.normalization import ZSCORE, stored_normalization

CONFIG_NAME = 'config.json'
BEST_DIR = 'best'
LATEST = 'latest'   # in place of a checkpoint path: CKPT's latest
BEST = 'best'       # in place of a checkpoint path: CKPT/best/'s (validation-selected), else CKPT's latest
KEYWORDS = (LATEST, BEST)
CHECKPOINT_PREFIX = 'model.ckpt'
RUN_STATE_NAMES = ('global_step', 'train_seconds', 'beta1_power', 'beta2_power')   # not the network's
OPTIMIZER_SLOT = r'/Adam(_\d+)?$'   # Adam's moment estimates of a variable


def config_path(ckpt_dir):
    """Path of the run's config.json."""
    return os.path.join(ckpt_dir, CONFIG_NAME)


def write_config(ckpt_dir, network_config, crop_size, training_settings, normalization=ZSCORE):
    """Write config.json atomically: the network config, crop size, training settings and the
    intensity normalisation of the training records."""
    os.makedirs(ckpt_dir, exist_ok=True)
    document = {'network': network_config.to_dict(), 'crop_size': crop_size,
                'training': training_settings, 'normalization': normalization}
    with atomic_output(config_path(ckpt_dir)) as temporary:
        with open(temporary, 'w') as stream:
            json.dump(document, stream, indent=1, sort_keys=True)


def _read_document(ckpt_dir):
    """config.json as a dict; InputError when the folder or file is missing or not JSON."""
    path = config_path(ckpt_dir)
    if not os.path.isdir(ckpt_dir):
        raise InputError('{}: checkpoint folder does not exist'.format(ckpt_dir))
    try:
        with open(path) as stream:
            return json.load(stream)
    except FileNotFoundError:
        raise InputError('{}: missing; is {} a folder written by Train.py?'.format(path, ckpt_dir)) from None
    except ValueError as error:
        raise InputError('{}: invalid config ({})'.format(path, error)) from None


def read_normalization(ckpt_dir):
    """The intensity normalisation in CKPT/config.json (z-score for runs from before it was kept)."""
    return stored_normalization(_read_document(ckpt_dir), config_path(ckpt_dir))


def read_config(ckpt_dir):
    """(NetworkConfig, crop size, training settings dict) from CKPT/config.json.

    Raises:
      InputError: folder or file missing, invalid JSON, or an invalid network config.
    """
    document = _read_document(ckpt_dir)
    try:
        return (NetworkConfig.from_dict(document['network']), int(document['crop_size']),
                document.get('training', {}))
    except (ValueError, KeyError, TypeError) as error:
        raise InputError('{}: invalid config ({})'.format(config_path(ckpt_dir), error)) from None


def network_variables(variables):
    """Those of `variables` that belong to the network itself (weights and batch-norm statistics),
    not to Adam (its slots and beta powers) nor to the run's bookkeeping (step, training time)."""
    return [variable for variable in variables
            if variable.op.name.rsplit('/', 1)[-1] not in RUN_STATE_NAMES
            and not re.search(OPTIMIZER_SLOT, variable.op.name)]


def holds_trained_run(ckpt_dir):
    """Whether `ckpt_dir` holds a Train.py run: a config.json and at least one checkpoint."""
    return os.path.isfile(config_path(ckpt_dir)) and tf.train.latest_checkpoint(ckpt_dir) is not None


def step_of(checkpoint):
    """The global step in a checkpoint path (CKPT/model.ckpt-<step>)."""
    return int(checkpoint.rsplit('-', 1)[1])


def find_checkpoint(ckpt_dir, checkpoint=LATEST):
    """The checkpoint to use: CKPT's latest (LATEST), CKPT/best/'s else CKPT's latest (BEST), or
    the checkpoint path `checkpoint`.

    Raises:
      InputError: when there is no checkpoint, or `checkpoint` is empty or a folder.
    """
    if checkpoint not in KEYWORDS:
        if not checkpoint or os.path.isdir(checkpoint):
            raise InputError("{!r}: not a checkpoint; give '{}', '{}' or a checkpoint path such as "
                             'CKPT/model.ckpt-<step>'.format(checkpoint, LATEST, BEST))
        if not tf.train.checkpoint_exists(checkpoint):
            raise InputError('{}: checkpoint does not exist'.format(checkpoint))
        return checkpoint
    searched = (os.path.join(ckpt_dir, BEST_DIR), ckpt_dir) if checkpoint == BEST else (ckpt_dir,)
    for directory in searched:
        latest = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
        if latest:
            return latest
    raise InputError('{}: holds no checkpoint (train with Train.py first)'.format(ckpt_dir))


def _by_checkpoint_name(variables):
    """{name in the checkpoint: variable}: a dict is taken as it is, a list by the variables' names."""
    return dict(variables) if isinstance(variables, dict) else {v.op.name: v for v in variables}


def check_compatible(checkpoint, variables):
    """Raise InputError unless the checkpoint holds every variable with the same shape.

    variables: a list, or a dict {name in the checkpoint: variable} (as tf.train.Saver takes).
    """
    stored = dict(tf.train.list_variables(checkpoint))
    for name, variable in _by_checkpoint_name(variables).items():
        shape = variable.shape.as_list()
        if name not in stored:
            raise InputError('{}: made with a different network configuration (no variable {})'.format(
                checkpoint, name))
        if list(stored[name]) != shape:
            raise InputError('{}: made with a different network configuration ({} has shape {}, '
                             'the graph expects {})'.format(checkpoint, name, stored[name], shape))


def restore(session, checkpoint, variables):
    """Restore `variables` (a list, or a dict by checkpoint name) from a checkpoint after
    checking that it matches them."""
    check_compatible(checkpoint, variables)
    tf.train.Saver(_by_checkpoint_name(variables)).restore(session, checkpoint)
