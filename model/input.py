"""The tf.data training pipeline: shards -> parsed slices -> augmented crops -> batches.

Each augmentation is a small function of (image, label) that can be switched off through
AugmentConfig. Labels are only ever moved with nearest-neighbour sampling, never interpolated.
Because most slices hold no tumour, a set share of each batch can be drawn from the slices
that do (`tumour_fraction`): slices of the over-represented kind are dropped at random from
a single pass over the shards.

The stream is reproducible: the shuffles and the tumour filter take the run's seed, and each
slice's augmentation draws from stateless random ops seeded by (run seed, slice index), so the
parallel maps cannot reorder the draws.
"""
import dataclasses

import tensorflow.compat.v1 as tf

from model import records, warp
from model.recipes import MEASURED

AUTOTUNE = tf.data.experimental.AUTOTUNE


@dataclasses.dataclass
class AugmentConfig:
    """Training-time sampling and augmentation settings (0 or False switches one off); the
    defaults are the measured recipe's (model.recipes)."""
    crop_size: int = MEASURED.crop_size
    flip: bool = MEASURED.flip
    rotate_degrees: float = MEASURED.rotate_degrees
    scale_range: float = MEASURED.scale_range
    intensity_scale: float = MEASURED.intensity_scale
    intensity_shift: float = MEASURED.intensity_shift
    tumour_fraction: float = MEASURED.tumour_fraction
    shuffle_buffer: int = MEASURED.shuffle_buffer


def uniform(shape, seed, low, high):
    """Stateless uniform draws in [low, high) fixed by `seed` (int64 [2])."""
    return low + (high - low) * tf.random.stateless_uniform(shape, seed)


def rotate_and_scale(image, label, max_degrees, scale_range, seed):
    """Random rotation in +-max_degrees and zoom in 1 +- scale_range about the slice centre.

    The image is resampled bilinearly, the label with nearest neighbour; outside is zero.
    """
    angle_seed, scale_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    degrees = uniform([], angle_seed, -max_degrees, max_degrees)
    scale = uniform([], scale_seed, 1.0 - scale_range, 1.0 + scale_range)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    transform = warp.centre_transform(degrees, scale, size[0], size[1])
    label = warp.warp(tf.cast(label[tf.newaxis, ..., tf.newaxis], tf.float32), transform, 'NEAREST')
    return warp.warp(image[tf.newaxis], transform)[0], tf.cast(tf.round(label[0, ..., 0]), tf.int32)


def random_crop(image, label, size, seed):
    """The same random size x size window of image and label."""
    stacked = tf.concat([image, tf.cast(label[..., tf.newaxis], tf.float32)], axis=-1)
    cropped = tf.compat.v2.image.stateless_random_crop(stacked, [size, size, image.shape[-1] + 1], seed)
    return cropped[..., :-1], tf.cast(cropped[..., -1], tf.int32)


def random_flip(image, label, seed):
    """Left-right flip (the x axis) of image and label with probability 1/2."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return (tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image),
            tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label))


def jitter_intensity(image, scale_range, shift_range, seed):
    """Per-channel random scale and shift of the normalised intensities, inside the brain."""
    channels = image.shape[-1]
    scale_seed, shift_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    scale = uniform([channels], scale_seed, 1.0 - scale_range, 1.0 + scale_range)
    shift = uniform([channels], shift_seed, -shift_range, shift_range)
    brain = tf.cast(tf.reduce_any(tf.not_equal(image, 0.0), axis=-1, keepdims=True), tf.float32)
    return (image * scale + shift) * brain


def augment(example, config, seed):
    """Apply the configured augmentations to one parsed example; returns (image, label).

    seed: int64 [2]; the same seed gives the same augmentation.
    """
    image, label = example['image'], example['label']
    rotate_seed, crop_seed, flip_seed, jitter_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    if config.rotate_degrees or config.scale_range:
        image, label = rotate_and_scale(image, label, config.rotate_degrees, config.scale_range, rotate_seed)
    image, label = random_crop(image, label, config.crop_size, crop_seed)
    if config.flip:
        image, label = random_flip(image, label, flip_seed)
    if config.intensity_scale or config.intensity_shift:
        image = jitter_intensity(image, config.intensity_scale, config.intensity_shift, jitter_seed)
    return image, label


def _slices(paths, seed, worker=0, num_workers=1):
    """Endless stream of serialised slices from shuffled shards, in an order fixed by `seed`.

    With several workers, each reads its own share: every num_workers-th shard file when there
    are at least as many files as workers, else every num_workers-th slice."""
    paths = list(paths)
    if len(paths) < num_workers:   # in a fixed order, so that the shares are disjoint; the shuffle buffer mixes them
        share = tf.data.TFRecordDataset(paths, compression_type=records.COMPRESSION).shard(num_workers, worker)
        return share.repeat()
    paths = paths[worker::num_workers]
    files = tf.data.Dataset.from_tensor_slices(paths).shuffle(len(paths), seed=seed).repeat()
    return files.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=records.COMPRESSION),
        cycle_length=min(len(paths), 8), num_parallel_calls=AUTOTUNE, deterministic=True)


def tumour_share(config, sidecar):
    """The tumour-slice share to sample, or None for natural sampling.

    Oversampling needs slices of both kinds; without them the natural order is used.
    """
    tumour = sidecar['num_tumour_examples']
    if not config.tumour_fraction or tumour == 0 or tumour == sidecar['num_examples']:
        return None
    return config.tumour_fraction


def keep_chances(share, natural):
    """(tumour, other): chances of keeping a tumour and a non-tumour slice so that the kept
    slices hold tumour with probability `share` when a share `natural` of the stream does.

    The kind being oversampled is always kept, so each shard is read once and little is dropped.
    """
    if share >= 1.0:
        return 1.0, 0.0
    odds = share * (1.0 - natural) / ((1.0 - share) * natural)   # wanted tumour/other keep ratio
    return (1.0, 1.0 / odds) if odds >= 1.0 else (odds, 1.0)


def training_dataset(paths, sidecar, batch_size, config, seed=0, worker=0, num_workers=1):
    """Endless batches of (image float32 [B, S, S, 4], label int32 [B, S, S]) for training.

    Args:
      paths: shard files (see records.resolve_records).
      sidecar: their sidecar dict (gives the tumour-slice counts).
      batch_size: slices per batch.
      config: an AugmentConfig.
      seed: a non-negative int; the same seed gives the same batches.
      worker, num_workers: this worker's index and the number of workers that split the shards
        (by file, or by slice when there are fewer files than workers).
    """
    serialized = _slices(paths, seed, worker, num_workers)
    share = tumour_share(config, sidecar)
    if share is not None:
        keep_tumour, keep_other = keep_chances(share, sidecar['num_tumour_examples'] / sidecar['num_examples'])
        serialized = serialized.filter(lambda data: tf.random.uniform([], seed=seed) < tf.where(
            tf.equal(records.parse_tumour_flag(data), 1), keep_tumour, keep_other))
    examples = serialized.shuffle(config.shuffle_buffer, seed=seed).map(records.parse_example,
                                                                        num_parallel_calls=AUTOTUNE)

    def augment_slice(example, index):
        return augment(example, config, tf.stack([tf.constant(seed, tf.int64), index]))

    indexed = tf.data.Dataset.zip((examples, tf.data.Dataset.counter()))
    pairs = indexed.map(augment_slice, num_parallel_calls=AUTOTUNE)
    return pairs.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)
