"""Tests of the raw layer helpers, the DCR network and its baselines, on tiny widths and sizes (CPU)."""
import json

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

from model import dcr, layers  # noqa: E402  (after disable_v2_behavior)

TINY = dcr.NetworkConfig(width=0.125, refine_filters=8)
# stem, 16 bottlenecks, 4 shortcuts, 4 DCR-A branches (+ refine 1x1), 5 deconvs + logits
CONVS_IN_DCR_A = 1 + 3 * 16 + 4 + 4 * (2 + 1) + 5 + 1
BATCH_NORMS_IN_DCR_A = 1 + 3 * 16 + 4 + 4 * 2


def _images(batch, height, width, seed=0):
    return np.random.RandomState(seed).randn(batch, height, width, 4).astype(np.float32)


def _variable(name):
    matches = [v for v in tf.global_variables() if v.op.name == name]
    assert len(matches) == 1, name
    return matches[0]


def _training_step(loss, learning_rate):
    with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
        return tf.train.AdamOptimizer(learning_rate).minimize(loss)


NETWORKS = [dict(dcr_type=dcr_type) for dcr_type in dcr.DCR_TYPES] + [dict(architecture='unet')]


@pytest.mark.parametrize('network', NETWORKS, ids=lambda network: '-'.join(network.values()))
@pytest.mark.parametrize('height,width', [(32, 32), (64, 96)])
def test_logits_have_input_resolution(network, height, width):
    config = dcr.NetworkConfig(width=0.125, refine_filters=8, **network)
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, height, width, 4])
        logits = dcr.build_network(images, config, is_training=False)
        assert logits.shape.as_list() == [None, height, width, 5]
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            value = session.run(logits, {images: _images(2, height, width)})
    assert value.shape == (2, height, width, 5)
    assert np.all(np.isfinite(value))


@pytest.mark.parametrize('height,width', [(48, 64), (64, 40), (30, 30)])
def test_size_not_multiple_of_32_is_rejected(height, width):
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, height, width, 4])
        with pytest.raises(ValueError, match=r'{}x{} is not a multiple of 32'.format(
                height, width)):
            dcr.build_network(images, TINY, is_training=True)


def test_is_training_must_be_a_python_bool():
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, 32, 32, 4])
        with pytest.raises(TypeError, match='is_training'):
            dcr.build_network(images, TINY, is_training=tf.constant(True))


def test_stage_shapes_follow_the_figure():
    shapes = dict((name, (size, channels))
                  for name, size, channels in dcr.stage_shapes(TINY, 64, 96))
    assert shapes['images'] == ((64, 96), 4)
    assert shapes['input_conv'] == ((32, 48), 8)
    for stage, factor in zip(range(2, 6), (4, 8, 16, 32)):
        size = (64 // factor, 96 // factor)
        assert shapes['resnet_{}'.format(stage)] == (size, 8 * 2 ** (stage - 2) * 4)
        assert shapes['refine_{}'.format(stage)] == (size, 8)
    for factor in (16, 8, 4, 2, 1):
        assert shapes['decoder_{}'.format(factor)] == ((64 // factor, 96 // factor), 8)
    assert shapes['logits'] == ((64, 96), 5)


def test_training_and_inference_graphs_share_all_variables():
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, 32, 32, 4])
        dcr.build_network(images, TINY, is_training=True)
        trainable = tf.trainable_variables()
        every = tf.global_variables()
        dcr.build_network(images, TINY, is_training=False)
        assert tf.trainable_variables() == trainable
        assert tf.global_variables() == every


def test_weight_decay_collection_holds_conv_kernels_only():
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, 32, 32, 4])
        dcr.build_network(images, TINY, is_training=True)
        dcr.build_network(images, TINY, is_training=False)
        decayed = tf.get_collection(layers.WEIGHT_DECAY_COLLECTION)
        kernels = [v for v in tf.trainable_variables() if v.shape.ndims == 4]
        assert len(decayed) == CONVS_IN_DCR_A
        assert sorted(v.op.name for v in decayed) == sorted(v.op.name for v in kernels)
        assert all(v.op.name.endswith('/weights') for v in decayed)
        others = [v for v in tf.global_variables() if v.shape.ndims != 4]
        assert {v.op.name.rsplit('/', 1)[1] for v in others} == {
            'gamma', 'beta', 'moving_mean', 'moving_variance', 'biases'}


@pytest.fixture(params=[True, False], ids=['native', 'space-to-batch'])
def dilation_path(request, monkeypatch):
    """Run a test with Conv2D's own dilations and again with the space-to-batch fallback."""
    monkeypatch.setattr(layers, 'native_dilation_trainable', lambda: request.param)
    return request.param


def test_dilated_convs_use_the_configured_rates(monkeypatch):
    monkeypatch.setattr(layers, 'native_dilation_trainable', lambda: True)
    config = dcr.NetworkConfig(width=0.125, refine_filters=8, dilations=(8, 4, 2, 1))
    with tf.Graph().as_default() as graph:
        dcr.build_network(tf.placeholder(tf.float32, [1, 64, 64, 4]), config, False)
        for stage, rate in zip(range(2, 6), config.dilations):
            op = graph.get_operation_by_name('dcr/refine_{}/conv_3x3/conv/Conv2D'.format(stage))
            assert list(op.get_attr('dilations')) == [1, rate, rate, 1]
        others = [op for op in graph.get_operations()
                  if op.type == 'Conv2D' and '/conv_3x3/' not in op.name]
        assert all(list(op.get_attr('dilations')) == [1, 1, 1, 1] for op in others)


def test_dilated_conv_footprint_of_an_impulse(dilation_path):
    impulse = np.zeros([1, 15, 15, 1], np.float32)
    impulse[0, 7, 7, 0] = 1.0
    with tf.Graph().as_default():
        output = layers.conv(tf.constant(impulse), 1, 3, dilation=3, name='dilated')
        kernel = _variable('dilated/weights')
        with tf.Session() as session:
            session.run(kernel.assign(tf.ones_like(kernel)))
            value = session.run(output)[0, :, :, 0]
    rows, cols = np.nonzero(value)
    assert sorted(set(rows)) == [4, 7, 10] and sorted(set(cols)) == [4, 7, 10]
    assert len(rows) == 9 and np.allclose(value[rows, cols], 1.0)


def test_space_to_batch_dilation_trains_like_an_explicitly_dilated_kernel(monkeypatch):
    """The fallback for CPUs whose kernels cannot backpropagate Conv2D's dilations: output and
    gradients equal those of an ordinary convolution with the kernel's taps spread `rate` apart."""
    monkeypatch.setattr(layers, 'native_dilation_trainable', lambda: False)
    rate = 4
    with tf.Graph().as_default():
        x = tf.constant(_images(2, 19, 23))
        y = layers.conv(x, 5, 3, dilation=rate, name='dilated')
        kernel = _variable('dilated/weights')
        assert not any(op.type == 'Conv2D' and op.get_attr('dilations') != [1, 1, 1, 1]
                       for op in tf.get_default_graph().get_operations())
        spread = tf.scatter_nd([[i * rate, j * rate] for i in range(3) for j in range(3)],
                               tf.reshape(kernel, [9, 4, 5]), [2 * rate + 1, 2 * rate + 1, 4, 5])
        reference = tf.nn.conv2d(x, spread, strides=[1, 1, 1, 1], padding='SAME')
        weights = tf.constant(np.random.RandomState(1).randn(2, 19, 23, 5).astype(np.float32))
        gradients = tf.gradients(tf.reduce_sum(y * weights), [x, kernel])
        reference_gradients = tf.gradients(tf.reduce_sum(reference * weights), [x, kernel])
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            computed, expected = session.run(([y] + gradients, [reference] + reference_gradients))
    assert computed[0].shape == (2, 19, 23, 5)
    for value, reference_value in zip(computed, expected):
        np.testing.assert_allclose(value, reference_value, rtol=1e-4, atol=1e-4)


def test_deconv_doubles_size_with_unknown_batch():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 3, 5, 6])
        y = layers.deconv(x, 7)
        assert y.shape.as_list() == [None, 6, 10, 7]
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            value = session.run(y, {x: np.ones([2, 3, 5, 6], np.float32)})
    assert value.shape == (2, 6, 10, 7)


def test_batch_norm_training_uses_batch_statistics_and_updates_moving_averages():
    x = (np.random.RandomState(1).randn(4, 5, 5, 3) * 2.0 + 3.0).astype(np.float32)
    flat = x.reshape(-1, 3)
    with tf.Graph().as_default():
        y = layers.batch_norm(tf.constant(x), is_training=True, name='bn', decay=0.9)
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        assert len(updates) == 2
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            value = session.run(y)
            session.run(updates)
            mean, variance = session.run([_variable('bn/moving_mean'),
                                          _variable('bn/moving_variance')])
    expected = (x - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5)
    np.testing.assert_allclose(value, expected, atol=1e-4)
    np.testing.assert_allclose(mean, 0.1 * flat.mean(0), rtol=1e-4)
    np.testing.assert_allclose(variance, 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-4)


def test_batch_norm_inference_uses_moving_statistics():
    rng = np.random.RandomState(2)
    x = rng.randn(2, 4, 4, 3).astype(np.float32)
    stats = {name: rng.uniform(0.5, 2.0, 3).astype(np.float32)
             for name in ('gamma', 'beta', 'moving_mean', 'moving_variance')}
    with tf.Graph().as_default():
        y = layers.batch_norm(tf.constant(x), is_training=False, name='bn')
        assert not tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.Session() as session:
            session.run([_variable('bn/' + name).assign(value)
                         for name, value in stats.items()])
            value = session.run(y)
    expected = (stats['gamma'] * (x - stats['moving_mean'])
                / np.sqrt(stats['moving_variance'] + 1e-5) + stats['beta'])
    np.testing.assert_allclose(value, expected, atol=1e-4)


def test_network_moving_statistics_are_trained_and_used_at_inference():
    batch = _images(2, 32, 32, seed=3) * 3.0 + 1.0
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, 32, 32, 4])
        train_logits = dcr.build_network(images, TINY, is_training=True)
        test_logits = dcr.build_network(images, TINY, is_training=False)
        step = _training_step(tf.reduce_mean(tf.square(train_logits)), 1e-3)
        moving = tf.get_collection(tf.GraphKeys.MOVING_AVERAGE_VARIABLES)
        assert len(moving) == 2 * BATCH_NORMS_IN_DCR_A
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            initial = session.run(moving)
            for _ in range(3):
                session.run(step, {images: batch})
            trained = session.run(moving)
            assert all(not np.allclose(a, b) for a, b in zip(initial, trained))
            # Inference output of one slice does not depend on the rest of the batch (up to the
            # round-off of oneDNN's batch-size-dependent kernels; batch statistics would move it by ~1)...
            alone = session.run(test_logits, {images: batch[:1]})
            together = session.run(test_logits, {images: batch})
            np.testing.assert_allclose(alone[0], together[0], rtol=1e-3, atol=1e-3)
            # ...but does depend on the moving statistics.
            session.run([v.assign(v * 2.0 + 0.5) for v in moving])
            changed = session.run(test_logits, {images: batch[:1]})
            assert not np.allclose(alone, changed, atol=1e-3)


@pytest.mark.parametrize('network', [NETWORKS[0]] + NETWORKS[3:], ids=('dcr-A', 'none', 'unet'))
def test_tiny_network_overfits_one_batch(network):
    image = _images(1, 64, 64, seed=4)
    label = np.zeros([1, 64, 64], np.int32)
    rows, cols = np.mgrid[:64, :64]
    label[0][(rows - 30) ** 2 + (cols - 36) ** 2 < 15 ** 2] = 2
    label[0][(rows - 30) ** 2 + (cols - 36) ** 2 < 6 ** 2] = 4
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        logits = dcr.build_network(tf.constant(image), dcr.NetworkConfig(width=0.125, refine_filters=8, **network),
                                   is_training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.constant(label), logits=logits))
        step = _training_step(loss, 1e-3)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            initial = session.run(loss)
            for _ in range(60):
                final, _ = session.run([loss, step])
    assert final < 0.5 * initial, (initial, final)


def _variable_names(config):
    with tf.Graph().as_default():
        dcr.build_network(tf.placeholder(tf.float32, [None, 32, 32, 4]), config, is_training=True)
        return [v.op.name for v in tf.global_variables()]


def test_the_baseline_without_refine_branches_differs_from_dcr_a_by_exactly_the_branches():
    with_branches = _variable_names(TINY)
    without = _variable_names(dcr.NetworkConfig(dcr_type='none', width=0.125, refine_filters=8))
    assert not [name for name in without if 'refine' in name]
    assert sorted(set(without) - set(with_branches)) == ['dcr/skip_{}/{}'.format(stage, variable)
                                                         for stage in range(2, 6) for variable in ('biases', 'weights')]
    assert {name for name in with_branches if '/refine_' not in name} == {name for name in without
                                                                          if '/skip_' not in name}


def test_the_unet_has_its_own_scope_five_levels_and_no_resnet():
    endpoints = {}
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, 64, 64, 4])
        dcr.build_network(images, dcr.NetworkConfig(architecture='unet', width=0.125), False, endpoints)
        names = [v.op.name for v in tf.global_variables()]
    assert names and all(name.startswith('unet/') for name in names)
    assert [endpoints['down_{}'.format(level)].shape.as_list()[1:] for level in range(1, 6)] == [
        [64, 64, 8], [32, 32, 16], [16, 16, 32], [8, 8, 64], [4, 4, 128]]
    assert endpoints['up_1'].shape.as_list()[1:] == [64, 64, 8]


def test_every_op_of_the_training_graph_has_a_gpu_kernel():
    kernels = pytest.importorskip('tensorflow.python.framework.kernels')

    def devices(op_type):
        return {k.device_type for k in kernels.get_registered_kernels_for_op(op_type).kernel}

    def runs_on_gpu(op_type):  # DEFAULT kernels are registered for every device
        return bool(devices(op_type) & {'GPU', 'DEFAULT'})

    if 'GPU' not in devices('Conv2D'):
        pytest.skip('this TensorFlow build has no GPU kernels')
    with tf.Graph().as_default() as graph:
        images = tf.placeholder(tf.float32, [None, 32, 32, 4])
        labels = tf.placeholder(tf.int32, [None, 32, 32])
        logits = dcr.build_network(images, TINY, is_training=True)
        dcr.build_network(images, TINY, is_training=False)
        _training_step(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=logits)), 1e-4)
        op_types = {op.type for op in graph.get_operations()}
    assert not {t for t in op_types if not runs_on_gpu(t)}


def test_config_round_trips_through_json():
    config = dcr.NetworkConfig(dcr_type='C', dilations=(8, 4, 2, 1), width=0.5,
                               refine_filters=32, num_classes=4, blocks=(1, 1, 1, 1), architecture='unet')
    restored = dcr.NetworkConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert dcr.NetworkConfig.from_dict({}) == dcr.NetworkConfig()   # config.json from before architecture
    assert dcr.NetworkConfig().architecture == 'dcr'
    assert dcr.NetworkConfig().dilations == (12, 6, 3, 1)


@pytest.mark.parametrize('settings,message', [
    ({'dcr_type': 'D'}, 'dcr_type'),
    ({'architecture': 'fcn'}, 'architecture'),
    ({'dilations': [12, 6, 3]}, 'dilations'),
    ({'dilations': [12, 6, 0, 1]}, 'dilations'),
    ({'dilations': [12, 6, 2.5, 1]}, 'dilations'),
    ({'dilations': '1234'}, 'dilations'),
    ({'width': 0}, 'width'),
    ({'width': -0.5}, 'width'),
    ({'width': float('nan')}, 'width'),
    ({'width': '1'}, 'width'),
    ({'refine_filters': 0}, 'refine_filters'),
    ({'num_classes': 1}, 'num_classes'),
    ({'blocks': [3, 4, 6]}, 'blocks'),
    ({'dilation': [12, 6, 3, 1]}, 'unknown network config keys: dilation'),
])
def test_config_rejects_bad_values(settings, message):
    with pytest.raises(ValueError, match=message):
        dcr.NetworkConfig.from_dict(settings)
