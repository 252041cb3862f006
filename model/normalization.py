"""Intensity normalisation: z-score per modality over brain voxels, clipped at +-5 sd.

The statistics are computed once per volume with numpy (`intensity_stats`) and stored with
every TFRecord example; the normalisation itself (`normalize`) is one TensorFlow function used
by both the training input pipeline and the inference graph, so the two cannot drift apart.
Brain voxels are those where any modality is non-zero (BRATS volumes are skull-stripped).
"""
import numpy as np
import tensorflow.compat.v1 as tf

CLIP_SD = 5.0


def brain_mask(image):
    """Boolean (..., ) mask of voxels where any of the channels (last axis) is non-zero."""
    mask = image[..., 0] != 0
    for channel in range(1, image.shape[-1]):
        mask |= image[..., channel] != 0
    return mask


def intensity_stats(image):
    """Mean and standard deviation of each channel over brain voxels.

    Args:
      image: array (..., channels) of raw intensities.
    Returns:
      (mean, std), two float32 arrays of length channels; std is at least 1e-6.
    """
    channels = image.reshape(-1, image.shape[-1])
    count = max(int(np.count_nonzero(brain_mask(channels))), 1)
    # Voxels outside the brain are zero in every channel, so sums over all voxels are
    # sums over the brain; this avoids copying the brain voxels out.
    mean = np.einsum('vc->c', channels, dtype=np.float64) / count
    mean_square = np.einsum('vc,vc->c', channels, channels, dtype=np.float64) / count
    std = np.sqrt(np.maximum(mean_square - mean ** 2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def normalize(raw, mean, std):
    """z-score `raw` (float32 [..., H, W, C]) with per-channel mean/std, clip, zero outside brain.

    mean and std broadcast against the channel axis ([C] or [N, 1, 1, C]).
    """
    brain = tf.cast(tf.reduce_any(tf.not_equal(raw, 0.0), axis=-1, keepdims=True), tf.float32)
    scored = tf.clip_by_value((raw - mean) / std, -CLIP_SD, CLIP_SD)
    return scored * brain
