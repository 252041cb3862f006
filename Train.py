"""Step 3: train the DCR network (ResNet-50 + dilated convolution refine + deconvolution).

Reads the TFRecords of create_pascal_tf_record.py, trains with softmax cross-entropy (optionally + a soft
Dice term) + L2 weight decay and Adam, and writes CKPT/model.ckpt-<step>, CKPT/config.json and TensorBoard
events. --recipe picks the network, augmentation, loss, optimiser and validation decoding at once
(model/recipes.py: 'paper', 'released' or 'measured'); each flag below overrides one of its fields, and
config.json records the recipe and every resolved value. Rerunning resumes from the latest checkpoint;
--num-steps is the total global step to reach. With a validation list, whole volumes are predicted every
few steps, decoded as the recipe decodes (the measured recipe: as Inference.py's defaults do), and the
best checkpoint by mean WT/TC/ET Dice (or one region's, --select-on) is kept in CKPT/best/. SIGINT/SIGTERM
save the step reached and exit with 128 + the signal's number (130, 143), so a caller can tell it did not
finish.
"""
import dataclasses
import math
import os
import sys

from model import checkpoints, cli, paths, recipes
from model.cpu import cpu_has_bfloat16, vector_extensions
from model.dcr import ARCHITECTURES, DCR_TYPES, NetworkConfig
from model.decoding import DECODINGS, TEST_TIME_AUGMENTATIONS
from model.distribute import (TF_CONFIG, Distribution, WorkerLost, cluster_from_environment, default_device_count,
                              has_gpu)
from model.errors import InputError
from model.input import AugmentConfig
from model.lists import read_patient_list
from model.losses import LossConfig
from model.records import resolve_records
from model.training import TrainingError, TrainingStopped, train
from model.training_settings import SELECTION_SCORES, Schedule, TrainingSettings, ValidationConfig

TRAIN_RECORDS = paths.TRAIN_RECORDS
VAL_LIST = paths.VAL_LIST         # used when it exists; --val-list '' turns validation off
CKPT_DIR = paths.CKPT_DIR
LOG_DIR = ''                      # '' means CKPT_DIR/logs
NUM_STEPS = 50000                 # total global step to reach
NUM_EPOCHS = 0.0                  # when > 0, overrides NUM_STEPS (epochs over the records)
# The network, augmentation, loss, optimiser, batch size and validation decoding: one of
# model/recipes.py's RECIPES. 'measured' is this project's defaults, each with its evidence there;
# 'paper' what the paper states; 'released' what the authors' code did, less its bugs.
RECIPE = recipes.DEFAULT
# A trained run folder (e.g. pretrained) whose network a new run starts from, for fine-tuning: the
# architecture comes from its config.json, the optimiser and step start afresh; '' starts from scratch.
INIT_FROM = ''
SAVE_EVERY_STEPS = 1000
SAVE_EVERY_MINUTES = 10.0
KEEP_CHECKPOINTS = 5
SUMMARY_EVERY_STEPS = 100
VALIDATE_EVERY_STEPS = 2000
SELECT_ON = 'mean'                # the validation Dice that picks CKPT/best/: 'mean' of WT/TC/ET, or WT, TC, ET
TIME_BUDGET_MINUTES = 0.0         # > 0: stop (and save) after this much training time
GPU_MEMORY_FRACTION = 0.0         # 0: grow GPU memory as needed
SEED = 0                          # initial weights and slice stream; same seed, same batches
BFLOAT16 = False                  # bfloat16 convolutions on CPUs that have them (float32 variables)
# Several devices: the global batch (--batch-size) is split over them and the gradients all-reduced
# (tf.distribute.MirroredStrategy; with TF_CONFIG set, MultiWorkerMirroredStrategy across machines).
DEVICES = 0                       # 0: every GPU, else one CPU; N > 1 without GPUs: N logical CPU devices
SYNC_BATCH_NORM = False           # batch-norm statistics over the global batch instead of each replica's
MIXED_PRECISION = False           # float16 on GPUs (compute capability >= 7.0) with dynamic loss scaling


def recipe_help(field, text=''):
    """`text` and what each recipe sets `field` to, for a flag that overrides one recipe field."""
    values = '; '.join('{} {}'.format(name, _shown(getattr(recipe, field) if hasattr(recipe, field)
                                                   else getattr(recipe.decoding, field)))
                       for name, recipe in recipes.RECIPES.items())
    return '{}{}default: the recipe\'s ({})'.format(text, ', ' if text else '', values)


def _shown(value):
    """A recipe value as a user would type it."""
    if isinstance(value, tuple):
        return cli.format_float_list(value) if any(isinstance(v, float) for v in value) else \
            ','.join(map(str, value))
    if isinstance(value, bool):
        return 'on' if value else 'off'
    return "''" if value is None else '{:g}'.format(value) if isinstance(value, float) else str(value)


def parse_args(argv):
    parser = cli.parser(__doc__.splitlines()[0])
    add = parser.add_argument
    add('--train-records', default=TRAIN_RECORDS, help='glob of the training shards')
    add('--val-list', default=None, help='validation list; default {} when it exists, '
        "'' for none".format(VAL_LIST))
    add('--ckpt-dir', default=CKPT_DIR, help='checkpoints and config.json')
    add('--log-dir', default=LOG_DIR, help="TensorBoard folder ('' for CKPT/logs)")
    add('--num-steps', type=int, default=NUM_STEPS, help='total global step to reach')
    add('--num-epochs', type=float, default=NUM_EPOCHS, help='if > 0, overrides --num-steps')
    add('--recipe', choices=tuple(recipes.RECIPES), default=RECIPE,
        help='the named set of defaults the flags below override (model/recipes.py)')
    add('--init-from', default=INIT_FROM, help='a trained run folder whose network weights a new run starts '
        'from (the architecture comes from its config.json; ignored once CKPT holds a checkpoint)')
    add('--batch-size', type=int, help=recipe_help('batch_size'))
    add('--architecture', choices=ARCHITECTURES, help=recipe_help(
        'architecture', "'unet': the U-Net baseline instead of the DCR network (uses --width, not the DCR flags)"))
    add('--dcr-type', choices=DCR_TYPES, help=recipe_help(
        'dcr_type', 'refine branches: A (1x1 + dilated 3x3), B (1x1), C (dilated 3x3), none (1x1 skips only)'))
    add('--dilations', type=cli.int_list, help=recipe_help('dilations', 'rates for ResNet stages 2-5'))
    add('--width', type=float, help=recipe_help('width', 'ResNet-50 width multiplier'))
    add('--refine-filters', type=int, help=recipe_help('refine_filters'))
    add('--crop-size', type=int, help=recipe_help('crop_size', 'training crop, a multiple of 32'))
    add('--learning-rate', type=float, help=recipe_help('learning_rate', 'peak learning rate of Adam'))
    add('--lr-decay', choices=('none', 'cosine', 'poly'), help=recipe_help(
        'lr_decay', 'decay to 0 at --num-steps (or the time budget)'))
    add('--weight-decay', type=float, help=recipe_help('weight_decay'))
    add('--class-weights', help=recipe_help('class_weights', "five comma-separated weights, '' for none"))
    add('--dice-weight', type=float, help=recipe_help('dice_weight', 'weight of the soft Dice term'))
    add('--tumour-fraction', type=float, help=recipe_help(
        'tumour_fraction', 'share of each batch drawn from tumour slices (0: natural)'))
    add('--flip', type=cli.on_off, help=recipe_help('flip', 'random left-right flips (on/off)'))
    add('--rotate-degrees', type=float, help=recipe_help('rotate_degrees'))
    add('--scale-range', type=float, help=recipe_help('scale_range'))
    add('--intensity-scale', type=float, help=recipe_help('intensity_scale', 'per-channel scale jitter'))
    add('--intensity-shift', type=float, help=recipe_help('intensity_shift', 'per-channel shift jitter (sd)'))
    add('--shuffle-buffer', type=int, help=recipe_help('shuffle_buffer'))
    add('--val-tta', choices=tuple(TEST_TIME_AUGMENTATIONS), help=recipe_help(
        'tta', 'test-time augmentation of validation (see Inference.py --tta)'))
    add('--val-decoding', choices=DECODINGS, help=recipe_help('method', 'how validation labels are decoded'))
    add('--val-tumour-threshold', type=float, help=recipe_help(
        'tumour_threshold', 'regions decoding: tumour where P(WT) exceeds this; argmax decoding has none'))
    add('--val-min-component-fraction', type=float, help=recipe_help(
        'min_component_fraction', "validation drops tumour components smaller than this fraction of the "
        "patient's largest (0: off)"))
    add('--save-every-steps', type=int, default=SAVE_EVERY_STEPS)
    add('--save-every-minutes', type=float, default=SAVE_EVERY_MINUTES)
    add('--keep-checkpoints', type=int, default=KEEP_CHECKPOINTS)
    add('--summary-every-steps', type=int, default=SUMMARY_EVERY_STEPS)
    add('--validate-every-steps', type=int, default=VALIDATE_EVERY_STEPS)
    add('--select-on', choices=SELECTION_SCORES, default=SELECT_ON,
        help="the validation Dice that picks CKPT/best/: 'mean' of WT/TC/ET, or one region's")
    add('--time-budget-minutes', type=float, default=TIME_BUDGET_MINUTES,
        help='stop and save after this many minutes of training (0: no limit)')
    add('--gpu-memory-fraction', type=float, default=GPU_MEMORY_FRACTION)
    add('--seed', type=int, default=SEED,
        help='non-negative; fixes the initial weights and the order and augmentation of the slices')
    add('--bfloat16', type=cli.on_off, default=BFLOAT16,
        help='mixed precision: bfloat16 convolutions on the CPU (on/off; fast with AVX512-BF16 or AMX)')
    add('--devices', type=int, default=DEVICES,
        help='devices that split each batch (0: every GPU, else one CPU; without GPUs, N logical CPUs)')
    add('--sync-batch-norm', type=cli.on_off, default=SYNC_BATCH_NORM,
        help='with several devices or workers: batch-norm statistics of the global batch (on/off)')
    add('--mixed-precision', type=cli.on_off, default=MIXED_PRECISION,
        help='float16 with dynamic loss scaling on GPUs of compute capability >= 7.0 (on/off)')
    return parser.parse_args(argv)


def _class_weights(text):
    """None for '' (no weights), else the five weights of '1,2,1,2,2'."""
    if not text:
        return None
    weights = tuple(float(part) for part in text.split(','))
    if len(weights) != 5 or min(weights) < 0:
        raise InputError('--class-weights needs five non-negative numbers, got {!r}'.format(text))
    return weights


def resolve_recipe(args):
    """The recipe --recipe names with every flag given overriding its field; the flags in `args`
    are set to the resolved values (so config.json records them) and the Recipe is returned."""
    recipe = recipes.recipe(args.recipe)
    fields = {name: getattr(args, name) for name in recipes.NETWORK_FIELDS + recipes.AUGMENT_FIELDS
              + recipes.LOSS_FIELDS + recipes.OPTIMIZER_FIELDS}
    class_weights_given = args.class_weights is not None
    fields['class_weights'] = _class_weights(args.class_weights) if class_weights_given else None
    resolved = recipe.overridden(**fields)
    if class_weights_given:
        resolved = dataclasses.replace(resolved, class_weights=fields['class_weights'])
    try:
        decoding = resolved.decoding.overridden(tta=args.val_tta, method=args.val_decoding,
                                                tumour_threshold=args.val_tumour_threshold,
                                                min_component_fraction=args.val_min_component_fraction)
    except InputError as error:
        raise InputError('--val-decoding/--val-tumour-threshold/--val-min-component-fraction: {}'.format(
            error)) from None
    resolved = dataclasses.replace(resolved, decoding=decoding)
    for name, value in resolved.to_dict().items():
        if name not in ('name', 'decoding'):
            setattr(args, name, value)
    args.val_tta, args.val_decoding = decoding.tta, decoding.method
    args.val_tumour_threshold, args.val_min_component_fraction = (decoding.tumour_threshold,
                                                                  decoding.min_component_fraction)
    return resolved


def initial_network(args):
    """The checkpoint --init-from names ('' without it), after setting the network flags to its
    run's network; a network flag that says otherwise is refused."""
    if not args.init_from:
        return ''
    stored = checkpoints.read_config(args.init_from)[0]
    for field in recipes.NETWORK_FIELDS:
        given, held = getattr(args, field), getattr(stored, field)
        if given is not None and given != held:
            raise InputError('--{} {}: --init-from {} holds a network with {} {}; the architecture comes from '
                             'its config.json'.format(field.replace('_', '-'), _shown(given), args.init_from,
                                                      field, _shown(held)))
        setattr(args, field, held)
    return checkpoints.find_checkpoint(args.init_from, checkpoints.LATEST)


def network_config(recipe):
    """The NetworkConfig of a recipe (bad values become one-line errors)."""
    try:
        return NetworkConfig(**recipe.fields(recipes.NETWORK_FIELDS))
    except ValueError as error:
        raise InputError('network settings: {}'.format(error)) from None


def validation_patients(val_list):
    """Patients of the validation list: the default one only when it exists."""
    if val_list is None:
        val_list = VAL_LIST if os.path.isfile(VAL_LIST) else ''
    return read_patient_list(val_list, require_labels=True) if val_list else []


def check_resume(ckpt_dir, config, crop_size, normalization):
    """Refuse to continue a run in CKPT whose network or input normalisation differs from the
    requested one."""
    if not os.path.exists(checkpoints.config_path(ckpt_dir)):
        return
    stored, stored_crop, _ = checkpoints.read_config(ckpt_dir)
    if stored != config or stored_crop != crop_size:
        raise InputError('{}: holds a run with another network configuration ({}); use another '
                         '--ckpt-dir'.format(checkpoints.config_path(ckpt_dir), stored.to_dict()))
    stored_normalization = checkpoints.read_normalization(ckpt_dir)
    if stored_normalization != normalization:
        raise InputError('{}: holds a run trained on records of another intensity normalisation ({}, these records: '
                         '{}); use another --ckpt-dir'.format(checkpoints.config_path(ckpt_dir),
                                                              stored_normalization['method'], normalization['method']))


def training_distribution(args):
    """The Distribution the flags and TF_CONFIG ask for (call before TensorFlow's runtime starts)."""
    cluster = cluster_from_environment()
    if cluster and args.time_budget_minutes > 0:
        raise InputError('--time-budget-minutes with {}: workers would stop at different steps; give '
                         '--num-steps instead'.format(TF_CONFIG))
    if args.mixed_precision and not has_gpu():
        raise InputError('--mixed-precision on needs a GPU (float16 with loss scaling); on this CPU use '
                         '--bfloat16 on where it has AVX512-BF16 or AMX')
    distribution = Distribution(args.devices or default_device_count(), cluster)
    distribution.replica_batch_size(args.batch_size)
    return distribution


def training_settings(args, recipe, paths_and_sidecar, distribution, init_checkpoint=''):
    """The TrainingSettings the flags, the resolved recipe and the records describe."""
    shard_paths, sidecar = paths_and_sidecar
    schedule = Schedule(num_steps=args.num_steps, learning_rate=recipe.learning_rate, lr_decay=recipe.lr_decay,
                        save_every_steps=args.save_every_steps, save_every_minutes=args.save_every_minutes,
                        keep_checkpoints=args.keep_checkpoints, summary_every_steps=args.summary_every_steps,
                        validate_every_steps=args.validate_every_steps,
                        time_budget_minutes=args.time_budget_minutes)
    validation = ValidationConfig(patients=tuple(validation_patients(args.val_list)), decoding=recipe.decoding,
                                  select_on=args.select_on)
    return TrainingSettings(
        shard_paths=shard_paths, sidecar=sidecar, network=network_config(recipe),
        augment=AugmentConfig(**recipe.fields(recipes.AUGMENT_FIELDS)),
        loss=LossConfig(**recipe.fields(recipes.LOSS_FIELDS)), schedule=schedule, batch_size=recipe.batch_size,
        ckpt_dir=args.ckpt_dir, log_dir=args.log_dir or os.path.join(args.ckpt_dir, 'logs'), validation=validation,
        gpu_memory_fraction=args.gpu_memory_fraction, bfloat16=args.bfloat16, seed=args.seed,
        distribution=distribution, sync_batch_norm=args.sync_batch_norm, mixed_precision=args.mixed_precision,
        init_from=init_checkpoint)


def settings_from_flags(argv):
    """(TrainingSettings, parsed flags) of a command line, after every check main makes; the
    chief writes CKPT/config.json. Call before TensorFlow's runtime starts (training_distribution)."""
    args = parse_args(argv)
    cli.graph_mode()
    init_checkpoint = initial_network(args)
    recipe = resolve_recipe(args)
    config = network_config(recipe)
    if recipe.crop_size % 32:
        raise InputError('--crop-size {} is not a multiple of 32'.format(recipe.crop_size))
    if not 0.0 <= recipe.tumour_fraction <= 1.0:
        raise InputError('--tumour-fraction {} is not between 0 and 1'.format(recipe.tumour_fraction))
    if args.seed < 0:
        raise InputError('--seed {} is negative'.format(args.seed))
    if args.bfloat16 and not cpu_has_bfloat16():
        raise InputError('--bfloat16 on needs a CPU with AVX512-BF16 or AMX-BF16; this one has {}'.format(
            ' '.join(vector_extensions()) or 'neither'))
    distribution = training_distribution(args)
    records = resolve_records(args.train_records)
    if args.num_epochs > 0:
        args.num_steps = math.ceil(args.num_epochs * records[1]['num_examples'] / recipe.batch_size)
    if init_checkpoint and checkpoints.read_normalization(args.init_from) != records[1]['normalization']:
        raise InputError('--init-from {}: trained on records of another intensity normalisation than {}'.format(
            args.init_from, args.train_records))
    settings = training_settings(args, recipe, records, distribution, init_checkpoint)
    check_resume(args.ckpt_dir, config, recipe.crop_size, records[1]['normalization'])
    if distribution.is_chief:
        checkpoints.write_config(args.ckpt_dir, config, recipe.crop_size, vars(args), records[1]['normalization'])
    return settings, args


@cli.reports_bad_input
def main(argv=None):
    settings, args = settings_from_flags(argv)
    print('training on {} slices of {} patients with the {} recipe; validating on {} patients; {}'.format(
        settings.sidecar['num_examples'], settings.sidecar['num_patients'], args.recipe,
        len(settings.validation.patients), settings.distribution.describe()))
    try:
        step = train(settings)
    except (TrainingError, WorkerLost) as error:
        print('Train.py: error: {}'.format(error), file=sys.stderr)
        return 1
    except TrainingStopped as stopped:   # the shell's convention, so callers know it did not finish
        print('Train.py: {}'.format(stopped), file=sys.stderr)
        return 128 + stopped.signal_number
    print('reached step {}; checkpoints in {}'.format(step, args.ckpt_dir if settings.distribution.is_chief
                                                          else "the chief's"))
    return 0


if __name__ == '__main__':
    sys.exit(main())
