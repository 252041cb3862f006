"""model/predict.py: brain windows, cut/paste, and whole-volume prediction."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from scipy import ndimage

tf.disable_v2_behavior()

from model import dcr, phantom, predict  # noqa: E402  (after disable_v2_behavior)
from model.decoding import TEST_TIME_AUGMENTATIONS, Decoding, decode  # noqa: E402
from model.errors import InputError  # noqa: E402
from model.postprocess import remove_small_components  # noqa: E402
from model import normalization  # noqa: E402
from model.normalization import CLIP_SD  # noqa: E402

TINY = dcr.NetworkConfig(width=0.125, refine_filters=8)
CHANNELS = ('Flair', 'T1', 'T1c', 'T2')   # model.brats.MODALITIES order


def decoding(tta='none', method='argmax', tumour_threshold=0.5, min_component_size=0, min_component_fraction=0.0):
    """A Decoding: the paper's one-pass argmax unless told otherwise."""
    return Decoding(tta, method, tumour_threshold, min_component_size, min_component_fraction)


def tiny_predictor(normalization=normalization.ZSCORE, **settings):
    """A Predictor of the tiny network, 4 slices a batch, decoding as `settings` say."""
    return predict.Predictor(TINY, decoding(**settings), 4, normalization)


def phantom_image(shape, seed=0):
    """(z, y, x, 4) int16 image of one synthetic patient, channels flair, t1, t1c, t2."""
    patient = phantom.synthesize_patient(np.random.default_rng((seed, 0)), 'HGG', shape)
    return np.stack([patient.images[name] for name in CHANNELS], axis=-1)


def reference_normalisation(window, brain_voxels):
    """z-score per channel over the volume's brain voxels, clipped, zero outside the brain."""
    brain_voxels = brain_voxels.astype(np.float64)
    mean, std = brain_voxels.mean(axis=0), brain_voxels.std(axis=0)
    window = window.astype(np.float64)
    inside = np.any(window != 0, axis=-1, keepdims=True)
    return np.where(inside, np.clip((window - mean) / std, -CLIP_SD, CLIP_SD), 0.0).astype(np.float32)


# ---------------------------------------------------------------- windows


@pytest.mark.parametrize('start_y,start_x,height,width', [(3, 5, 16, 32), (-4, 20, 16, 16),
                                                         (30, -6, 32, 64), (-8, -8, 64, 64)])
def test_cut_and_paste_are_inverse_on_the_window(start_y, start_x, height, width):
    volume = np.random.RandomState(0).randint(1, 100, size=(3, 40, 48, 2)).astype(np.int16)
    window = predict.Window(height, width, start_y, start_x)
    cut = predict.cut_window(volume, window)
    assert cut.shape == (3, height, width, 2)
    inside = np.zeros(volume.shape[:3], bool)
    inside[:, max(start_y, 0):start_y + height, max(start_x, 0):start_x + width] = True
    # Outside the frame the cut is zero padding.
    assert np.count_nonzero(cut[..., 0]) == inside[0].sum() * 3
    for channel in range(2):
        pasted = predict.paste_window(cut[..., channel], volume.shape[:3], window)
        assert pasted.shape == volume.shape[:3] and pasted.dtype == volume.dtype
        np.testing.assert_array_equal(pasted, np.where(inside, volume[..., channel], 0))
        again = predict.cut_window(pasted, window)
        np.testing.assert_array_equal(again, cut[..., channel])


def brain_mask(frame, box):
    """(2, frame, frame) mask whose brain bounding box is (y0, y1, x0, x1), ends exclusive."""
    y0, y1, x0, x1 = box
    mask = np.zeros((2, frame[0], frame[1]), bool)
    mask[0, y0:y1, x0] = mask[1, y0, x0:x1] = True
    mask[1, y1 - 1, x1 - 1] = True
    return mask


@pytest.mark.parametrize('frame,box,margin,height,width', [
    ((240, 240), (40, 200, 60, 190), 8, 192, 160),   # 160 + 16 -> 192; 130 + 16 -> 160
    ((240, 240), (100, 130, 10, 40), 8, 64, 64),     # small brain near the edge
    ((240, 240), (100, 130, 10, 40), 0, 32, 32),     # no margin
    ((96, 96), (0, 96, 10, 80), 8, 128, 96),         # taller than the frame: padding
    ((48, 48), (10, 40, 12, 30), 8, 64, 64),         # window larger than the frame
    ((240, 240), (0, 240, 0, 240), 8, 256, 256),     # brain fills the frame
])
def test_brain_window_covers_the_brain_and_margin(frame, box, margin, height, width):
    mask = brain_mask(frame, box)
    window = predict.brain_window(mask, margin)
    assert (window.height, window.width) == (height, width)
    y0, y1, x0, x1 = box
    for start, size, first, last, extent in ((window.start_y, height, y0, y1, frame[0]),
                                             (window.start_x, width, x0, x1, frame[1])):
        assert size % 32 == 0
        if size <= extent:
            assert 0 <= start <= extent - size     # inside the frame when it fits
            assert start <= max(first - margin, 0) and start + size >= min(last + margin, extent)
        else:
            assert start < 0 and start + size > extent
    cut = predict.cut_window(mask, window)
    assert cut.sum() == mask.sum()                 # nothing of the brain is cut off


def test_brain_window_of_an_empty_mask():
    assert predict.brain_window(np.zeros((3, 64, 64), bool)) == (32, 32, 0, 0)
    assert predict.round_up(0) == 32 and predict.round_up(65) == 96 and predict.round_up(64) == 64


# ---------------------------------------------------------------- decoding


def decode_with_tf(probabilities, method, tumour_threshold=0.5):
    with tf.Graph().as_default(), tf.Session() as session:
        return session.run(decode(tf.constant(probabilities, tf.float32), decoding(method=method,
                                                                                  tumour_threshold=tumour_threshold)))


@pytest.mark.parametrize('probabilities, argmax_label, region_label', [
    ([0.40, 0.25, 0.35, 0.00, 0.00], 0, 2),    # tumour 0.6 split between classes: argmax says background
    ([0.40, 0.10, 0.25, 0.00, 0.25], 0, 4),    # core 0.35 > oedema 0.25; ET 0.25 > rest of core 0.10
    ([0.31, 0.22, 0.29, 0.00, 0.18], 0, 1),    # core 0.40 > oedema 0.29; ET 0.18 < necrosis 0.22
    ([0.20, 0.10, 0.15, 0.25, 0.30], 4, 3),    # core 0.65; ET 0.30 < rest 0.35, non-enhancing likelier
    ([0.60, 0.10, 0.10, 0.10, 0.10], 0, 0),
    ([0.10, 0.05, 0.70, 0.05, 0.10], 2, 2),
])
def test_region_decoding_decides_wt_then_tc_then_et(probabilities, argmax_label, region_label):
    assert decode_with_tf(np.array([probabilities]), 'argmax')[0] == argmax_label
    assert decode_with_tf(np.array([probabilities]), 'regions')[0] == region_label


def test_region_decoding_follows_the_region_probabilities():
    probabilities = np.random.default_rng(0).dirichlet(np.full(5, 0.5), size=(40, 50))
    labels = decode_with_tf(probabilities, 'regions')
    argmax = decode_with_tf(probabilities, 'argmax')
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(argmax, np.argmax(probabilities, axis=-1))
    whole = labels > 0
    np.testing.assert_array_equal(whole, probabilities[..., 0] < 0.5)
    core = np.isin(labels, (1, 3, 4))
    np.testing.assert_array_equal(core, whole & (probabilities[..., [1, 3, 4]].sum(-1) > probabilities[..., 2]))
    np.testing.assert_array_equal(labels == 4, core & (probabilities[..., 4] > probabilities[..., [1, 3]].sum(-1)))
    assert (argmax > 0)[~whole].sum() == 0            # argmax tumour is always region tumour
    assert whole.sum() > (argmax > 0).sum()


def test_a_lower_tumour_threshold_adds_tumour_and_keeps_the_core_decisions():
    probabilities = np.random.default_rng(1).dirichlet(np.full(5, 0.5), size=(40, 50)).astype(np.float32)
    background = probabilities[..., 0]
    whole = probabilities[..., 1:].sum(-1)
    assert np.abs(whole / (whole + background) - 0.3).min() > 1e-4      # no voxel on the boundary
    default = decode_with_tf(probabilities, 'regions')
    sensitive = decode_with_tf(probabilities, 'regions', 0.3)
    np.testing.assert_array_equal(sensitive > 0, whole / (whole + background) > 0.3)
    assert (sensitive > 0).sum() > (default > 0).sum()
    tumour_at_half = default > 0
    np.testing.assert_array_equal(sensitive[tumour_at_half], default[tumour_at_half])


@pytest.mark.parametrize('decoding, threshold, message', [
    ('softmax', 0.5, 'decoding must be one of'),
    ('regions', 1.0, 'between 0 and 1'),
    ('regions', 0.0, 'between 0 and 1'),
    ('argmax', 0.3, 'needs regions decoding'),
])
def test_unknown_decodings_and_unusable_thresholds_are_refused(decoding, threshold, message):
    with pytest.raises(InputError, match=message):
        tiny_predictor(method=decoding, tumour_threshold=threshold)


# ---------------------------------------------------------------- Predictor


@pytest.fixture(scope='module')
def network():
    """A graph and session with a random tiny network, and a Predictor built into it."""
    graph = tf.Graph()
    predictor = tiny_predictor()
    with graph.as_default():
        tf.set_random_seed(0)
        predictor.build(graph)
        session = tf.Session(graph=graph)
        session.run(tf.global_variables_initializer())
        # The random network is overconfident (saturated softmax); tame its last layer so
        # that flip averaging rarely meets exact ties.
        kernel = [v for v in tf.global_variables() if v.op.name == 'dcr/logits/weights'][0]
        session.run(kernel.assign(kernel * 0.01))
    yield graph, session, predictor
    session.close()


@pytest.fixture(scope='module')
def image():
    image = phantom_image((24, 96, 96))
    brain = np.any(image != 0, axis=(1, 2, 3))
    assert brain.any() and not brain.all()      # some slices hold no brain
    return image


def test_predict_returns_labels_of_the_input_grid(network, image):
    graph, session, predictor = network
    slices = []
    labels = predictor.predict(session, image, progress=slices.append)
    assert labels.dtype == np.uint8 and labels.shape == image.shape[:3]
    assert labels.max() <= 4
    brainless = ~np.any(image != 0, axis=(1, 2, 3))
    assert not labels[brainless].any()
    assert sum(slices) == int((~brainless).sum())


def bilinear_resize(images, height, width):
    """[N, H, W, C] resampled to height x width by pixel centres (tf.image.resize's bilinear)."""
    def axis_weights(size, new_size):
        source = np.clip((np.arange(new_size) + 0.5) * size / new_size - 0.5, 0, size - 1)
        low = np.floor(source).astype(int)
        return low, np.minimum(low + 1, size - 1), source - low
    (y0, y1, wy), (x0, x1, wx) = axis_weights(images.shape[1], height), axis_weights(images.shape[2], width)
    rows = images[:, y0] * (1 - wy)[None, :, None, None] + images[:, y1] * wy[None, :, None, None]
    return rows[:, :, x0] * (1 - wx)[None, None, :, None] + rows[:, :, x1] * wx[None, None, :, None]


def reference_probabilities(probabilities_of, normalised, flip, scales):
    """The softmax Predictor should average: per scale, the window zoomed (and zero-padded to
    multiples of 32) through the network (with its mirror image when flipping), zoomed back."""
    height, width = normalised.shape[1:3]
    total = 0.0
    for scale in scales:
        zoomed_height, zoomed_width = int(round(height * scale)), int(round(width * scale))
        zoomed = bilinear_resize(normalised, zoomed_height, zoomed_width)
        padded = np.zeros((len(zoomed), predict.round_up(zoomed_height), predict.round_up(zoomed_width), 4),
                          np.float32)
        padded[:, :zoomed_height, :zoomed_width] = zoomed
        value = probabilities_of(padded)
        if flip:   # the average with the prediction of the left-right mirrored window
            value = (value + probabilities_of(padded[:, :, ::-1])[:, :, ::-1]) / 2.0
        total = total + bilinear_resize(value[:, :zoomed_height, :zoomed_width], height, width)
    return total / len(scales)


@pytest.mark.parametrize('tta', list(TEST_TIME_AUGMENTATIONS))
def test_predict_equals_the_network_on_the_normalised_brain_windows(network, image, tta):
    graph, session, predictor = network
    predictor = tiny_predictor(tta=tta)
    labels = predictor.predict(session, image)
    brain = np.any(image != 0, axis=-1)
    _, _, _, plan = predictor.plan(image)
    slices = np.flatnonzero(brain.any(axis=(1, 2)))
    assert [list(batch) for batch, _ in plan] == [list(slices[first:first + 4]) for first in range(0, len(slices), 4)]
    assert len({(window.height, window.width) for _, window in plan}) > 1   # windows per batch
    probability_ops = {}

    def probabilities_of(images):
        if images.shape[1:3] not in probability_ops:
            with graph.as_default():
                placeholder = tf.placeholder(tf.float32, [None] + list(images.shape[1:]))
                probability_ops[images.shape[1:3]] = placeholder, tf.nn.softmax(
                    dcr.build_network(placeholder, TINY, is_training=False))
        placeholder, probabilities = probability_ops[images.shape[1:3]]
        return session.run(probabilities, {placeholder: images})

    flip, scales = TEST_TIME_AUGMENTATIONS[tta]
    for batch, window in (plan[0], plan[len(plan) // 2], plan[-1]):
        cut = predict.cut_window(image[batch], window)
        normalised = reference_normalisation(cut, image[brain]).astype(np.float32)
        value = reference_probabilities(probabilities_of, normalised, flip, scales)
        frame = (len(batch),) + image.shape[1:3]
        expected = predict.paste_window(np.argmax(value, axis=-1).astype(np.uint8), frame, window)
        # Compare where the decision is not a numerical tie between two classes.
        top_two = np.sort(value, axis=-1)[..., -2:]
        clear = predict.paste_window((top_two[..., 1] - top_two[..., 0] > 1e-4).astype(np.uint8),
                                     frame, window).astype(bool)
        outside = np.ones(frame, bool)
        outside[:, max(window.start_y, 0):window.start_y + window.height,
                max(window.start_x, 0):window.start_x + window.width] = False
        clear |= outside
        assert clear.mean() > 0.95
        np.testing.assert_array_equal(labels[batch][clear], expected[clear])
        assert not labels[batch][outside].any()
    assert len(np.unique(labels[brain])) >= 3, 'degenerate random network: the check is void'


def test_the_test_time_variants_change_the_prediction(network, image):
    graph, session, _ = network
    labels = {tta: tiny_predictor(tta=tta).predict(session, image)
              for tta in TEST_TIME_AUGMENTATIONS}
    assert (labels['flip'] != labels['none']).any() and (labels['zooms'] != labels['flip']).any()
    for value in labels.values():
        assert not value[~np.any(image != 0, axis=(1, 2, 3))].any()


@pytest.mark.parametrize('tta', ['', 'rotations', 'Flip'])
def test_unknown_test_time_augmentations_are_refused(tta):
    with pytest.raises(InputError, match='test-time augmentation must be one of none, flip, zooms'):
        tiny_predictor(tta=tta)


def network_passes(graph, scope):
    """How many times the network was built under name scope `scope` (its logits layer's convolutions)."""
    return sum(1 for op in graph.get_operations()
               if op.name.startswith(scope + '/') and op.type == 'Conv2D' and '/logits/' in op.name)


def test_flip_predicts_the_mirror_image_in_the_same_batch_and_shares_the_variables(network, image):
    graph, session, _ = network
    variables = len(graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES))
    for tta, passes in (('flip', 1), ('zooms', 5)):
        with graph.as_default(), tf.name_scope(tta):
            tiny_predictor(tta=tta).window_ops(graph, 64, 64)
        assert network_passes(graph, tta) == passes   # one network per zoom; the mirror image is in its batch
    assert len(graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)) == variables  # shared


def test_probabilities_are_a_distribution_whose_argmax_is_the_prediction(network, image):
    graph, session, predictor = network
    probabilities = predictor.probabilities(session, image)
    assert probabilities.dtype == np.float32 and probabilities.shape == image.shape[:3] + (5,)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    brainless = ~np.any(image != 0, axis=(1, 2, 3))
    assert (probabilities[brainless, ..., 0] == 1.0).all()
    np.testing.assert_array_equal(probabilities.argmax(axis=-1), predictor.predict(session, image))


def test_frame_smaller_than_the_crop_is_padded(network):
    graph, session, predictor = network
    small = phantom_image((16, 48, 48), seed=1)
    labels = predictor.predict(session, small)
    assert labels.shape == (16, 48, 48) and labels.dtype == np.uint8
    assert not labels[~np.any(small != 0, axis=(1, 2, 3))].any()


def test_region_decoding_finds_at_least_the_argmax_tumour(network, image):
    graph, session, predictor = network
    argmax = predictor.predict(session, image)
    regions = tiny_predictor(method='regions').predict(session, image)
    assert regions.shape == argmax.shape and regions.dtype == np.uint8
    assert not np.any((argmax > 0) & (regions == 0))
    assert not regions[~np.any(image != 0, axis=(1, 2, 3))].any()


def test_predict_removes_the_components_it_is_told_to(network, image):
    graph, session, _ = network
    split = image.copy()
    split[10:13] = 0        # two parts of brain, hence at least two tumour components
    labels = tiny_predictor(method='regions').predict(session, split)
    components, count = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), bool))
    assert count >= 2, 'one tumour component: the check is void'
    second_largest = sorted(np.bincount(components.ravel())[1:])[-2]
    for min_size, min_fraction in ((0, 1.0), (second_largest + 1, 0.0)):
        cleaned = tiny_predictor(method='regions', min_component_size=min_size,
                            min_component_fraction=min_fraction).predict(session, split)
        expected = remove_small_components(labels, min_size, min_fraction)
        assert (expected != labels).any() and (expected > 0).any()
        np.testing.assert_array_equal(cleaned, expected)


def test_predict_standardises_the_volume_with_the_networks_normalisation(network, image):
    graph, session, _ = network
    # A scale learned from other volumes, with the FLAIR's upper range stretched: not an
    # affine map of this volume's intensities, which the z-score would undo.
    others = [phantom_image((24, 96, 96), seed) for seed in (1, 2)]
    others[0][..., 0] = np.where(others[0][..., 0] != 0, np.rint(others[0][..., 0] ** 1.5 / 10), 0)
    histogram = normalization.learn_histogram([normalization.landmarks(other) for other in others])
    standardized = normalization.standardize(image, histogram)
    histogram_predictor = tiny_predictor(normalization=histogram)
    np.testing.assert_array_equal(histogram_predictor.plan(image)[0], standardized)
    labels = histogram_predictor.predict(session, image)
    np.testing.assert_array_equal(labels, tiny_predictor().predict(session, standardized))
    assert not np.array_equal(labels, tiny_predictor().predict(session, image))


def saved_network(ckpt_dir, seed):
    """A random tiny network with a tamed last layer, saved as a Train.py run folder."""
    from model import checkpoints
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        tiny_predictor().build(tf.get_default_graph())
        step = tf.train.get_or_create_global_step()
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            kernel = [v for v in tf.global_variables() if v.op.name == 'dcr/logits/weights'][0]
            session.run(kernel.assign(kernel * 0.01))
            tf.train.Saver().save(session, str(ckpt_dir / checkpoints.CHECKPOINT_PREFIX), global_step=step)
    checkpoints.write_config(str(ckpt_dir), TINY, 64, {})
    return str(ckpt_dir)


def network_probabilities(ckpt_dir, images):
    """Softmax of one saved network on normalised images."""
    with tf.Graph().as_default(), tf.Session() as session:
        placeholder = tf.placeholder(tf.float32, [None] + list(images.shape[1:]))
        probabilities = tf.nn.softmax(dcr.build_network(placeholder, TINY, is_training=False))
        tf.train.Saver().restore(session, tf.train.latest_checkpoint(ckpt_dir))
        return session.run(probabilities, {placeholder: images})


def test_an_ensemble_averages_its_members_probabilities(tmp_path, image):
    members = [saved_network(tmp_path / 'a', seed=1), saved_network(tmp_path / 'b', seed=2)]
    with predict.restored_predictor(members, 'latest', decoding(), 4) as (session, predictor, paths):
        labels = predictor.predict(session, image)
        assert paths == [tf.train.latest_checkpoint(member) for member in members]
        assert {v.op.name.split('/')[0] for v in tf.global_variables()} == {'member0', 'member1'}
    brain = np.any(image != 0, axis=-1)
    plan = predictor.plan(image)[3]
    batch, window = plan[len(plan) // 2]
    normalised = reference_normalisation(predict.cut_window(image[batch], window), image[brain])
    each = [network_probabilities(member, normalised) for member in members]
    frame = (len(batch),) + image.shape[1:3]
    mean = (each[0] + each[1]) / 2.0
    expected = predict.paste_window(np.argmax(mean, axis=-1).astype(np.uint8), frame, window)
    top_two = np.sort(mean, axis=-1)[..., -2:]
    clear = predict.paste_window((top_two[..., 1] - top_two[..., 0] > 1e-5).astype(np.uint8), frame, window) > 0
    assert clear.mean() > 0.2
    np.testing.assert_array_equal(labels[batch][clear], expected[clear])
    singles = [predict.paste_window(np.argmax(p, axis=-1).astype(np.uint8), frame, window) for p in each]
    assert not np.array_equal(singles[0][clear], singles[1][clear])   # the members disagree somewhere


def test_one_checkpoint_path_cannot_serve_an_ensemble_but_a_keyword_can(tmp_path):
    from model import checkpoints
    members = [saved_network(tmp_path / 'a', seed=1), saved_network(tmp_path / 'b', seed=2)]
    with pytest.raises(InputError, match='cannot go with 2 checkpoint folders'):
        with predict.restored_predictor(members, tf.train.latest_checkpoint(members[0]), decoding(), 4):
            pass
    with predict.restored_predictor(members, checkpoints.BEST, decoding(), 4) as (_, _, paths):   # no best/: the latest
        assert paths == [tf.train.latest_checkpoint(member) for member in members]


def test_inference_uses_the_shipped_network_only_when_no_trained_run_is_there(tmp_path, monkeypatch):
    import Inference
    from model import paths
    monkeypatch.chdir(tmp_path)
    logged = []
    monkeypatch.setattr(paths, 'PRETRAINED_DIR', str(tmp_path / 'absent'))
    assert Inference.default_ckpt_dirs(logged.append) == [Inference.CKPT_DIR] and not logged
    shipped = saved_network(tmp_path / 'shipped', seed=3)
    monkeypatch.setattr(paths, 'PRETRAINED_DIR', shipped)
    assert Inference.default_ckpt_dirs(logged.append) == [shipped]
    assert len(logged) == 1 and shipped in logged[0] and Inference.CKPT_DIR in logged[0]
    (tmp_path / Inference.CKPT_DIR).mkdir(parents=True)     # an empty run folder is not a trained run
    assert Inference.default_ckpt_dirs(logged.append) == [shipped]
    saved_network(tmp_path / Inference.CKPT_DIR, seed=4)
    assert Inference.default_ckpt_dirs(logged.append) == [Inference.CKPT_DIR] and len(logged) == 2
