"""Whole-volume prediction: raw volume -> normalised slices -> network -> labelled volume.

Used by Inference.py and by validation during training, so both predict identically.
Each axial slice is cut to a square window centred on the brain's bounding box (the training
crop size, or the next multiple of 32 that holds the whole brain), predicted, and pasted back
into the full frame; slices without brain are background. Normalisation is the same
TensorFlow function the training pipeline uses.
"""
import contextlib

import numpy as np
import tensorflow.compat.v1 as tf

from model import checkpoints
from model.dcr import OUTPUT_STRIDE, build_network
from model.normalization import brain_mask, intensity_stats, normalize


def window_size(extent, minimum):
    """Smallest multiple of 32 that is at least `minimum` and holds `extent` voxels."""
    size = max(int(extent), int(minimum))
    return -(-size // OUTPUT_STRIDE) * OUTPUT_STRIDE


def brain_window(mask, minimum):
    """Square (y, x) window around the brain of a (z, y, x) mask.

    Returns:
      (size, start_y, start_x); a start may be negative or the window may pass the frame's
      far edge, where the frame is then padded with zeros.
    """
    if not mask.any():
        return window_size(0, minimum), 0, 0
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    xs = np.flatnonzero(mask.any(axis=(0, 1)))
    size = window_size(max(ys[-1] - ys[0] + 1, xs[-1] - xs[0] + 1), minimum)
    starts = []
    for first, last, frame in ((ys[0], ys[-1], mask.shape[1]), (xs[0], xs[-1], mask.shape[2])):
        start = (first + last + 1) // 2 - size // 2
        starts.append(min(max(start, 0), frame - size) if size <= frame else (frame - size) // 2)
    return size, starts[0], starts[1]


def cut_window(volume, start_y, start_x, size):
    """volume[:, y:y+size, x:x+size, ...], zero-padded where the window leaves the frame."""
    pad = [(0, 0)] * volume.ndim
    pad[1] = (max(-start_y, 0), max(start_y + size - volume.shape[1], 0))
    pad[2] = (max(-start_x, 0), max(start_x + size - volume.shape[2], 0))
    padded = np.pad(volume, pad)
    y, x = start_y + pad[1][0], start_x + pad[2][0]
    return padded[:, y:y + size, x:x + size]


def paste_window(window, frame_shape, start_y, start_x):
    """Inverse of cut_window: place (z, size, size) into zeros of frame_shape (z, y, x)."""
    size = window.shape[1]
    out = np.zeros(frame_shape, window.dtype)
    y0, x0 = max(start_y, 0), max(start_x, 0)
    y1, x1 = min(start_y + size, frame_shape[1]), min(start_x + size, frame_shape[2])
    out[:, y0:y1, x0:x1] = window[:, y0 - start_y:y1 - start_y, x0 - start_x:x1 - start_x]
    return out


class Predictor:
    """Predicts labelled volumes with a DCR network.

    Graph pieces are added to the session's graph on first use for each window size; they
    share the network's variables (built with is_training=False, so batch norm uses its
    moving statistics).
    """

    def __init__(self, network_config, crop_size=224, batch_size=8, flip=False):
        self.network_config = network_config
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.flip = flip
        self._graphs = {}

    def build(self, graph):
        """Add the network for the default window size to `graph` (creates its variables)."""
        self._graph_for(graph, window_size(0, self.crop_size))

    def _graph_for(self, graph, size):
        if size not in self._graphs:
            with graph.as_default(), tf.name_scope('predict_{}'.format(size)):
                raw = tf.placeholder(tf.float32, [None, size, size, 4], name='raw')
                mean = tf.placeholder(tf.float32, [4], name='mean')
                std = tf.placeholder(tf.float32, [4], name='std')
                images = normalize(raw, mean, std)
                probabilities = tf.nn.softmax(build_network(images, self.network_config, False))
                if self.flip:
                    flipped = build_network(tf.reverse(images, [2]), self.network_config, False)
                    probabilities = (probabilities + tf.reverse(tf.nn.softmax(flipped), [2])) / 2.0
                labels = tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8)
            self._graphs[size] = (raw, mean, std, labels)
        return self._graphs[size]

    def predict(self, session, image, progress=None):
        """Label volume (z, y, x) uint8 for an int16 image (z, y, x, 4).

        Args:
          session: a Session holding the network's variables.
          image: the four modalities, as from model.brats.load_patient.
          progress: optional callable(number_of_slices_done) for progress bars.
        """
        mask = brain_mask(image)
        mean, std = intensity_stats(image)
        size, start_y, start_x = brain_window(mask, self.crop_size)
        raw_input, mean_input, std_input, labels = self._graph_for(session.graph, size)
        slices = np.flatnonzero(mask.any(axis=(1, 2)))
        window = np.zeros((image.shape[0], size, size), np.uint8)
        for first in range(0, len(slices), self.batch_size):
            batch = slices[first:first + self.batch_size]
            raw = cut_window(image[batch], start_y, start_x, size).astype(np.float32)
            window[batch] = session.run(labels, {raw_input: raw, mean_input: mean, std_input: std})
            if progress:
                progress(len(batch))
        return paste_window(window, image.shape[:3], start_y, start_x)


def session_config(gpu_memory_fraction=0.0):
    """A ConfigProto that lets a GPU build grow its memory (or caps it at a fraction)."""
    config = tf.ConfigProto(allow_soft_placement=True)
    if gpu_memory_fraction:
        config.gpu_options.per_process_gpu_memory_fraction = gpu_memory_fraction
    else:
        config.gpu_options.allow_growth = True
    return config


@contextlib.contextmanager
def restored_predictor(ckpt_dir, checkpoint=None, batch_size=8, flip=False, gpu_memory_fraction=0.0):
    """Yield (session, Predictor, checkpoint path) for a training run folder.

    The network is rebuilt from CKPT/config.json and restored from `checkpoint`, or from
    CKPT/best/ or CKPT's latest checkpoint (see model.checkpoints.find_checkpoint).
    """
    network_config, crop_size, _ = checkpoints.read_config(ckpt_dir)
    path = checkpoints.find_checkpoint(ckpt_dir, checkpoint)
    predictor = Predictor(network_config, crop_size=crop_size, batch_size=batch_size, flip=flip)
    with tf.Graph().as_default() as graph, tf.Session(config=session_config(gpu_memory_fraction)) as session:
        predictor.build(graph)
        checkpoints.restore(session, path, tf.global_variables())
        yield session, predictor, path
