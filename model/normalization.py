"""Intensity normalisation: z-score per modality over brain voxels, clipped at +-5 sd,
optionally after histogram standardisation.

The statistics are computed once per volume with numpy (`intensity_stats`) and stored with
every TFRecord example; the normalisation itself (`normalize`) is one TensorFlow function used
by both the training input pipeline and the inference graph, so the two cannot drift apart.
Brain voxels are those where any modality is non-zero (BRATS volumes are skull-stripped).

Histogram standardisation (Nyul and Udupa, 1999) first maps each volume's intensities, per
modality and piecewise linearly, so that its brain percentiles HISTOGRAM_PERCENTILES land on a
standard scale learned from the training volumes (`learn_histogram`). A modality's percentiles
are taken over its own foreground, the brain voxels where it is non-zero: some scans lack a
modality over part of the brain (a third of the brain in one BraTS 2018 FLAIR). Unlike the z-score it
is not linear in the patient's intensities, so it can change how far a tissue stands out.
A normalisation is a JSON-ready dict: ZSCORE, or what `learn_histogram` returns. The records'
sidecar holds the one the records were written with, and Train.py copies it into the
checkpoint's config.json, from which Inference.py applies it (`standardize`).
"""
import numpy as np
import tensorflow.compat.v1 as tf

from model.errors import InputError

CLIP_SD = 5.0
METHODS = ('zscore', 'histogram')
ZSCORE = {'method': 'zscore'}
HISTOGRAM_PERCENTILES = (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)
STANDARD_RANGE = (100.0, 10000.0)   # where the first and last percentiles go while learning the scale
INT16_MAX = np.iinfo(np.int16).max


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


def landmarks(image):
    """Percentiles HISTOGRAM_PERCENTILES of each channel over its non-zero voxels: float64
    [channels, percentiles], strictly increasing along the percentiles (tied ones are moved
    apart by a thousandth of the channel's percentile range, at least 1e-3)."""
    marks = []
    for channel in range(image.shape[-1]):
        values = image[..., channel]
        foreground = values[values != 0].astype(np.float64)
        values = np.percentile(foreground, HISTOGRAM_PERCENTILES) if foreground.size else \
            np.zeros(len(HISTOGRAM_PERCENTILES))
        least_step = max(1e-3 * (values[-1] - values[0]), 1e-3)
        marks.append(values[0] + np.concatenate([[0.0], np.cumsum(np.maximum(np.diff(values), least_step))]))
    return np.array(marks)


def learn_histogram(landmark_sets):
    """The histogram normalisation learned from training volumes' `landmarks`: each volume's
    landmarks mapped linearly so the first and last fall on STANDARD_RANGE, then averaged."""
    low, high = STANDARD_RANGE
    scaled = [low + (marks - marks[:, :1]) * (high - low) / (marks[:, -1:] - marks[:, :1])
              for marks in landmark_sets]
    return {'method': 'histogram', 'percentiles': list(HISTOGRAM_PERCENTILES),
            'standard': np.mean(scaled, axis=0).round(3).tolist()}


def check_normalization(normalization, source):
    """Return `normalization` if it is ZSCORE or a histogram normalisation for 4 channels over
    HISTOGRAM_PERCENTILES; otherwise raise InputError naming `source`."""
    try:
        if normalization == ZSCORE:
            return normalization
        standard = np.asarray(normalization['standard'], np.float64)
        valid = (normalization['method'] == 'histogram'
                 and tuple(normalization['percentiles']) == HISTOGRAM_PERCENTILES
                 and standard.shape == (4, len(HISTOGRAM_PERCENTILES)) and (np.diff(standard, axis=1) > 0).all())
    except (KeyError, TypeError, ValueError):
        valid = False
    if not valid:
        raise InputError('{}: invalid intensity normalisation {}'.format(source, normalization))
    return normalization


def stored_normalization(document, source):
    """The checked normalisation under a JSON document's 'normalization' key (a records sidecar
    or a config.json); z-score for documents written before the key existed."""
    return check_normalization(document.get('normalization', ZSCORE), source)


def _piecewise_linear(values, source, target):
    """Map values through the increasing points source -> target; beyond the ends, along the
    line through the first and last points (steep end segments of tied landmarks stay inside)."""
    mapped = np.interp(values, source, target)
    outside = (values < source[0]) | (values > source[-1])
    slope = (target[-1] - target[0]) / (source[-1] - source[0])
    mapped[outside] = target[0] + (values[outside] - source[0]) * slope
    return mapped


def standardize(image, normalization):
    """The int16 volume (..., channels) the z-score is taken of: `image` itself for ZSCORE;
    for a histogram normalisation, each channel's non-zero voxels mapped from the volume's own
    landmarks onto the standard scale (rounded, kept within 1..32767). Zeros stay zero, so the
    brain mask is unchanged."""
    if normalization['method'] == 'zscore':
        return image
    own = landmarks(image)
    standardized = np.zeros(image.shape, np.int16)
    for channel, target in enumerate(np.asarray(normalization['standard'], np.float64)):
        values = image[..., channel]
        foreground = values != 0
        mapped = _piecewise_linear(values[foreground].astype(np.float64), own[channel], target)
        standardized[..., channel][foreground] = np.clip(np.rint(mapped), 1, INT16_MAX).astype(np.int16)
    return standardized
