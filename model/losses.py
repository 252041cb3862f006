"""Training loss: softmax cross-entropy + L2 weight decay (the paper's), with optional class
weights and an optional soft Dice term on the BRATS regions WT/TC/ET."""
import dataclasses

import tensorflow.compat.v1 as tf

from model.labels import NUM_CLASSES, REGIONS, region_probabilities
from model.layers import WEIGHT_DECAY_COLLECTION
from model.recipes import MEASURED

_SMOOTH = 1.0


@dataclasses.dataclass
class LossConfig:
    """Loss settings (defaults: the measured recipe's). class_weights: one weight per class 0-4,
    or None for uniform."""
    weight_decay: float = MEASURED.weight_decay
    class_weights: tuple = MEASURED.class_weights
    dice_weight: float = MEASURED.dice_weight


def cross_entropy(logits, labels, class_weights=None):
    """Mean pixel-wise softmax cross-entropy, each pixel weighted by its true class's weight."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    if class_weights is None:
        return tf.reduce_mean(losses)
    weights = tf.gather(tf.constant(class_weights, tf.float32), labels)
    return tf.reduce_sum(losses * weights) / tf.reduce_sum(weights)


def soft_dice(logits, labels):
    """Mean over WT, TC and ET of the soft Dice of the batch (regions absent in both count 1)."""
    probabilities = tf.nn.softmax(logits)
    truth = tf.one_hot(labels, NUM_CLASSES)
    scores = []
    for region in REGIONS:
        predicted = region_probabilities(probabilities, region)
        expected = region_probabilities(truth, region)
        overlap = tf.reduce_sum(predicted * expected)
        total = tf.reduce_sum(predicted) + tf.reduce_sum(expected)
        scores.append((2.0 * overlap + _SMOOTH) / (total + _SMOOTH))
    return tf.add_n(scores) / len(scores)


def weight_decay(scale):
    """scale x the sum of tf.nn.l2_loss over the network's conv kernels."""
    kernels = tf.get_collection(WEIGHT_DECAY_COLLECTION)
    if not kernels or not scale:
        return tf.constant(0.0)
    return scale * tf.add_n([tf.nn.l2_loss(kernel) for kernel in kernels])


def segmentation_loss(logits, labels, config):
    """The training loss and its parts.

    Args:
      logits: float32 [N, H, W, NUM_CLASSES].
      labels: int32 [N, H, W].
      config: a LossConfig.
    Returns:
      A dict of scalar tensors: 'total', 'cross_entropy', 'l2', 'soft_dice' (always computed,
      for monitoring; it enters 'total' as dice_weight x (1 - soft_dice)).
    """
    parts = {
        'cross_entropy': cross_entropy(logits, labels, config.class_weights),
        'l2': weight_decay(config.weight_decay),
        'soft_dice': soft_dice(logits, labels),
    }
    total = parts['cross_entropy'] + parts['l2']
    if config.dice_weight:
        total += config.dice_weight * (1.0 - parts['soft_dice'])
    parts['total'] = total
    return parts
