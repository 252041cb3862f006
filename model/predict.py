"""Whole-volume prediction: raw volume -> normalised slices -> network -> labelled volume.

Used by Inference.py and by validation during training, so both predict identically.
Brain slices are predicted in batches of consecutive slices, each batch cut to its brain
window: the bounding box of its brain voxels plus a margin, rounded up to multiples of 32 (the
network's stride) and centred on the brain. The network is fully convolutional, so the window
need not be the training crop; tight windows make inference fast, and no brain voxel is ever
cut off. Predictions are pasted back into
the full frame; slices without brain are background. Normalisation is the same TensorFlow
function the training pipeline uses.
"""
import collections
import contextlib

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from model import checkpoints
from model.dcr import NUM_CLASSES, OUTPUT_STRIDE, build_network
from model.errors import InputError
from model.losses import region_probabilities
from model.normalization import ZSCORE, brain_mask, intensity_stats, normalize, standardize
from model.postprocess import check_component_limits, remove_small_components

WINDOW_MARGIN = 8   # background voxels kept around the brain on each side

DECODINGS = ('argmax', 'regions')

Window = collections.namedtuple('Window', 'height width start_y start_x')


def region_labels(probabilities, tumour_threshold=0.5):
    """uint8 labels of [..., 5] class probabilities, decided region by region.

    The scored regions are nested (ET in TC in WT), so each is decided by its own summed
    probability: tumour where P(WT) / (P(WT) + P(background)) > tumour_threshold (at 0.5,
    exactly where P(WT) > P(background), however the probabilities are rounded); core, among
    tumour, where P(TC) > P(oedema); enhancing, within the core, where P(ET) > P(necrosis) +
    P(non-enhancing); the rest of the core is whichever of necrosis and non-enhancing is
    likelier. Plain argmax instead lets background win wherever the tumour probability is split
    across classes.
    """
    whole, core, enhancing = (region_probabilities(probabilities, region) for region in ('WT', 'TC', 'ET'))
    is_whole = (1.0 - tumour_threshold) * whole > tumour_threshold * probabilities[..., 0]
    is_core = tf.logical_and(is_whole, core > whole - core)
    is_enhancing = tf.logical_and(is_core, enhancing > core - enhancing)
    rest_of_core = tf.where_v2(probabilities[..., 3] > probabilities[..., 1], 3, 1)
    labels = tf.where_v2(is_enhancing, 4, tf.where_v2(is_core, rest_of_core, tf.where_v2(is_whole, 2, 0)))
    return tf.cast(labels, tf.uint8)


def check_decoding(decoding, tumour_threshold=0.5):
    """Raise InputError unless the decoding is known and the threshold is one it can use."""
    if decoding not in DECODINGS:
        raise InputError('decoding must be one of {}, not {!r}'.format(', '.join(DECODINGS), decoding))
    if not 0.0 < tumour_threshold < 1.0:
        raise InputError('tumour threshold must be between 0 and 1, not {}'.format(tumour_threshold))
    if tumour_threshold != 0.5 and decoding != 'regions':
        raise InputError('a tumour threshold other than 0.5 needs regions decoding')


TestTime = collections.namedtuple('TestTime', 'flip scales')
# Inference.py's --tta: which variants of each window are predicted and averaged. 'none' is one
# forward pass (the paper's); 'flip' adds the left-right mirror image, in the same batch (2 passes);
# 'zooms' also zooms each window by 0.8 to 1.2 (10 passes). docs/accuracy.md, "Defaults", measures them.
TEST_TIME_AUGMENTATIONS = collections.OrderedDict((
    ('none', TestTime(False, (1.0,))),
    ('flip', TestTime(True, (1.0,))),
    ('zooms', TestTime(True, (0.8, 0.9, 1.0, 1.1, 1.2))),
))


def check_tta(tta):
    """Raise InputError unless `tta` names one of TEST_TIME_AUGMENTATIONS."""
    if tta not in TEST_TIME_AUGMENTATIONS:
        raise InputError('test-time augmentation must be one of {}, not {!r}'.format(
            ', '.join(TEST_TIME_AUGMENTATIONS), tta))


def tumour_threshold_for(decoding, threshold, regions_default):
    """`threshold` when given (not None), else `regions_default` for regions decoding and 0.5,
    the threshold argmax implies, for argmax."""
    if threshold is not None:
        return threshold
    return regions_default if decoding == 'regions' else 0.5


def decode(probabilities, decoding, tumour_threshold=0.5):
    """uint8 labels of [..., 5] class probabilities by 'argmax' (the paper's) or 'regions'."""
    if decoding == 'regions':
        return region_labels(probabilities, tumour_threshold)
    return tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8)


def round_up(extent):
    """Smallest positive multiple of 32 holding `extent` voxels."""
    return max(-(-int(extent) // OUTPUT_STRIDE), 1) * OUTPUT_STRIDE


def _span(first, last, frame, margin):
    """(size, start) of a window holding voxels first..last plus margin, centred on them."""
    size = round_up(last - first + 1 + 2 * margin)
    start = int(first + last + 1) // 2 - size // 2
    if size <= frame:
        start = min(max(start, 0), frame - size)
    return size, start


def brain_window(mask, margin=WINDOW_MARGIN):
    """The (y, x) Window around the brain of a (z, y, x) mask.

    A start may be negative, or the window may pass the frame's far edge, when the brain plus
    margin is larger than the frame; cut_window pads with zeros there.
    """
    if not mask.any():
        return Window(round_up(1), round_up(1), 0, 0)
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    xs = np.flatnonzero(mask.any(axis=(0, 1)))
    height, start_y = _span(ys[0], ys[-1], mask.shape[1], margin)
    width, start_x = _span(xs[0], xs[-1], mask.shape[2], margin)
    return Window(height, width, start_y, start_x)


def cut_window(volume, window):
    """volume[:, window, ...], zero-padded where the window leaves the frame."""
    pad = [(0, 0)] * volume.ndim
    pad[1] = (max(-window.start_y, 0), max(window.start_y + window.height - volume.shape[1], 0))
    pad[2] = (max(-window.start_x, 0), max(window.start_x + window.width - volume.shape[2], 0))
    padded = np.pad(volume, pad)
    y, x = window.start_y + pad[1][0], window.start_x + pad[2][0]
    return padded[:, y:y + window.height, x:x + window.width]


def paste_window(cut, frame_shape, window):
    """Inverse of cut_window: place a (z, height, width) cut into zeros of frame_shape."""
    out = np.zeros(frame_shape, cut.dtype)
    y0, x0 = max(window.start_y, 0), max(window.start_x, 0)
    y1 = min(window.start_y + window.height, frame_shape[1])
    x1 = min(window.start_x + window.width, frame_shape[2])
    out[:, y0:y1, x0:x1] = cut[:, y0 - window.start_y:y1 - window.start_y,
                               x0 - window.start_x:x1 - window.start_x]
    return out


class Predictor:
    """Predicts labelled volumes with a DCR network, or an ensemble of them.

    Graph pieces are added to the session's graph on first use for each window shape; they
    share the network's variables (built with is_training=False, so batch norm uses its
    moving statistics). An ensemble averages its members' softmax probabilities before
    decoding; member k's variables live under the variable scope `member<k>` (see
    member_variables), a single network's at the top level, as in training. Volumes are
    standardised with `normalization`, the one the networks' training records were written with.
    `tta` names the test-time variants whose probabilities are averaged (TEST_TIME_AUGMENTATIONS):
    a window's mirror image goes through the network in the same batch as the window, and each
    zoom is one more batch whose probabilities are zoomed back. The labelled volume then loses its
    tumour components smaller than `min_component_size` voxels or than `min_component_fraction` of
    its largest (model.postprocess).
    """

    def __init__(self, network_config, batch_size=8, tta='none', margin=WINDOW_MARGIN, decoding='argmax',
                 tumour_threshold=0.5, normalization=ZSCORE, min_component_size=0, min_component_fraction=0.0):
        """network_config: a NetworkConfig, or a list of them for an ensemble."""
        check_tta(tta)
        check_decoding(decoding, tumour_threshold)
        check_component_limits(min_component_size, min_component_fraction)
        self.network_configs = list(network_config) if isinstance(network_config, (list, tuple)) else [network_config]
        if not self.network_configs:
            raise InputError('an ensemble needs at least one network')
        self.batch_size = batch_size
        self.tta = tta
        self.flip, self.scales = TEST_TIME_AUGMENTATIONS[tta]
        self.decoding = decoding
        self.tumour_threshold = tumour_threshold
        self.margin = margin
        self.normalization = normalization
        self.min_component_size = min_component_size
        self.min_component_fraction = min_component_fraction
        self._graphs = {}

    def build(self, graph):
        """Add the network to `graph` for a default window (creates its variables)."""
        self.window_ops(graph, 224, 224)

    def window_ops(self, graph, height, width):
        """(raw, mean, std placeholders, probabilities op, uint8 labels op) for windows of height x width.

        raw takes float32 [N, height, width, 4] intensities (after model.normalization.standardize);
        mean and std their volume's statistics from model.normalization.intensity_stats.
        """
        if (height, width) not in self._graphs:
            with graph.as_default(), tf.name_scope('predict_{}x{}'.format(height, width)):
                raw = tf.placeholder(tf.float32, [None, height, width, 4], name='raw')
                mean = tf.placeholder(tf.float32, [4], name='mean')
                std = tf.placeholder(tf.float32, [4], name='std')
                images = normalize(raw, mean, std)
                probabilities = tf.add_n([self._member_probabilities(images, index)
                                          for index in range(len(self.network_configs))]) / len(self.network_configs)
                labels = decode(probabilities, self.decoding, self.tumour_threshold)
            self._graphs[height, width] = (raw, mean, std, probabilities, labels)
        return self._graphs[height, width]

    def _scope(self, index):
        """Variable scope of ensemble member `index` ('' for a single network)."""
        return 'member{}'.format(index) if len(self.network_configs) > 1 else ''

    def _member_probabilities(self, images, index):
        """Softmax of member `index` on images, averaged over the zooms (and mirror images)."""
        config, scope = self.network_configs[index], self._scope(index)
        with tf.variable_scope(scope) if scope else contextlib.nullcontext():
            return tf.add_n([self._zoomed_probabilities(images, config, scale)
                             for scale in self.scales]) / len(self.scales)

    def _zoomed_probabilities(self, images, config, scale):
        """Softmax of the network on images zoomed by `scale` (bilinear, zero-padded to the
        network's stride), zoomed back to the images' size."""
        height, width = images.shape.as_list()[1:3]
        zoomed_height, zoomed_width = max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)
        if (zoomed_height, zoomed_width) == (height, width):
            return self._flipped_probabilities(images, config)
        zoomed = tf.compat.v2.image.resize(images, [zoomed_height, zoomed_width])
        zoomed = tf.image.pad_to_bounding_box(zoomed, 0, 0, round_up(zoomed_height), round_up(zoomed_width))
        probabilities = self._flipped_probabilities(zoomed, config)
        return tf.compat.v2.image.resize(probabilities[:, :zoomed_height, :zoomed_width], [height, width])

    def _flipped_probabilities(self, images, config):
        """Softmax of the network on images; when flipping, averaged with that of their mirror
        images, which go through the network in the same batch."""
        if not self.flip:
            return tf.nn.softmax(build_network(images, config, False))
        count = tf.shape(images)[0]
        both = tf.nn.softmax(build_network(tf.concat([images, tf.reverse(images, [2])], 0), config, False))
        return (both[:count] + tf.reverse(both[count:], [2])) / 2.0

    def member_variables(self, graph, index):
        """{name in member `index`'s own checkpoint: variable} of the built graph."""
        scope = self._scope(index)
        if not scope:
            return {v.op.name: v for v in graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)}
        prefix = scope + '/'
        return {v.op.name[len(prefix):]: v for v in graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
                if v.op.name.startswith(prefix)}

    def plan(self, image):
        """How a volume is predicted: batches of brain slices, each with its own window.

        Returns:
          (standardized, mean, std, batches): the volume after the networks' histogram
          standardisation (model.normalization.standardize), its intensity statistics, and
          a list of (slice indices, Window) pairs. Each batch of up to batch_size consecutive
          brain slices gets the window of its own brain extent, so the small slices near the
          top and bottom of the head cost little.
        """
        standardized = standardize(image, self.normalization)
        mask = brain_mask(standardized)
        mean, std = intensity_stats(standardized)
        slices = np.flatnonzero(mask.any(axis=(1, 2)))
        batches = [slices[first:first + self.batch_size] for first in range(0, len(slices), self.batch_size)]
        return standardized, mean, std, [(batch, brain_window(mask[batch], self.margin)) for batch in batches]

    def _run_windows(self, session, image, probabilities, progress):
        """Probabilities (z, y, x, 5) float32 or labels (z, y, x) uint8 of every batch of brain
        slices (window_ops), pasted into zeros of the image's frame."""
        image, mean, std, batches = self.plan(image)
        fetch = 3 if probabilities else 4
        result = np.zeros(image.shape[:3] + ((NUM_CLASSES,) if probabilities else ()),
                          np.float32 if probabilities else np.uint8)
        for batch, window in batches:
            ops = self.window_ops(session.graph, window.height, window.width)
            raw = cut_window(image[batch], window).astype(np.float32)
            cut = session.run(ops[fetch], {ops[0]: raw, ops[1]: mean, ops[2]: std})
            result[batch] = paste_window(cut, (len(batch),) + result.shape[1:], window)
            if progress:
                progress(len(batch))
        return result

    def probabilities(self, session, image, progress=None):
        """Class probabilities (z, y, x, 5) float32 of an int16 image (z, y, x, 4), before decoding;
        voxels outside every brain window are background (1, 0, 0, 0, 0)."""
        probabilities = self._run_windows(session, image, True, progress)
        probabilities[..., 0][~probabilities.any(axis=-1)] = 1.0
        return probabilities

    def predict(self, session, image, progress=None):
        """Label volume (z, y, x) uint8 for an int16 image (z, y, x, 4).

        Args:
          session: a Session holding the network's variables.
          image: the four modalities, as from model.brats.load_patient.
          progress: optional callable(number_of_slices_done) for progress bars.
        """
        labels = self._run_windows(session, image, False, progress)
        if self.min_component_size or self.min_component_fraction:
            labels = remove_small_components(labels, self.min_component_size, self.min_component_fraction)
        return labels


def session_config(gpu_memory_fraction=0.0, bfloat16=False):
    """A ConfigProto that lets a GPU build grow its memory (or caps it at a fraction).

    With `bfloat16`, grappler's oneDNN mixed-precision pass runs the CPU's convolutions and
    matrix products in bfloat16 (variables, batch-norm statistics and the optimiser stay
    float32). It pays on CPUs with native bfloat16 (AVX512-BF16, AMX); ops placed on a GPU
    are left as they are.
    """
    config = tf.ConfigProto(allow_soft_placement=True)
    if gpu_memory_fraction:
        config.gpu_options.per_process_gpu_memory_fraction = gpu_memory_fraction
    else:
        config.gpu_options.allow_growth = True
    if bfloat16:
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = \
            rewriter_config_pb2.RewriterConfig.ON
    return config


@contextlib.contextmanager
def restored_predictor(ckpt_dirs, checkpoint=checkpoints.LATEST, *, gpu_memory_fraction=0.0, bfloat16=False,
                       **predictor_options):
    """Yield (session, Predictor, checkpoint paths) for one training run folder or several.

    Each network is rebuilt from its CKPT/config.json and restored from the checkpoint that
    `checkpoint` names (see model.checkpoints.find_checkpoint): a keyword, or a path when one
    folder is given. Several folders make an ensemble that averages their probabilities; its
    members must share one intensity normalisation. `bfloat16` runs the convolutions in bfloat16
    (session_config). predictor_options (batch_size, tta, decoding, tumour_threshold,
    min_component_size, min_component_fraction) go to Predictor.
    """
    ckpt_dirs = [ckpt_dirs] if isinstance(ckpt_dirs, str) else list(ckpt_dirs)
    configs = [checkpoints.read_config(ckpt_dir)[0] for ckpt_dir in ckpt_dirs]
    paths = [checkpoints.find_checkpoint(ckpt_dir, checkpoint) for ckpt_dir in ckpt_dirs]
    if checkpoint not in checkpoints.KEYWORDS and len(ckpt_dirs) > 1:
        raise InputError('a checkpoint path selects one network; it cannot go with {} checkpoint folders'.format(
            len(ckpt_dirs)))
    normalizations = [checkpoints.read_normalization(ckpt_dir) for ckpt_dir in ckpt_dirs]
    if any(normalization != normalizations[0] for normalization in normalizations):
        raise InputError('{}: networks trained on records of different intensity normalisations cannot '
                         'form an ensemble'.format(', '.join(ckpt_dirs)))
    predictor = Predictor(configs, normalization=normalizations[0], **predictor_options)
    with tf.Graph().as_default() as graph, tf.Session(config=session_config(gpu_memory_fraction, bfloat16)) as session:
        predictor.build(graph)
        for index, path in enumerate(paths):
            checkpoints.restore(session, path, predictor.member_variables(graph, index))
        yield session, predictor, paths
