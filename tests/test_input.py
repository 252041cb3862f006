"""model/input.py: the augmentations (small pure functions) and the tf.data training pipeline."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

import create_pascal_tf_record  # noqa: E402  (after disable_v2_behavior)
from model import input as pipeline  # noqa: E402
from model import phantom, records  # noqa: E402
from model.brats import find_patients  # noqa: E402
from model.lists import write_patient_list  # noqa: E402

SHAPE = (24, 96, 96)
FRAME = SHAPE[1]
ZERO_SEED = (0, 0)   # a seed for calls whose randomness does not matter
ALL_OFF = dict(flip=False, rotate_degrees=0.0, scale_range=0.0, intensity_scale=0.0,
               intensity_shift=0.0)


# ---------------------------------------------------------------- helpers


def block_labels(size=64):
    """A label map with blocks of 1, 2, 3 and 4 on background 0; the 4 block is off-centre."""
    label = np.zeros((size, size), np.int32)
    label[8:24, 8:24] = 1
    label[8:24, 40:56] = 2
    label[40:56, 8:24] = 3
    label[36:60, 34:58] = 4
    return label


def tracer_image(label):
    """Channel 0 = the label, 1 = row index + 1, 2 = column index + 1, 3 = (label == 4)."""
    rows, cols = np.indices(label.shape, dtype=np.float32)
    return np.stack([label.astype(np.float32), rows + 1, cols + 1,
                     (label == 4).astype(np.float32)], axis=-1)


def samples(function, arrays, count):
    """`function(*tensors, seed)` for the seeds [0, 0] .. [0, count - 1]; returns the list of results."""
    with tf.Graph().as_default():
        seed = tf.placeholder(tf.int64, [2])
        outputs = function(*[tf.constant(array) for array in arrays], seed)
        with tf.Session() as session:
            return [session.run(outputs, {seed: [0, index]}) for index in range(count)]


def centroid(weights):
    rows, cols = np.indices(weights.shape)
    total = weights.sum()
    return np.array([(rows * weights).sum() / total, (cols * weights).sum() / total])


def run_dataset(dataset, count):
    """The first `count` elements of a dataset, built in a new graph."""
    with tf.Graph().as_default():
        next_element = tf.data.make_one_shot_iterator(dataset()).get_next()
        with tf.Session() as session:
            return [session.run(next_element) for _ in range(count)]


# ---------------------------------------------------------------- augmentations


GEOMETRIC = {
    'rotate_and_scale': lambda image, label, seed: pipeline.rotate_and_scale(image, label, 30.0, 0.2, seed),
    'random_crop': lambda image, label, seed: pipeline.random_crop(image, label, 40, seed),
    'random_flip': pipeline.random_flip,
}


@pytest.mark.parametrize('name', sorted(GEOMETRIC))
def test_labels_are_never_interpolated(name):
    label = block_labels()
    for source in (label, np.where(label == 4, 4, 0).astype(np.int32)):
        values = set(np.unique(source))
        for image, moved in samples(GEOMETRIC[name], [tracer_image(source), source], 8):
            assert moved.dtype == np.int32
            assert set(np.unique(moved)) <= values, (name, sorted(values), np.unique(moved))
            assert image.dtype == np.float32 and image.shape[-1] == 4


def test_rotation_moves_image_and_label_together():
    label = block_labels()
    results = samples(GEOMETRIC['rotate_and_scale'], [tracer_image(label), label], 10)
    moved_by = []
    for image, moved in results:
        assert image.shape == (64, 64, 4) and moved.shape == (64, 64)
        mask = moved == 4
        assert mask.sum() > 100
        # The image channel marking the 4 block is resampled bilinearly, the label with
        # nearest neighbour; their centroids agree within a pixel.
        np.testing.assert_allclose(centroid(mask.astype(float)), centroid(image[..., 3]), atol=1.0)
        # Away from boundaries, channel 0 (the label as an image) agrees with the label.
        np.testing.assert_allclose(np.abs(image[..., 0] - moved).mean(), 0.0, atol=0.2)
        moved_by.append(np.abs(centroid(mask.astype(float)) - centroid(label == 4)).max())
    assert max(moved_by) > 1.5, 'rotation/zoom never moved the 4 block'


def test_random_crop_keeps_image_and_label_aligned():
    label = block_labels()
    image = tracer_image(label)
    offsets = set()
    for crop, cropped in samples(GEOMETRIC['random_crop'], [image, label], 12):
        assert crop.shape == (40, 40, 4) and cropped.shape == (40, 40)
        y0, x0 = int(crop[0, 0, 1]) - 1, int(crop[0, 0, 2]) - 1
        np.testing.assert_array_equal(crop, image[y0:y0 + 40, x0:x0 + 40])
        np.testing.assert_array_equal(cropped, label[y0:y0 + 40, x0:x0 + 40])
        offsets.add((y0, x0))
    assert len(offsets) > 1, 'the crop is not random'


def test_random_crop_has_the_configured_static_size():
    with tf.Graph().as_default():
        image = tf.placeholder(tf.float32, [None, None, 4])
        label = tf.placeholder(tf.int32, [None, None])
        crop, cropped = pipeline.random_crop(image, label, 32, ZERO_SEED)
        assert crop.shape.as_list() == [32, 32, 4]
        assert cropped.shape.as_list() == [32, 32] and cropped.dtype == tf.int32


def test_random_flip_is_left_right_and_moves_the_label_too():
    label = block_labels()
    image = tracer_image(label)
    outcomes = []
    for flipped_image, flipped_label in samples(pipeline.random_flip, [image, label], 20):
        if np.array_equal(flipped_image, image):
            np.testing.assert_array_equal(flipped_label, label)
            outcomes.append('kept')
        else:
            # Axis 1 of [H, W, C] (x) reversed: columns run backwards, rows stay.
            np.testing.assert_array_equal(flipped_image, image[:, ::-1])
            np.testing.assert_array_equal(flipped_label, label[:, ::-1])
            outcomes.append('flipped')
    assert set(outcomes) == {'kept', 'flipped'}


def test_jitter_intensity_keeps_background_zero_and_scales_each_channel():
    rng = np.random.RandomState(0)
    image = np.zeros((32, 32, 4), np.float32)
    image[4:28, 6:26] = rng.randn(24, 20, 4).astype(np.float32) + 0.5
    image[2, 2, 2] = 1.0   # brain voxel with three zero channels
    background = ~np.any(image != 0, axis=-1)
    brain = ~background
    seen = []
    for jittered in samples(lambda x, seed: pipeline.jitter_intensity(x, 0.2, 0.3, seed), [image], 6):
        assert np.all(jittered[background] == 0.0)
        for channel in range(4):
            x, y = image[brain][:, channel], jittered[brain][:, channel]
            scale, shift = np.polyfit(x, y, 1)
            np.testing.assert_allclose(y, scale * x + shift, atol=1e-4)
            assert 0.8 - 1e-4 <= scale <= 1.2 + 1e-4 and -0.3 - 1e-4 <= shift <= 0.3 + 1e-4
            seen.append((round(scale, 4), round(shift, 4)))
    assert len(set(seen)) > 4, 'jitter is not random'


def test_jitter_is_off_when_its_ranges_are_zero():
    image = tracer_image(block_labels(32))
    (jittered,) = samples(lambda x, seed: pipeline.jitter_intensity(x, 0.0, 0.0, seed), [image], 1)
    np.testing.assert_array_equal(jittered, image)


@pytest.mark.parametrize('natural', [0.2, 0.48, 0.8])
@pytest.mark.parametrize('share', [0.1, 0.48, 0.5, 0.9, 1.0])
def test_keep_chances_give_the_share_of_tumour_slices(natural, share):
    keep_tumour, keep_other = pipeline.keep_chances(share, natural)
    assert 0.0 <= keep_tumour <= 1.0 and 0.0 <= keep_other <= 1.0
    assert max(keep_tumour, keep_other) == 1.0          # nothing is dropped needlessly
    kept_tumour, kept_other = keep_tumour * natural, keep_other * (1.0 - natural)
    assert kept_tumour / (kept_tumour + kept_other) == pytest.approx(share)


def test_tumour_share_falls_back_to_natural_sampling():
    config = pipeline.AugmentConfig(tumour_fraction=0.5)
    assert pipeline.tumour_share(config, {'num_examples': 10, 'num_tumour_examples': 4}) == 0.5
    assert pipeline.tumour_share(config, {'num_examples': 10, 'num_tumour_examples': 0}) is None
    assert pipeline.tumour_share(config, {'num_examples': 10, 'num_tumour_examples': 10}) is None
    natural = pipeline.AugmentConfig(tumour_fraction=0.0)
    assert pipeline.tumour_share(natural, {'num_examples': 10, 'num_tumour_examples': 4}) is None


# ---------------------------------------------------------------- the pipeline on real records


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
    """TFRecords of 4 tiny phantom patients: (shard paths, sidecar)."""
    root = str(tmp_path_factory.mktemp('input'))
    phantom.generate_dataset(os.path.join(root, 'phantom'), num_hgg=3, num_lgg=1, num_test=0,
                             shape=SHAPE, progress=False)
    list_path = os.path.join(root, 'train.txt')
    write_patient_list(find_patients([os.path.join(root, 'phantom')]), list_path)
    output = os.path.join(root, 'records')
    assert create_pascal_tf_record.main(['--list', list_path, '--output-dir', output,
                                         '--workers', '1']) == 0
    paths, sidecar = records.resolve_records(os.path.join(output, 'train-*'))
    assert 0 < sidecar['num_tumour_examples'] < sidecar['num_examples']
    return paths, sidecar


def parsed(paths):
    """Every example of the shards as parse_example gives it, with augment(all off) beside it."""
    config = pipeline.AugmentConfig(crop_size=FRAME, **ALL_OFF)

    def dataset():
        examples = tf.data.TFRecordDataset(paths, compression_type=records.COMPRESSION).map(
            records.parse_example)
        return examples.map(lambda example: (example, pipeline.augment(example, config, ZERO_SEED)))

    found = []
    with tf.Graph().as_default():
        next_element = tf.data.make_one_shot_iterator(dataset()).get_next()
        with tf.Session() as session:
            while True:
                try:
                    found.append(session.run(next_element))
                except tf.errors.OutOfRangeError:
                    return found


def test_training_batches_have_the_right_shapes_and_types(shards):
    paths, sidecar = shards
    config = pipeline.AugmentConfig(crop_size=64, shuffle_buffer=32)
    batches = run_dataset(lambda: pipeline.training_dataset(paths, sidecar, 2, config), 5)
    with tf.Graph().as_default():
        images, labels = tf.data.make_one_shot_iterator(
            pipeline.training_dataset(paths, sidecar, 2, config)).get_next()
        assert images.shape.as_list() == [2, 64, 64, 4] and images.dtype == tf.float32
        assert labels.shape.as_list() == [2, 64, 64] and labels.dtype == tf.int32
    for images, labels in batches:
        assert images.shape == (2, 64, 64, 4) and images.dtype == np.float32
        assert labels.shape == (2, 64, 64) and labels.dtype == np.int32
        assert np.all(np.isfinite(images))
        assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}


@pytest.mark.parametrize('fraction,low,high', [(0.5, 0.3, 0.7), (0.9, 0.75, 1.0), (0.1, 0.0, 0.25)])
def test_tumour_fraction_sets_the_share_of_tumour_slices(shards, fraction, low, high):
    paths, sidecar = shards
    natural = sidecar['num_tumour_examples'] / sidecar['num_examples']
    assert 0.3 < natural < 0.7      # so that 0.9 and 0.1 differ from natural sampling
    # No crop or rotation: a batch slice holds tumour exactly when its record does.
    config = pipeline.AugmentConfig(crop_size=FRAME, tumour_fraction=fraction, shuffle_buffer=16,
                                    **ALL_OFF)
    batches = run_dataset(lambda: pipeline.training_dataset(paths, sidecar, 2, config), 40)
    flags = [bool(label.any()) for _, labels in batches for label in labels]
    share = np.mean(flags)
    assert low <= share <= high, (fraction, share)


def test_all_augmentations_off_give_parse_example_images(shards):
    paths, sidecar = shards
    examples = parsed(paths)
    assert len(examples) == sidecar['num_examples']
    for example, (image, label) in examples:
        np.testing.assert_array_equal(image, example['image'])
        np.testing.assert_array_equal(label, example['label'])

    config = pipeline.AugmentConfig(crop_size=FRAME, tumour_fraction=0.5, shuffle_buffer=8,
                                    **ALL_OFF)
    by_image = {example['image'].tobytes(): example['label'] for example, _ in examples}
    for images, labels in run_dataset(lambda: pipeline.training_dataset(paths, sidecar, 2, config), 10):
        for image, label in zip(images, labels):
            assert image.tobytes() in by_image, 'batch image is not a parsed record image'
            np.testing.assert_array_equal(label, by_image[image.tobytes()])


def test_the_seed_fixes_the_batches_and_another_seed_changes_them(shards):
    paths, sidecar = shards
    config = pipeline.AugmentConfig(crop_size=64, shuffle_buffer=16)

    def batches(seed):
        return run_dataset(lambda: pipeline.training_dataset(paths, sidecar, 2, config, seed), 6)

    first, again, other = batches(3), batches(3), batches(4)
    for (images, labels), (images_again, labels_again) in zip(first, again):
        np.testing.assert_array_equal(images, images_again)
        np.testing.assert_array_equal(labels, labels_again)
    assert any(not np.array_equal(images, other_images) for (images, _), (other_images, _) in zip(first, other))


def test_one_seed_gives_every_slice_its_own_augmentation():
    label = block_labels()
    image = tracer_image(label)
    config = pipeline.AugmentConfig(crop_size=40)
    crops = samples(lambda image, label, seed: pipeline.augment({'image': image, 'label': label}, config, seed),
                    [image, label], 6)
    assert len({crop.tobytes() for crop, _ in crops}) == 6
