"""SavedModel export of a trained network, and loading one back.

An export is TF Serving's layout, one folder per version:

  OUTPUT/<version>/saved_model.pb, variables/    tag 'serve', signature 'serving_default':
      input  'slices'         float32 [N, H, W, 4]: normalised axial slices (FLAIR, T1, T1c, T2),
                              H and W any multiples of 32 (checked when run)
      output 'probabilities'  float32 [N, H, W, 5]: softmax over the labels 0-4
      output 'labels'         uint8 [N, H, W]: their argmax
  OUTPUT/<version>/assets.extra/preprocessing.json    how to prepare the slices (PREPROCESSING),
                              the intensity normalisation, the network, the checkpoint and the
                              decoding Inference.py applies by default (model.recipes)

The graph is the network alone (batch norm with its moving statistics), so anything that runs a
SavedModel can use it; Inference.py --saved-model adds its own windows, test-time variants and
decoding around it.
"""
import json
import os

import tensorflow.compat.v1 as tf

from model import checkpoints, recipes
from model.atomic import atomic_output, remove_stale_partials
from model.dcr import NUM_MODALITIES, OUTPUT_STRIDE, NetworkConfig, build_network
from model.errors import InputError
from model.normalization import CLIP_SD, check_normalization

INPUT = 'slices'
OUTPUTS = ('probabilities', 'labels')
SIGNATURE = tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY
TAG = tf.saved_model.tag_constants.SERVING
EXTRA_DIR = 'assets.extra'
PREPROCESSING_NAME = 'preprocessing.json'
PREPROCESSING = (
    'Stack the co-registered, skull-stripped FLAIR, T1, T1c and T2 volumes as 4 channels (in that order). '
    "If normalization.method is 'histogram', first map each channel's non-zero voxels piecewise linearly "
    "from the volume's own percentiles normalization.percentiles (over that channel's non-zero voxels) onto "
    'normalization.standard, rounding to integers. Brain voxels are those where any channel is non-zero. '
    'Per channel, subtract the mean and divide by the standard deviation taken over the brain voxels of the '
    'whole volume, clip to [-clip_sd, clip_sd], and set voxels outside the brain to 0. Feed axial slices, '
    'cut or zero-padded to a height and width that are multiples of 32.')


def versions(output_dir):
    """The integer version folders in `output_dir`, ascending."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(int(name) for name in os.listdir(output_dir)
                  if name.isdigit() and os.path.isdir(os.path.join(output_dir, name)))


def preprocessing_document(network_config, normalization, checkpoint):
    """The JSON written beside an export: how to prepare its input, and what it was made from."""
    return {'input': INPUT, 'channels': ['flair', 't1', 't1c', 't2'], 'size_multiple': OUTPUT_STRIDE,
            'outputs': list(OUTPUTS), 'labels': {'0': 'background', '1': 'necrosis', '2': 'oedema',
                                                 '3': 'non-enhancing tumour', '4': 'enhancing tumour'},
            'preprocessing': PREPROCESSING, 'clip_sd': CLIP_SD, 'normalization': normalization,
            'network': network_config.to_dict(), 'checkpoint': checkpoint,
            'decoding': recipes.MEASURED.decoding.to_dict()}


def export(ckpt_dir, output_dir, checkpoint=checkpoints.LATEST, version=None):
    """Write the network of a training run folder as OUTPUT/<version>/ (the next free version by
    default) and return that folder. It appears complete or not at all.

    Raises:
      InputError: no usable config.json or checkpoint, or the version exists already.
    """
    network_config = checkpoints.read_config(ckpt_dir)[0]
    normalization = checkpoints.read_normalization(ckpt_dir)
    checkpoint_path = checkpoints.find_checkpoint(ckpt_dir, checkpoint)
    version = version or (versions(output_dir) or [0])[-1] + 1
    target = os.path.join(output_dir, str(version))
    if os.path.exists(target):
        raise InputError('{}: exists already; give another --version'.format(target))
    os.makedirs(output_dir, exist_ok=True)
    remove_stale_partials(output_dir)
    with atomic_output(target) as temporary:
        with tf.Graph().as_default() as graph, tf.Session() as session:
            slices = tf.placeholder(tf.float32, [None, None, None, NUM_MODALITIES], name=INPUT)
            probabilities = tf.nn.softmax(build_network(slices, network_config, False), name=OUTPUTS[0])
            labels = tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8, name=OUTPUTS[1])
            checkpoints.restore(session, checkpoint_path, graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES))
            builder = tf.saved_model.builder.SavedModelBuilder(temporary)
            signature = tf.saved_model.signature_def_utils.predict_signature_def(
                {INPUT: slices}, dict(zip(OUTPUTS, (probabilities, labels))))
            builder.add_meta_graph_and_variables(session, [TAG], signature_def_map={SIGNATURE: signature},
                                                 strip_default_attrs=True)
            builder.save()
        os.makedirs(os.path.join(temporary, EXTRA_DIR))
        with open(os.path.join(temporary, EXTRA_DIR, PREPROCESSING_NAME), 'w') as stream:
            json.dump(preprocessing_document(network_config, normalization, checkpoint_path), stream,
                      indent=1, sort_keys=True)
    return target


def resolve(export_dir):
    """The version folder to load: `export_dir` itself when it holds saved_model.pb, else its
    highest version."""
    if os.path.isfile(os.path.join(export_dir, 'saved_model.pb')):
        return export_dir
    found = versions(export_dir)
    if not found:
        raise InputError('{}: holds neither saved_model.pb nor version folders (write one with '
                         'Export.py)'.format(export_dir))
    return os.path.join(export_dir, str(found[-1]))


def read_preprocessing(version_dir):
    """(normalisation, NetworkConfig) from an export's preprocessing.json."""
    path = os.path.join(version_dir, EXTRA_DIR, PREPROCESSING_NAME)
    try:
        with open(path) as stream:
            document = json.load(stream)
        return check_normalization(document['normalization'], path), NetworkConfig.from_dict(document['network'])
    except FileNotFoundError:
        raise InputError('{}: missing; was {} written by Export.py?'.format(path, version_dir)) from None
    except (ValueError, KeyError, TypeError) as error:
        raise InputError('{}: invalid ({})'.format(path, error)) from None


def load(session, version_dir, scope='export'):
    """Load an export into the session's graph under `scope`; returns its (input, probabilities)
    tensors."""
    try:
        meta_graph = tf.saved_model.loader.load(session, [TAG], version_dir, import_scope=scope)
        signature = meta_graph.signature_def[SIGNATURE]
        return tuple(tf.saved_model.utils.get_tensor_from_tensor_info(info, session.graph, scope)
                     for info in (signature.inputs[INPUT], signature.outputs[OUTPUTS[0]]))
    except (IOError, RuntimeError, KeyError, ValueError) as error:
        raise InputError('{}: not a SavedModel from Export.py ({})'.format(
            version_dir, str(error).splitlines()[0] if str(error) else type(error).__name__)) from None
