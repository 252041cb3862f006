"""model/losses.py: cross-entropy (+ class weights), soft Dice, L2 weight decay, their total."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

from model import dcr, losses  # noqa: E402  (after disable_v2_behavior)
from model.labels import NUM_CLASSES, REGIONS  # noqa: E402
from model.layers import WEIGHT_DECAY_COLLECTION  # noqa: E402

TINY = dcr.NetworkConfig(width=0.125, refine_filters=8)


def evaluate(tensors):
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        return session.run(tensors)


def batch(seed=0, shape=(2, 8, 8)):
    rng = np.random.RandomState(seed)
    logits = (rng.randn(*shape, NUM_CLASSES) * 2.0).astype(np.float32)
    labels = rng.randint(0, NUM_CLASSES, size=shape).astype(np.int32)
    return logits, labels


def numpy_pixel_losses(logits, labels):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_softmax, labels[..., None], axis=-1)[..., 0]


def numpy_soft_dice(logits, labels, smooth=1.0):
    probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    scores = []
    for classes in REGIONS.values():
        predicted = probabilities[..., list(classes)].sum(axis=-1)
        expected = np.isin(labels, classes).astype(np.float64)
        scores.append((2 * (predicted * expected).sum() + smooth)
                      / (predicted.sum() + expected.sum() + smooth))
    return np.mean(scores)


def test_cross_entropy_equals_numpy():
    logits, labels = batch()
    with tf.Graph().as_default():
        value = evaluate(losses.cross_entropy(tf.constant(logits), tf.constant(labels)))
    np.testing.assert_allclose(value, numpy_pixel_losses(logits, labels).mean(), rtol=1e-5)


def test_unit_class_weights_equal_the_unweighted_loss():
    logits, labels = batch(1)
    with tf.Graph().as_default():
        plain, weighted = evaluate([
            losses.cross_entropy(tf.constant(logits), tf.constant(labels)),
            losses.cross_entropy(tf.constant(logits), tf.constant(labels), (1.0,) * 5)])
    np.testing.assert_allclose(weighted, plain, rtol=1e-6)


@pytest.mark.parametrize('weights', [(1.0, 2.0, 1.0, 3.0, 0.5), (1.0, 0.0, 0.0, 0.0, 0.0),
                                     (2.0, 2.0, 2.0, 2.0, 2.0)])
def test_class_weights_weight_each_pixel_by_its_true_class(weights):
    logits, labels = batch(2)
    pixel = numpy_pixel_losses(logits, labels)
    pixel_weights = np.asarray(weights)[labels]
    expected = (pixel * pixel_weights).sum() / pixel_weights.sum()
    with tf.Graph().as_default():
        value = evaluate(losses.cross_entropy(tf.constant(logits), tf.constant(labels), weights))
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    if weights[0] == 1.0 and sum(weights) == 1.0:   # background only
        np.testing.assert_allclose(value, pixel[labels == 0].mean(), rtol=1e-5)


def test_soft_dice_is_one_for_a_confident_right_answer_and_lower_for_a_wrong_one():
    _, labels = batch(3)
    right = 50.0 * np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    wrong = 50.0 * np.eye(NUM_CLASSES, dtype=np.float32)[(labels + 1) % NUM_CLASSES]
    random_logits, _ = batch(4)
    with tf.Graph().as_default():
        perfect, bad, middling = evaluate([losses.soft_dice(tf.constant(x), tf.constant(labels))
                                           for x in (right, wrong, random_logits)])
    np.testing.assert_allclose(perfect, 1.0, atol=1e-4)
    assert bad < 0.7 and bad < middling < perfect
    np.testing.assert_allclose(middling, numpy_soft_dice(random_logits, labels), rtol=1e-4)


def test_soft_dice_counts_regions_absent_from_both_as_one():
    labels = np.zeros((1, 4, 4), np.int32)
    background = 50.0 * np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    with tf.Graph().as_default():
        value = evaluate(losses.soft_dice(tf.constant(background), tf.constant(labels)))
    np.testing.assert_allclose(value, 1.0, atol=1e-4)


def test_weight_decay_is_scale_times_half_the_sum_of_squared_kernels():
    with tf.Graph().as_default():
        dcr.build_network(tf.placeholder(tf.float32, [None, 32, 32, 4]), TINY, is_training=True)
        kernels = tf.get_collection(WEIGHT_DECAY_COLLECTION)
        assert kernels and all(v.op.name.endswith('/weights') for v in kernels)
        decay, values = evaluate([losses.weight_decay(3e-4), kernels])
    expected = 3e-4 * sum(float(np.sum(np.square(v, dtype=np.float64))) for v in values) / 2.0
    np.testing.assert_allclose(decay, expected, rtol=1e-5)


def test_weight_decay_uses_only_the_collection():
    with tf.Graph().as_default():
        first = tf.get_variable('first', initializer=np.full((2, 3), 2.0, np.float32))
        tf.get_variable('not_decayed', initializer=np.full((5,), 7.0, np.float32))
        second = tf.get_variable('second', initializer=np.array([1.0, -3.0], np.float32))
        for variable in (first, second):
            tf.add_to_collection(WEIGHT_DECAY_COLLECTION, variable)
        decay, off = evaluate([losses.weight_decay(0.1), losses.weight_decay(0.0)])
    np.testing.assert_allclose(decay, 0.1 * (6 * 4.0 + 1.0 + 9.0) / 2.0, rtol=1e-6)
    assert off == 0.0
    with tf.Graph().as_default():
        assert evaluate(losses.weight_decay(0.1)) == 0.0   # empty collection


@pytest.mark.parametrize('dice_weight', [0.0, 0.5])
def test_segmentation_loss_total_is_the_sum_of_its_parts(dice_weight):
    logits, labels = batch(5, shape=(2, 32, 32))
    config = losses.LossConfig(weight_decay=1e-3, class_weights=(1.0, 2.0, 1.0, 2.0, 3.0),
                               dice_weight=dice_weight)
    with tf.Graph().as_default():
        images = tf.constant(np.random.RandomState(6).randn(2, 32, 32, 4).astype(np.float32))
        network_logits = dcr.build_network(images, TINY, is_training=False)
        for name, value in (('random', tf.constant(logits)), ('network', network_logits)):
            parts = evaluate(losses.segmentation_loss(value, tf.constant(labels), config))
            assert set(parts) == {'total', 'cross_entropy', 'l2', 'soft_dice'}
            expected = parts['cross_entropy'] + parts['l2'] + dice_weight * (1.0 - parts['soft_dice'])
            np.testing.assert_allclose(parts['total'], expected, rtol=1e-6, err_msg=name)
            assert parts['l2'] > 0.0
            if name == 'random':
                pixel = numpy_pixel_losses(logits, labels)
                weights = np.asarray(config.class_weights)[labels]
                np.testing.assert_allclose(parts['cross_entropy'],
                                           (pixel * weights).sum() / weights.sum(), rtol=1e-5)
