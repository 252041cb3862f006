"""Mixed precision (session_config(bfloat16=True)): the oneDNN pass really runs the network's
convolutions in bfloat16, keeps the outputs close to float32, and Train.py trains with it."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

from model.dcr import NetworkConfig, build_network  # noqa: E402
from model.cpu import cpu_has_bfloat16  # noqa: E402
from model.predict import session_config  # noqa: E402

pytestmark = pytest.mark.skipif(not cpu_has_bfloat16(), reason='this CPU has no native bfloat16 '
                                '(AVX512-BF16 or AMX), so the oneDNN pass leaves the graph in float32')

NETWORK = NetworkConfig(dcr_type='A', dilations=(6, 3, 2, 1), width=0.125, refine_filters=8)


def run_network(bfloat16):
    """(logits, the executed graph's ops) of a tiny network on a fixed input and fixed weights."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        images = tf.constant(np.random.RandomState(0).randn(2, 64, 64, 4).astype(np.float32))
        logits = build_network(images, NETWORK, is_training=False)
        with tf.Session(config=session_config(bfloat16=bfloat16)) as session:
            session.run(tf.global_variables_initializer())
            metadata = tf.RunMetadata()
            values = session.run(logits, options=tf.RunOptions(output_partition_graphs=True),
                                 run_metadata=metadata)
    ops = [node for graph in metadata.partition_graphs for node in graph.node]
    return values, ops


def is_bfloat16_conv(node):
    return 'Conv2D' in node.op and node.attr['T'].type == tf.bfloat16.as_datatype_enum


def test_convolutions_run_in_bfloat16_only_when_asked():
    _, float_ops = run_network(bfloat16=False)
    _, mixed_ops = run_network(bfloat16=True)
    assert not any(is_bfloat16_conv(node) for node in float_ops)
    assert sum(is_bfloat16_conv(node) for node in mixed_ops) >= 10


def test_bfloat16_logits_stay_close_to_float32():
    reference, _ = run_network(bfloat16=False)
    mixed, _ = run_network(bfloat16=True)
    assert mixed.dtype == np.float32
    assert not np.array_equal(mixed, reference)   # the pass changed the arithmetic ...
    scale = np.abs(reference).max()
    assert np.abs(mixed - reference).max() < 0.05 * scale   # ... within bfloat16's 8-bit mantissa
    assert np.mean(mixed.argmax(-1) == reference.argmax(-1)) > 0.9


def predicted_labels(bfloat16, image):
    """Labels of a tiny network with fixed weights, predicted with --tta flip, in float32 or bfloat16."""
    from model.predict import Predictor
    from model.recipes import MEASURED
    predictor = Predictor(NETWORK, MEASURED.decoding.overridden(tta='flip'), 4)
    with tf.Graph().as_default() as graph:
        tf.set_random_seed(0)
        predictor.build(graph)
        with tf.Session(config=session_config(bfloat16=bfloat16)) as session:
            session.run(tf.global_variables_initializer())
            kernel = [v for v in tf.global_variables() if v.op.name == 'dcr/logits/weights'][0]
            session.run(kernel.assign(kernel * 0.01))   # untrained logits saturate; tame them
            return predictor.predict(session, image)


def test_bfloat16_inference_labels_agree_with_float32():
    """Inference.py --bfloat16 on: at most 3 % of the brain voxels of a tiny random network change label
    (docs/accuracy.md measures trained full-width networks on real patients)."""
    from model import phantom
    patient = phantom.synthesize_patient(np.random.default_rng((0, 0)), 'HGG', (16, 96, 96))
    image = np.stack([patient.images[name] for name in ('Flair', 'T1', 'T1c', 'T2')], axis=-1)
    reference, mixed = predicted_labels(False, image), predicted_labels(True, image)
    brain = np.any(image != 0, axis=-1)
    assert len(np.unique(reference[brain])) >= 2, 'degenerate network: the check is void'
    assert np.mean(mixed[brain] == reference[brain]) >= 0.97
    assert not mixed[~brain.any(axis=(1, 2))].any()
