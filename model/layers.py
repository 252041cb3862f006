"""Raw `tf.nn` layer helpers for the networks: conv, dilated conv, batch norm, deconv.

TF1-style graph code (`tensorflow.compat.v1`) without tf.layers, Keras or slim. Every helper
creates its variables with `tf.get_variable` inside `tf.variable_scope(name)`, so variables
are shared whenever the caller's scope reuses them. All tensors are NHWC and every op used
here has both a CPU and a GPU kernel.

Variable names inside a helper's scope:
  conv / deconv: `weights` (and `biases` when `use_bias`);
  batch_norm: `gamma`, `beta`, `moving_mean`, `moving_variance`;
  conv_bn: a conv and a batch_norm in their default scopes.
Conv and deconv kernels, and nothing else, go into `WEIGHT_DECAY_COLLECTION` for the L2 loss.

Under a tf.distribute strategy each replica builds its copy of the network inside
`training_replica`, which records that replica's batch-norm updates and can synchronise the
batch statistics across replicas.
"""
import contextlib
import dataclasses
import functools
import threading
import zlib

import tensorflow.compat.v1 as tf

from model.distribute import all_reduced_sum, replica_sum

WEIGHT_DECAY_COLLECTION = 'dcr_weight_decay'


def _register_for_weight_decay(kernel):
    """Add `kernel` to WEIGHT_DECAY_COLLECTION once, even when its scope is built twice."""
    collection = tf.get_collection_ref(WEIGHT_DECAY_COLLECTION)
    if not any(kernel is existing for existing in collection):
        collection.append(kernel)


@dataclasses.dataclass
class _Replica:
    """What the network of one replica records while it is built."""
    sync_batch_norm: bool
    batch_norm_updates: list


_replica = threading.local()   # the _Replica of the calling thread (replicas are built in threads)


@contextlib.contextmanager
def training_replica(sync_batch_norm=False):
    """Yield the list that collects the batch-norm updates built in this thread (they also go to
    tf.GraphKeys.UPDATE_OPS). With `sync_batch_norm`, training-mode batch norms normalise with the
    mean and variance over every replica's batch (all-reduced, gradients too), so N replicas of a
    batch B/N compute what one device computes for B."""
    previous = getattr(_replica, 'current', None)
    _replica.current = _Replica(sync_batch_norm, [])
    try:
        yield _replica.current.batch_norm_updates
    finally:
        _replica.current = previous


def _current_replica():
    """The _Replica being built in this thread, or None outside training_replica."""
    return getattr(_replica, 'current', None)


def _record_update(update):
    tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, update)
    replica = _current_replica()
    if replica is not None:
        replica.batch_norm_updates.append(update)


def synchronized_batch_norm(x, gamma, beta, epsilon):
    """Batch norm of `x` with the statistics of the batches of every replica in sync.

    Returns (y, mean, variance): the variance as fused batch norm returns it for the moving
    average (Bessel-corrected over all the replicas' pixels)."""
    total_count = all_reduced_sum([tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)])[0]
    mean = replica_sum([tf.reduce_sum(x, [0, 1, 2])])[0] / total_count
    centred = x - mean   # two passes: E[x^2] - E[x]^2 loses the variance to cancellation in float32
    variance = replica_sum([tf.reduce_sum(tf.square(centred), [0, 1, 2])])[0] / total_count
    y = centred * (gamma * tf.rsqrt(variance + epsilon)) + beta
    return y, mean, variance * total_count / tf.maximum(total_count - 1.0, 1.0)


def _kernel_seed():
    """An op seed for the kernel of the current variable scope, from its name: a kernel's initial
    values then depend on the graph seed and its own name only, not on how many ops were built
    before it (the input pipeline of several devices builds more than that of one)."""
    return zlib.crc32(tf.get_variable_scope().name.encode()) & 0x7FFFFFFF


def _in_channels(x):
    """Static channel count of the NHWC tensor `x`.

    Raises:
      ValueError: if the channel dimension is not known when the graph is built.
    """
    channels = x.shape.as_list()[-1]
    if channels is None:
        raise ValueError('{}: the channel dimension must be known statically'.format(x.name))
    return channels


@functools.lru_cache(maxsize=None)
def native_dilation_trainable():
    """Whether Conv2D's own `dilations` can be trained in this process: with oneDNN's CPU kernels
    or on a GPU (cuDNN). TensorFlow's plain CPU kernels compute a dilated Conv2D but refuse its
    gradient ('do not yet support dilation rates larger than 1'); TensorFlow turns oneDNN off by
    default on CPUs without AVX-512 unless TF_ENABLE_ONEDNN_OPTS=1 (see model/__init__.py)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        onednn = _pywrap_util_port.IsMklEnabled()
    except (ImportError, AttributeError):
        onednn = False
    return onednn or bool(tf.config.list_physical_devices('GPU'))


def _dilated_conv2d(x, kernel, dilation):
    """Stride-1 'SAME' convolution of `x` with `kernel` dilated by `dilation`: Conv2D's own
    dilations where they can be trained, else space-to-batch (`tf.nn.atrous_conv2d`), which
    computes the same and trains on every device."""
    if native_dilation_trainable():
        return tf.nn.conv2d(x, kernel, strides=[1, 1, 1, 1], padding='SAME', dilations=[1, dilation, dilation, 1])
    return tf.nn.atrous_conv2d(x, kernel, dilation, padding='SAME')


def conv(x, filters, kernel_size, stride=1, dilation=1, use_bias=False, name='conv'):
    """2-D convolution with 'SAME' padding and He-normal initialisation.

    Dilated convolutions use `tf.nn.conv2d(dilations=...)` where that trains (oneDNN on CPU,
    cuDNN on GPU; faster than space-to-batch) and `tf.nn.atrous_conv2d` elsewhere; both hold
    the same `weights` variable, so checkpoints move between machines.

    Args:
      x: float tensor [N, H, W, C].
      filters: number of output channels.
      kernel_size: side of the square kernel.
      stride: spatial stride.
      dilation: dilation (atrous) rate; 1 for an ordinary convolution.
      use_bias: add a learned bias, initialised to zero.
      name: variable scope of the layer.

    Returns:
      Tensor [N, ceil(H / stride), ceil(W / stride), filters].

    Raises:
      ValueError: if both stride and dilation exceed 1 (not supported by Conv2D), or if C
        is not known statically.
    """
    if stride > 1 and dilation > 1:
        raise ValueError('{}: stride {} and dilation {} cannot both exceed 1'.format(
            name, stride, dilation))
    with tf.variable_scope(name):
        kernel = tf.get_variable(
            'weights', [kernel_size, kernel_size, _in_channels(x), filters],
            initializer=tf.variance_scaling_initializer(
                scale=2.0, mode='fan_in', distribution='truncated_normal', seed=_kernel_seed()))
        _register_for_weight_decay(kernel)
        if dilation > 1:
            y = _dilated_conv2d(x, kernel, dilation)
        else:
            y = tf.nn.conv2d(x, kernel, strides=[1, stride, stride, 1], padding='SAME')
        if use_bias:
            biases = tf.get_variable('biases', [filters], initializer=tf.zeros_initializer())
            y = tf.nn.bias_add(y, biases)
        return y


def batch_norm(x, is_training, name='bn', decay=0.99, epsilon=1e-5):
    """Fused batch normalisation over the channels of an NHWC tensor.

    In training mode the batch statistics normalise `x`, and the ops that move
    `moving_mean` / `moving_variance` towards them (exponential average with `decay`) are
    added to `tf.GraphKeys.UPDATE_OPS`; the train op must depend on them. In inference mode
    the moving statistics are used.

    Args:
      x: float tensor [N, H, W, C].
      is_training: Python bool.
      name: variable scope of the layer.
      decay: momentum of the moving averages.
      epsilon: added to the variance before the square root.

    Returns:
      Tensor of the shape of `x`.

    Raises:
      ValueError: if C is not known statically.
    """
    channels = _in_channels(x)
    with tf.variable_scope(name):
        gamma = tf.get_variable('gamma', [channels], initializer=tf.ones_initializer())
        beta = tf.get_variable('beta', [channels], initializer=tf.zeros_initializer())
        moving_collections = [tf.GraphKeys.GLOBAL_VARIABLES,
                              tf.GraphKeys.MOVING_AVERAGE_VARIABLES]
        # MEAN: under a strategy, replicas move them by the mean of their updates.
        moving_mean = tf.get_variable('moving_mean', [channels], trainable=False,
                                      initializer=tf.zeros_initializer(),
                                      collections=moving_collections,
                                      aggregation=tf.VariableAggregation.MEAN)
        moving_variance = tf.get_variable('moving_variance', [channels], trainable=False,
                                          initializer=tf.ones_initializer(),
                                          collections=moving_collections,
                                          aggregation=tf.VariableAggregation.MEAN)
        if not is_training:
            y, _, _ = tf.nn.fused_batch_norm(x, gamma, beta, mean=moving_mean,
                                             variance=moving_variance, epsilon=epsilon,
                                             is_training=False)
            return y
        replica = _current_replica()
        if replica is not None and replica.sync_batch_norm:
            y, batch_mean, batch_variance = synchronized_batch_norm(x, gamma, beta, epsilon)
        else:
            y, batch_mean, batch_variance = tf.nn.fused_batch_norm(
                x, gamma, beta, epsilon=epsilon, is_training=True)
        for moving, batch in ((moving_mean, batch_mean), (moving_variance, batch_variance)):
            _record_update(tf.assign_sub(moving, (moving - batch) * (1.0 - decay)))
        return y


def conv_bn(x, filters, kernel_size, is_training, name, stride=1, dilation=1):
    """conv (no bias) followed by batch norm, in the variable scope `name`."""
    with tf.variable_scope(name):
        return batch_norm(conv(x, filters, kernel_size, stride=stride, dilation=dilation), is_training)


def relu(x, name=None):
    """Rectified linear unit."""
    return tf.nn.relu(x, name=name)


def max_pool(x, size, stride, name=None):
    """Max pooling over square `size` windows with 'SAME' padding."""
    return tf.nn.max_pool2d(x, ksize=[1, size, size, 1], strides=[1, stride, stride, 1],
                            padding='SAME', name=name)


def deconv(x, filters, kernel_size=4, stride=2, name='deconv'):
    """Transposed convolution that upsamples H and W by `stride`, without bias.

    The output size is the input's times `stride`: static where the input's is, else taken at run
    time (an export's network takes slices of any size). The kernel is initialised to preserve the activation variance of a linear
    layer: each output pixel sums (kernel_size / stride)^2 * C input terms.

    Args:
      x: float tensor [N, H, W, C] with C known statically.
      filters: number of output channels.
      kernel_size: side of the square kernel (4 with stride 2 avoids checkerboard gaps).
      stride: upsampling factor.
      name: variable scope of the layer.

    Returns:
      Tensor [N, H * stride, W * stride, filters].

    Raises:
      ValueError: if C is not known statically.
    """
    in_channels = _in_channels(x)
    static = x.shape.as_list()
    dynamic = tf.shape(x)
    upsampled = [static[axis] * stride if static[axis] else dynamic[axis] * stride for axis in (1, 2)]
    with tf.variable_scope(name):
        # variance_scaling computes fan_in = k*k*shape[-2] = k*k*filters for this
        # [k, k, out, in] kernel; rescale it to the true fan-in k*k*in/stride^2.
        kernel = tf.get_variable(
            'weights', [kernel_size, kernel_size, filters, in_channels],
            initializer=tf.variance_scaling_initializer(
                scale=float(stride * stride * filters) / in_channels, mode='fan_in',
                distribution='truncated_normal', seed=_kernel_seed()))
        _register_for_weight_decay(kernel)
        output_shape = tf.stack([dynamic[0]] + upsampled + [filters])
        y = tf.nn.conv2d_transpose(x, kernel, output_shape, strides=[1, stride, stride, 1],
                                   padding='SAME')
        y.set_shape([static[0]] + [size * stride if size else None for size in static[1:3]] + [filters])
        return y
