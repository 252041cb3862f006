"""The DCR network: ResNet-50 encoder, Dilated Convolution Refine branches, deconv decoder.

Architecture (sizes for a 224x224x4 input at width 1.0):

  images 224x224x4
  input_conv  7x7/2 conv + BN + ReLU          112x112x64
  3x3/2 max pool                                56x56x64
  resnet_2   3 bottlenecks, stride 1            56x56x256   -> refine_2 (dilation d2)  56x56x64
  resnet_3   4 bottlenecks, stride 2            28x28x512   -> refine_3 (dilation d3)  28x28x64
  resnet_4   6 bottlenecks, stride 2            14x14x1024  -> refine_4 (dilation d4)  14x14x64
  resnet_5   3 bottlenecks, stride 2             7x7x2048   -> refine_5 (dilation d5)   7x7x64
  decoder: refine_5 -> deconv + refine_4 -> deconv + refine_3 -> deconv + refine_2
           -> deconv -> deconv -> 1x1 conv       224x224x5 logits

The bottlenecks are post-activation ResNet v1 (conv-BN-ReLU, conv-BN-ReLU, conv-BN, add,
ReLU) with a 1x1 conv + BN projection shortcut on the first block of each stage; the stride
of a stage sits on the 3x3 conv of its first block (as in torchvision and TF-official
ResNet-50, "v1.5").

Decoder choice: each stride-2 transposed conv is followed only by the addition of the
refined branch of the same resolution, with no BN or ReLU, as the paper describes it. Like
the FCN skip architecture, the decoder is therefore linear in the ReLU features of the four
DCR branches; all non-linearity lives in the encoder and the branches.
"""
import dataclasses
import math
import numbers

import tensorflow.compat.v1 as tf

from model import layers, unet
from model.labels import NUM_CLASSES
from model.recipes import MEASURED

DCR_TYPES = ('A', 'B', 'C', 'none')
ARCHITECTURES = ('dcr', 'unet')
NUM_STAGES = 4
OUTPUT_STRIDE = 32
NUM_MODALITIES = 4
STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck inner widths; stage outputs are 4x these
STEM_WIDTH = 64
BOTTLENECK_EXPANSION = 4
DECODER_SCALES = (16, 8, 4, 2, 1)  # downsampling factor after each decoder deconv


def _is_int(value):
    """True for integers of any integral type, except bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int_tuple(name, value, length):
    """Return `value` as a tuple of `length` positive ints, or raise ValueError."""
    if isinstance(value, (str, bytes)) or not hasattr(value, '__iter__'):
        raise ValueError('{} must be a sequence of {} positive integers, got {!r}'.format(
            name, length, value))
    items = tuple(value)
    if len(items) != length or not all(_is_int(v) and v > 0 for v in items):
        raise ValueError('{} must be {} positive integers, got {!r}'.format(
            name, length, value))
    return tuple(int(v) for v in items)


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Every setting needed to rebuild the network's graph.

    Attributes:
      dcr_type: 'A' (parallel 1x1 and dilated 3x3, summed), 'B' (1x1), 'C' (dilated 3x3), or
        'none': no refine branches, each encoder stage reaches the decoder through one 1x1 conv
        (the baseline whose difference to A, B and C is exactly the refine branches).
      dilations: dilation rates of the DCR branches on ResNet stages 2, 3, 4, 5. The paper's
        figure uses (12, 6, 3, 1); the released code (12, 6, 4, 1), with (8, 4, 2, 1) and
        (6, 3, 2, 1) as alternatives.
      width: multiplier on the ResNet-50 widths (1.0 standard, 0.5 the released code's half
        width, 0.125 for tiny test networks).
      refine_filters: channels of the DCR branches and of the decoder.
      num_classes: number of output logits per pixel.
      blocks: bottleneck blocks in ResNet stages 2, 3, 4, 5.
      architecture: 'dcr' (this module's network) or 'unet' (model/unet.py, the baseline U-Net;
        of the settings above it uses width and num_classes only).
    """
    dcr_type: str = MEASURED.dcr_type
    dilations: tuple = MEASURED.dilations
    width: float = MEASURED.width
    refine_filters: int = MEASURED.refine_filters
    num_classes: int = NUM_CLASSES
    blocks: tuple = (3, 4, 6, 3)
    architecture: str = MEASURED.architecture

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError('architecture must be one of {}, got {!r}'.format(
                ', '.join(ARCHITECTURES), self.architecture))
        if self.dcr_type not in DCR_TYPES:
            raise ValueError('dcr_type must be one of {}, got {!r}'.format(
                ', '.join(DCR_TYPES), self.dcr_type))
        object.__setattr__(self, 'dilations',
                           _positive_int_tuple('dilations', self.dilations, NUM_STAGES))
        object.__setattr__(self, 'blocks',
                           _positive_int_tuple('blocks', self.blocks, NUM_STAGES))
        if (not isinstance(self.width, numbers.Real) or isinstance(self.width, bool)
                or not math.isfinite(self.width) or not self.width >= 1.0 / STEM_WIDTH):
            raise ValueError('width must be a positive number of at least {}, got {!r}'.format(
                1.0 / STEM_WIDTH, self.width))
        object.__setattr__(self, 'width', float(self.width))
        if not _is_int(self.refine_filters) or self.refine_filters < 1:
            raise ValueError('refine_filters must be a positive integer, got {!r}'.format(
                self.refine_filters))
        if not _is_int(self.num_classes) or self.num_classes < 2:
            raise ValueError('num_classes must be an integer of at least 2, got {!r}'.format(
                self.num_classes))

    def to_dict(self):
        """Return the settings as a JSON-friendly dict (tuples become lists)."""
        return {name: (list(value) if isinstance(value, tuple) else value)
                for name, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, settings):
        """Build a config from a dict such as `to_dict()` returns; missing keys use defaults.

        Raises:
          ValueError: on unknown keys or invalid values.
        """
        if not isinstance(settings, dict):
            raise ValueError('network config must be a dict, got {!r}'.format(settings))
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError('unknown network config keys: {}'.format(', '.join(unknown)))
        return cls(**settings)


def _scaled(channels, width):
    """`channels` times the width multiplier, rounded to an integer."""
    return int(round(channels * width))


def _record(endpoints, name, tensor):
    """Store `tensor` under `name` when the caller asked for endpoints."""
    if endpoints is not None:
        endpoints[name] = tensor


def _checked_images(images):
    """`images` once checked to be [N, H, W, C] with C known and H, W multiples of 32: at build
    time where H and W are static, else at run time (an assertion on the returned tensor).

    Raises:
      ValueError: if the rank or C is unknown, or a static H or W is not a multiple of 32.
    """
    shape = images.shape.as_list() if images.shape.dims is not None else None
    if shape is None or len(shape) != 4 or shape[3] is None:
        raise ValueError('images must be [N, H, W, C] with C known, got {}'.format(images.shape))
    height, width = shape[1:3]
    if any(size is not None and size % OUTPUT_STRIDE for size in (height, width)):
        raise ValueError(
            'input size {}x{} is not a multiple of {} in both dimensions; the DCR network '
            'downsamples by {} (e.g. use 224x224 crops)'.format(
                height, width, OUTPUT_STRIDE, OUTPUT_STRIDE))
    if height is not None and width is not None:
        return images
    size_check = tf.debugging.assert_equal(
        tf.math.floormod(tf.shape(images)[1:3], OUTPUT_STRIDE), 0,
        message='the DCR network takes slices whose height and width are multiples of {}'.format(OUTPUT_STRIDE))
    with tf.control_dependencies([size_check]):
        return tf.identity(images)


def _bottleneck(x, inner, stride, project, is_training, name):
    """Post-activation ResNet v1 bottleneck block with output width 4 * inner."""
    with tf.variable_scope(name):
        outer = BOTTLENECK_EXPANSION * inner
        shortcut = (layers.conv_bn(x, outer, 1, is_training, 'shortcut', stride=stride)
                    if project else x)
        y = layers.relu(layers.conv_bn(x, inner, 1, is_training, 'conv1'))
        y = layers.relu(layers.conv_bn(y, inner, 3, is_training, 'conv2', stride=stride))
        y = layers.conv_bn(y, outer, 1, is_training, 'conv3')
        return layers.relu(y + shortcut)


def _encoder(images, config, is_training, endpoints):
    """ResNet-50 trunk; returns the outputs of stages 2-5 (1/4, 1/8, 1/16, 1/32)."""
    x = layers.relu(layers.conv_bn(images, _scaled(STEM_WIDTH, config.width), 7, is_training,
                             'input_conv', stride=2))
    _record(endpoints, 'input_conv', x)
    x = layers.max_pool(x, 3, 2)
    stages = []
    for index, (base, num_blocks) in enumerate(zip(STAGE_WIDTHS, config.blocks)):
        stage = index + 2
        with tf.variable_scope('resnet_{}'.format(stage)):
            for block in range(num_blocks):
                stride = 2 if block == 0 and stage > 2 else 1
                x = _bottleneck(x, _scaled(base, config.width), stride, block == 0,
                                is_training, 'block_{}'.format(block + 1))
        _record(endpoints, 'resnet_{}'.format(stage), x)
        stages.append(x)
    return stages


def _dcr_branch(x, config, dilation, is_training, name):
    """Dilated Convolution Refine branch of type config.dcr_type (A, B or C), then a 1x1 conv."""
    filters = config.refine_filters
    with tf.variable_scope(name):
        if config.dcr_type == 'A':
            y = (layers.conv_bn(x, filters, 1, is_training, 'conv_1x1')
                 + layers.conv_bn(x, filters, 3, is_training, 'conv_3x3', dilation=dilation))
        elif config.dcr_type == 'B':
            y = layers.conv_bn(x, filters, 1, is_training, 'conv_1x1')
        else:
            y = layers.conv_bn(x, filters, 3, is_training, 'conv_3x3', dilation=dilation)
        return layers.conv(layers.relu(y), filters, 1, use_bias=True, name='refine')


def _skips(stages, config, is_training, endpoints):
    """The decoder's inputs from the encoder stages: refine branches 'refine_<stage>', or for
    dcr_type 'none' a channel-matching 1x1 conv 'skip_<stage>'."""
    skips = []
    for stage, (features, dilation) in enumerate(zip(stages, config.dilations), start=2):
        if config.dcr_type == 'none':
            name = 'skip_{}'.format(stage)
            skips.append(layers.conv(features, config.refine_filters, 1, use_bias=True, name=name))
        else:
            name = 'refine_{}'.format(stage)
            skips.append(_dcr_branch(features, config, dilation, is_training, name))
        _record(endpoints, name, skips[-1])
    return skips


def _decoder(refined, config, endpoints):
    """Five stride-2 deconvs from 1/32 to full size, adding the refined skips at 1/16-1/4."""
    x = refined[-1]
    skips = list(reversed(refined[:-1]))  # 1/16, 1/8, 1/4
    for step, scale in enumerate(DECODER_SCALES):
        x = layers.deconv(x, config.refine_filters, name='deconv_{}'.format(step + 1))
        if step < len(skips):
            x = x + skips[step]
        _record(endpoints, 'decoder_{}'.format(scale), x)
    return layers.conv(x, config.num_classes, 1, use_bias=True, name='logits')


def build_network(images, config, is_training, endpoints=None):
    """Build the network of `config`: the DCR network, its variables in the reusable scope 'dcr',
    or for architecture 'unet' the U-Net of model/unet.py in the scope 'unet'.

    Call it once with is_training=True and once with False to get a training and an
    inference graph that share every variable.

    Args:
      images: float32 tensor [N, H, W, C] (NHWC, normally the 4 MRI modalities); H and W
        must be multiples of 32 (checked at run time where they are not static), N may be
        unknown.
      config: NetworkConfig.
      is_training: Python bool; selects batch (True) or moving (False) BN statistics.
      endpoints: optional dict, filled in order with name -> tensor for 'images',
        'input_conv', 'resnet_2'..'resnet_5', 'refine_2'..'refine_5' (dcr_type 'none':
        'skip_2'..'skip_5'),
        'decoder_16', 'decoder_8', 'decoder_4', 'decoder_2', 'decoder_1' (the number is the
        downsampling factor) and 'logits'.

    Returns:
      Logits tensor [N, H, W, config.num_classes].

    Raises:
      ValueError: if a static H or W is not a multiple of 32, or the rank or C is unknown.
      TypeError: if is_training is not a Python bool.
    """
    if not isinstance(is_training, bool):
        raise TypeError('is_training must be a Python bool, got {!r}'.format(is_training))
    images = _checked_images(images)
    _record(endpoints, 'images', images)
    if config.architecture == 'unet':
        with tf.variable_scope('unet', reuse=tf.AUTO_REUSE):
            logits = unet.build(images, config.width, config.num_classes, is_training, endpoints)
    else:
        with tf.variable_scope('dcr', reuse=tf.AUTO_REUSE):
            stages = _encoder(images, config, is_training, endpoints)
            logits = _decoder(_skips(stages, config, is_training, endpoints), config, endpoints)
    _record(endpoints, 'logits', logits)
    return logits


def stage_shapes(config, height=224, width=224, channels=NUM_MODALITIES):
    """Shapes of the network's stages, read from a freshly built (throwaway) graph.

    Args:
      config: NetworkConfig.
      height, width: input size, multiples of 32.
      channels: input channels.

    Returns:
      List of (name, (height, width), channels) in the order of `build_network` endpoints.

    Raises:
      ValueError: if height or width is not a multiple of 32.
    """
    endpoints = {}
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, height, width, channels])
        build_network(images, config, is_training=False, endpoints=endpoints)
    return [(name, tuple(tensor.shape.as_list()[1:3]), tensor.shape.as_list()[3])
            for name, tensor in endpoints.items()]
