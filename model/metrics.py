"""Overlap and surface metrics of a predicted segmentation, per BRATS tumour region.

Every metric compares two boolean masks of the same shape. Volumes are indexed (z, y, x), as
`SimpleITK.GetArrayFromImage` returns them, and `spacing` is the voxel size in millimetres in
that same (z, y, x) order; `SimpleITK.Image.GetSpacing()` gives (x, y, z), so reverse it.

Edge cases follow the evaluation contract of Evaluate.py (see README, step 5):
- Dice is 1 when both masks are empty and 0 when only one is;
- PPV is NaN when the prediction is empty, sensitivity is NaN when the truth is empty;
- HD95 is NaN when either mask is empty.

HD95 is the 95th percentile of the pooled surface-to-surface distances in both directions:
the distance from each surface voxel of the prediction to the nearest surface voxel of the
truth, and from each surface voxel of the truth to the nearest of the prediction. The surface
of a mask is the mask minus its binary erosion by the 3-D cross (connectivity 1, the 6
face neighbours), with everything outside the volume counted as background.
"""
import collections

import numpy as np
from scipy import ndimage

from model.labels import REGION_NAMES, region_mask

METRIC_NAMES = ('dice', 'ppv', 'sensitivity', 'hd95')
NAN = float('nan')


def dice(prediction, truth):
    """Dice overlap 2|P & T| / (|P| + |T|).

    Args:
      prediction, truth: boolean masks of the same shape.
    Returns:
      A float in [0, 1]; 1 when both masks are empty, 0 when only one is.
    """
    prediction, truth = _as_masks(prediction, truth)
    total = np.count_nonzero(prediction) + np.count_nonzero(truth)
    if total == 0:
        return 1.0
    return 2.0 * _overlap(prediction, truth) / total


def ppv(prediction, truth):
    """Positive predictive value (precision) |P & T| / |P|.

    Args:
      prediction, truth: boolean masks of the same shape.
    Returns:
      A float in [0, 1]; NaN when the prediction is empty.
    """
    prediction, truth = _as_masks(prediction, truth)
    return _ratio(_overlap(prediction, truth), np.count_nonzero(prediction))


def sensitivity(prediction, truth):
    """Sensitivity (recall) |P & T| / |T|.

    Args:
      prediction, truth: boolean masks of the same shape.
    Returns:
      A float in [0, 1]; NaN when the truth is empty.
    """
    prediction, truth = _as_masks(prediction, truth)
    return _ratio(_overlap(prediction, truth), np.count_nonzero(truth))


def hd95(prediction, truth, spacing):
    """95th percentile of the symmetric surface-to-surface distances, in millimetres.

    For speed, both masks are first cropped to their joint bounding box plus a 1-voxel
    background margin (clipped at the volume edge). The result is unchanged: every voxel of
    either mask, hence every surface voxel, lies inside the box, and everything outside it is
    background, so erosion and nearest-surface distances are the same as in the full volume.

    Args:
      prediction, truth: 3-D boolean masks of the same shape, indexed (z, y, x).
      spacing: voxel size in mm as (z, y, x).
    Returns:
      The distance in mm as a float; NaN when either mask is empty.
    Raises:
      ValueError: the masks differ in shape, or spacing does not give one size per axis.
    """
    prediction, truth = _as_masks(prediction, truth)
    spacing = _as_spacing(spacing, prediction.ndim)
    if not prediction.any() or not truth.any():
        return NAN
    box = _bounding_box(prediction | truth, margin=1)
    surface_p, surface_t = _surface(prediction[box]), _surface(truth[box])
    distances = np.concatenate([_distances_to(surface_p, surface_t, spacing),
                                _distances_to(surface_t, surface_p, spacing)])
    return float(np.percentile(distances, 95))


def metric_columns():
    """Column names `<region>_<metric>`, regions WT, TC, ET outermost.

    Returns:
      A list of 12 names, from 'WT_dice' to 'ET_hd95'.
    """
    return ['{}_{}'.format(region, metric)
            for region in REGION_NAMES for metric in METRIC_NAMES]


def score_regions(prediction_labels, truth_labels, spacing=None):
    """Every metric on every scored region of two label volumes.

    Args:
      prediction_labels, truth_labels: integer label volumes of the same shape, (z, y, x).
        Any BRATS edition: regions are taken with `model.labels.region_mask`.
      spacing: voxel size in mm as (z, y, x), for HD95; None leaves HD95 out (the overlap
        metrics alone are fast).
    Returns:
      An OrderedDict from each name of `metric_columns()` (without the hd95 ones when spacing is
      None) to a float (possibly NaN).
    """
    metrics = {'dice': dice, 'ppv': ppv, 'sensitivity': sensitivity,
               'hd95': lambda p, t: hd95(p, t, spacing)}
    names = METRIC_NAMES if spacing is not None else [name for name in METRIC_NAMES if name != 'hd95']
    row = collections.OrderedDict()
    for region in REGION_NAMES:
        prediction = region_mask(prediction_labels, region)
        truth = region_mask(truth_labels, region)
        for name in names:
            row['{}_{}'.format(region, name)] = metrics[name](prediction, truth)
    return row


def mean_row(rows):
    """Per-column mean of score rows, skipping NaN.

    Args:
      rows: iterable of mappings holding every name of `metric_columns()` (other keys,
        such as 'patient', are ignored).
    Returns:
      An OrderedDict over `metric_columns()`; a column is NaN when all its values are NaN
      or there are no rows.
    """
    rows = list(rows)
    mean = collections.OrderedDict()
    for column in metric_columns():
        values = np.array([row[column] for row in rows], dtype=float)
        values = values[~np.isnan(values)]
        mean[column] = float(values.mean()) if values.size else NAN
    return mean


def _as_masks(prediction, truth):
    """Both arguments as boolean arrays; raise ValueError if their shapes differ."""
    prediction = np.asarray(prediction, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if prediction.shape != truth.shape:
        raise ValueError('prediction shape {} differs from truth shape {}'.format(
            prediction.shape, truth.shape))
    return prediction, truth


def _as_spacing(spacing, ndim):
    """`spacing` as a tuple of `ndim` floats; raise ValueError otherwise."""
    spacing = tuple(float(size) for size in spacing)
    if len(spacing) != ndim:
        raise ValueError('spacing {} does not give one size per axis of a {}-D mask'.format(
            spacing, ndim))
    return spacing


def _overlap(prediction, truth):
    """Number of voxels in both masks."""
    return np.count_nonzero(prediction & truth)


def _ratio(numerator, denominator):
    """numerator / denominator as a float, NaN when the denominator is 0."""
    return numerator / float(denominator) if denominator else NAN


def _bounding_box(mask, margin):
    """Slices of the smallest box holding `mask`, grown by `margin` voxels, clipped to it."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        box.append(slice(max(present[0] - margin, 0), present[-1] + margin + 1))
    return tuple(box)


def _surface(mask):
    """Voxels of `mask` with at least one face neighbour outside it (or outside the array)."""
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross)


def _distances_to(source, target, spacing):
    """Distance in mm from each voxel of `source` to the nearest voxel of `target`."""
    return ndimage.distance_transform_edt(~target, sampling=spacing)[source]
