"""The 2-D U-Net baseline of the parameter study (issue #28), in the layers of model/layers.py.

Ronneberger et al.'s network with batch norm: five levels of two 3x3 conv + BN + ReLU, 2x2 max
pooling between them; back up, a 2x2 stride-2 transposed conv, concatenation with the level's
encoder features and two 3x3 conv + BN + ReLU; a 1x1 conv to the class logits. At width 1.0 the
levels are 64 ... 1024 channels wide (31.0 M weights, against 26.3 M for DCR-A and 24.1 M without refine branches). It takes the same
input, loss and decoding as the DCR network (model/dcr.py builds it for architecture 'unet').
"""
import tensorflow.compat.v1 as tf

from model import layers

LEVEL_WIDTHS = (64, 128, 256, 512, 1024)


def _double_conv(x, filters, is_training, name):
    """Two 3x3 conv + BN + ReLU in the variable scope `name`."""
    with tf.variable_scope(name):
        x = layers.relu(layers.conv_bn(x, filters, 3, is_training, 'conv1'))
        return layers.relu(layers.conv_bn(x, filters, 3, is_training, 'conv2'))


def build(images, width, num_classes, is_training, endpoints=None):
    """Logits [N, H, W, num_classes] of the U-Net for `images` [N, H, W, C] (H, W multiples of 16).

    Args:
      width: multiplier on LEVEL_WIDTHS.
      endpoints: optional dict, filled with 'down_1'..'down_5' and 'up_4'..'up_1'.
    """
    widths = [max(int(round(channels * width)), 1) for channels in LEVEL_WIDTHS]
    features, x = [], images
    for level, filters in enumerate(widths, start=1):
        if level > 1:
            x = layers.max_pool(x, 2, 2)
        x = _double_conv(x, filters, is_training, 'down_{}'.format(level))
        features.append(x)
        if endpoints is not None:
            endpoints['down_{}'.format(level)] = x
    for level in range(len(widths) - 1, 0, -1):
        filters = widths[level - 1]
        x = layers.deconv(x, filters, kernel_size=2, name='upsample_{}'.format(level))
        x = _double_conv(tf.concat([features[level - 1], x], axis=-1), filters, is_training, 'up_{}'.format(level))
        if endpoints is not None:
            endpoints['up_{}'.format(level)] = x
    return layers.conv(x, num_classes, 1, use_bias=True, name='logits')
