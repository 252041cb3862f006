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
import functools

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from model import checkpoints, export
from model.dcr import NUM_CLASSES, OUTPUT_STRIDE, build_network
from model.errors import InputError
from model.decoding import TEST_TIME_AUGMENTATIONS, decode
from model.normalization import ZSCORE, brain_mask, intensity_stats, normalize, standardize
from model.postprocess import remove_small_components

WINDOW_MARGIN = 8   # background voxels kept around the brain on each side

Window = collections.namedtuple('Window', 'height width start_y start_x')


def _identity(tensor):
    """`tensor` itself (the undo of a variant that is not zoomed)."""
    return tensor


def _unzoomed(probabilities, size, frame):
    """Probabilities of zoomed, padded images: the zoomed `size` cut out and resized to `frame`."""
    return tf.compat.v2.image.resize(probabilities[:, :size[0], :size[1]], frame)


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
    The decoding's `tta` names the test-time variants whose probabilities are averaged: a window's
    mirror image goes through the network in the same batch as the window, and each zoom is one
    more batch whose probabilities are zoomed back. The labelled volume then loses the tumour
    components the decoding's limits name (model.postprocess).
    """

    def __init__(self, network_config, decoding, batch_size, normalization=ZSCORE, margin=WINDOW_MARGIN):
        """network_config: a NetworkConfig, or a list of them for an ensemble; decoding: a
        model.decoding.Decoding; batch_size: brain slices per forward pass."""
        self.network_configs = list(network_config) if isinstance(network_config, (list, tuple)) else [network_config]
        if not self.network_configs:
            raise InputError('an ensemble needs at least one network')
        self.decoding = decoding
        self.batch_size = batch_size
        self.flip, self.scales = TEST_TIME_AUGMENTATIONS[decoding.tta]
        self.margin = margin
        self.normalization = normalization
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
                raw, mean, std, images = self._window_inputs(height, width)
                variants = self._variants(images)
                probabilities = tf.add_n([self._member_probabilities(variants, index)
                                          for index in range(len(self.network_configs))]) / len(self.network_configs)
                labels = decode(probabilities, self.decoding)
            self._graphs[height, width] = (raw, mean, std, probabilities, labels)
        return self._graphs[height, width]

    @staticmethod
    def _window_inputs(height, width):
        """(raw, mean, std placeholders, normalised images) of a window of height x width."""
        raw = tf.placeholder(tf.float32, [None, height, width, 4], name='raw')
        mean = tf.placeholder(tf.float32, [4], name='mean')
        std = tf.placeholder(tf.float32, [4], name='std')
        return raw, mean, std, normalize(raw, mean, std)

    def _scope(self, index):
        """Variable scope of ensemble member `index` ('' for a single network)."""
        return 'member{}'.format(index) if len(self.network_configs) > 1 else ''

    def _member_probabilities(self, variants, index):
        """Softmax of member `index`, averaged over the test-time variants."""
        config, scope = self.network_configs[index], self._scope(index)
        with tf.variable_scope(scope) if scope else contextlib.nullcontext():
            return self._combined([undo(tf.nn.softmax(build_network(batch, config, False)))
                                   for batch, undo in variants])

    @staticmethod
    def _combined(probabilities):
        """The mean of the variants' probabilities, each already back in the window's frame."""
        return tf.add_n(probabilities) / len(probabilities)

    def _variants(self, images):
        """[(network input, undo)] of the test-time variants of `images`, one per zoom: the images
        zoomed (bilinear, zero-padded to the network's stride), followed in the same batch by their
        mirror images when flipping; undo maps that batch's softmax back to the images' frame,
        averaging each image with its mirror."""
        height, width = images.shape.as_list()[1:3]
        variants = []
        for scale in self.scales:
            zoomed_height, zoomed_width = max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)
            batch, unzoom = images, _identity
            if (zoomed_height, zoomed_width) != (height, width):
                batch = tf.image.pad_to_bounding_box(tf.compat.v2.image.resize(images, [zoomed_height, zoomed_width]),
                                                     0, 0, round_up(zoomed_height), round_up(zoomed_width))
                unzoom = functools.partial(_unzoomed, size=(zoomed_height, zoomed_width), frame=(height, width))
            if self.flip:
                batch = tf.concat([batch, tf.reverse(batch, [2])], 0)
            variants.append((batch, functools.partial(self._undo, unzoom=unzoom)))
        return variants

    def _undo(self, probabilities, unzoom):
        """A variant batch's softmax back in the window's frame: mirror halves averaged, unzoomed."""
        if self.flip:
            count = tf.shape(probabilities)[0] // 2
            probabilities = (probabilities[:count] + tf.reverse(probabilities[count:], [2])) / 2.0
        return unzoom(probabilities)

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
        result = np.zeros(image.shape[:3] + ((NUM_CLASSES,) if probabilities else ()),
                          np.float32 if probabilities else np.uint8)
        for batch, window in batches:
            raw = cut_window(image[batch], window).astype(np.float32)
            cut = self._run_window(session, raw, mean, std, probabilities)
            result[batch] = paste_window(cut, (len(batch),) + result.shape[1:], window)
            if progress:
                progress(len(batch))
        return result

    def _run_window(self, session, raw, mean, std, probabilities):
        """Probabilities or labels of one batch of windows, raw [N, height, width, 4]."""
        ops = self.window_ops(session.graph, *raw.shape[1:3])
        return session.run(ops[3 if probabilities else 4], {ops[0]: raw, ops[1]: mean, ops[2]: std})

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
        if self.decoding.min_component_size or self.decoding.min_component_fraction:
            labels = remove_small_components(labels, self.decoding.min_component_size,
                                             self.decoding.min_component_fraction)
        return labels


class ExportPredictor(Predictor):
    """A Predictor whose network is an export of Export.py (model.export) instead of variables of
    its own: per window shape, one graph normalises the windows and makes their test-time variants,
    each variant's batch goes through the export's signature, and a second graph undoes and averages
    the variants and decodes them. Preprocessing, windows, variants and decoding are Predictor's, so
    an export predicts what its checkpoint does."""

    def __init__(self, network_config, export_input, export_probabilities, decoding, batch_size, normalization):
        super().__init__(network_config, decoding, batch_size, normalization)
        self.export_input, self.export_probabilities = export_input, export_probabilities
        self._stages = {}

    def build(self, graph):
        """Nothing to add: the network is the export already loaded into the session's graph."""

    def _stages_of(self, graph, height, width):
        """(raw, mean, std, variant batches, variant probability placeholders, probabilities, labels)."""
        if (height, width) not in self._stages:
            with graph.as_default(), tf.name_scope('export_predict_{}x{}'.format(height, width)):
                raw, mean, std, images = self._window_inputs(height, width)
                variants = self._variants(images)
                outputs = [tf.placeholder(tf.float32, batch.shape.as_list()[:3] + [NUM_CLASSES]) for batch, _ in variants]
                probabilities = self._combined([undo(output) for (_, undo), output in zip(variants, outputs)])
                labels = decode(probabilities, self.decoding)
            self._stages[height, width] = (raw, mean, std, [batch for batch, _ in variants], outputs,
                                           probabilities, labels)
        return self._stages[height, width]

    def _run_window(self, session, raw, mean, std, probabilities):
        raw_input, mean_input, std_input, batches, outputs, probabilities_op, labels_op = self._stages_of(
            session.graph, *raw.shape[1:3])
        inputs = session.run(batches, {raw_input: raw, mean_input: mean, std_input: std})
        feed = {output: session.run(self.export_probabilities, {self.export_input: batch})
                for output, batch in zip(outputs, inputs)}
        return session.run(probabilities_op if probabilities else labels_op, feed)


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
def restored_predictor(ckpt_dirs, checkpoint, decoding, batch_size, *, gpu_memory_fraction=0.0, bfloat16=False):
    """Yield (session, Predictor, checkpoint paths) for one training run folder or several.

    Each network is rebuilt from its CKPT/config.json and restored from the checkpoint that
    `checkpoint` names (see model.checkpoints.find_checkpoint): a keyword, or a path when one
    folder is given. Several folders make an ensemble that averages their probabilities; its
    members must share one intensity normalisation. `bfloat16` runs the convolutions in bfloat16
    (session_config). `decoding` (a model.decoding.Decoding) and `batch_size` go to Predictor.
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
    predictor = Predictor(configs, decoding, batch_size, normalizations[0])
    with tf.Graph().as_default() as graph, tf.Session(config=session_config(gpu_memory_fraction, bfloat16)) as session:
        predictor.build(graph)
        for index, path in enumerate(paths):
            checkpoints.restore(session, path, predictor.member_variables(graph, index))
        yield session, predictor, paths


@contextlib.contextmanager
def exported_predictor(export_dir, decoding, batch_size, *, gpu_memory_fraction=0.0, bfloat16=False):
    """Yield (session, ExportPredictor, [the version folder]) for an export of Export.py: a folder
    with saved_model.pb, or one of version folders (the highest is taken). `decoding` and
    `batch_size` go to Predictor, as for restored_predictor."""
    version_dir = export.resolve(export_dir)
    normalization, network_config = export.read_preprocessing(version_dir)
    with tf.Graph().as_default(), tf.Session(config=session_config(gpu_memory_fraction, bfloat16)) as session:
        export_input, export_probabilities = export.load(session, version_dir)
        yield session, ExportPredictor(network_config, export_input, export_probabilities, decoding, batch_size,
                                       normalization), [version_dir]
