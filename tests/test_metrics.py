"""Tests of model.metrics: edge cases, HD95 geometry, per-region scoring and the mean row."""
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from model import metrics

ISOTROPIC = (1.0, 1.0, 1.0)


def _sphere(shape, centre, radius):
    """Boolean ball of `radius` voxels around `centre` in an array of `shape`."""
    grid = np.indices(shape, dtype=float)
    squared = sum((axis - c) ** 2 for axis, c in zip(grid, centre))
    return squared <= radius ** 2


def _blob(rng, shape, threshold):
    """A random smooth blob: thresholded Gaussian-filtered noise."""
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma=1.5) > threshold


def _brute_force_hd95(a, b, spacing):
    """HD95 from explicit surface coordinates and all pairwise distances (no EDT, no erosion)."""
    def surface_points(mask):
        padded = np.pad(mask, 1)
        inner = padded[1:-1, 1:-1, 1:-1]
        interior = inner.copy()
        for axis in range(3):
            for step in (-1, 1):
                interior &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(inner & ~interior) * np.asarray(spacing)

    pairwise = cdist(surface_points(a), surface_points(b))
    return np.percentile(np.concatenate([pairwise.min(axis=1), pairwise.min(axis=0)]), 95)


def _uncropped_hd95(a, b, spacing):
    """HD95 by the same definition, computed on the full volume without cropping."""
    cross = ndimage.generate_binary_structure(3, 1)
    surface_a = a & ~ndimage.binary_erosion(a, structure=cross)
    surface_b = b & ~ndimage.binary_erosion(b, structure=cross)
    a_to_b = ndimage.distance_transform_edt(~surface_b, sampling=spacing)[surface_a]
    b_to_a = ndimage.distance_transform_edt(~surface_a, sampling=spacing)[surface_b]
    return np.percentile(np.concatenate([a_to_b, b_to_a]), 95)


def test_identical_masks_score_perfectly():
    mask = _sphere((20, 20, 20), (10, 10, 10), 5)
    assert metrics.dice(mask, mask) == 1.0
    assert metrics.ppv(mask, mask) == 1.0
    assert metrics.sensitivity(mask, mask) == 1.0
    assert metrics.hd95(mask, mask, ISOTROPIC) == 0.0


def test_disjoint_masks_have_zero_overlap():
    a = np.zeros((6, 6, 6), bool)
    b = np.zeros((6, 6, 6), bool)
    a[:2], b[4:] = True, True
    assert metrics.dice(a, b) == 0.0
    assert metrics.ppv(a, b) == 0.0
    assert metrics.sensitivity(a, b) == 0.0


def test_both_empty():
    empty = np.zeros((5, 5, 5), bool)
    assert metrics.dice(empty, empty) == 1.0
    assert math.isnan(metrics.ppv(empty, empty))
    assert math.isnan(metrics.sensitivity(empty, empty))
    assert math.isnan(metrics.hd95(empty, empty, ISOTROPIC))


def test_empty_prediction_of_a_present_tumour():
    empty = np.zeros((5, 5, 5), bool)
    truth = empty.copy()
    truth[1:3, 1:3, 1:3] = True
    assert metrics.dice(empty, truth) == 0.0
    assert math.isnan(metrics.ppv(empty, truth))
    assert metrics.sensitivity(empty, truth) == 0.0
    assert math.isnan(metrics.hd95(empty, truth, ISOTROPIC))
    assert math.isnan(metrics.hd95(truth, empty, ISOTROPIC))


def test_partial_overlap_counts():
    prediction = np.zeros((1, 1, 10), bool)
    truth = np.zeros((1, 1, 10), bool)
    prediction[0, 0, 0:6] = True
    truth[0, 0, 4:8] = True
    assert metrics.dice(prediction, truth) == pytest.approx(2 * 2 / 10)
    assert metrics.ppv(prediction, truth) == pytest.approx(2 / 6)
    assert metrics.sensitivity(prediction, truth) == pytest.approx(2 / 4)


def test_hd95_of_concentric_spheres_is_the_radius_difference():
    shape, centre = (64, 64, 64), (32, 32, 32)
    inner, outer = _sphere(shape, centre, 8), _sphere(shape, centre, 20)
    assert abs(metrics.hd95(inner, outer, ISOTROPIC) - 12.0) <= 1.0


def test_hd95_honours_anisotropic_spacing_in_z_y_x_order():
    a = np.zeros((10, 6, 6), bool)
    b = np.zeros((10, 6, 6), bool)
    a[2], b[5] = True, True                       # two planes, 3 slices apart along z
    assert metrics.hd95(a, b, (3.0, 1.0, 1.0)) == pytest.approx(9.0)
    assert metrics.hd95(a, b, (3.0, 0.5, 7.0)) == pytest.approx(9.0)
    assert metrics.hd95(a, b, (1.0, 1.0, 3.0)) == pytest.approx(3.0)


def test_hd95_matches_brute_force_on_random_blobs():
    rng = np.random.default_rng(0)
    spacing = (2.5, 1.0, 0.7)
    for _ in range(5):
        a = _blob(rng, (14, 16, 18), 0.1)
        b = _blob(rng, (14, 16, 18), 0.1)
        assert a.any() and b.any()
        expected = _brute_force_hd95(a, b, spacing)
        assert metrics.hd95(a, b, spacing) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize('offset', [(0, 0, 0), (5, 9, 13), (26, 33, 29)])
def test_hd95_cropping_does_not_change_the_result(offset):
    rng = np.random.default_rng(sum(offset))
    a = np.zeros((40, 48, 44), bool)
    b = np.zeros((40, 48, 44), bool)
    z, y, x = offset                              # (26, 33, 29) makes the blobs touch the far edges
    a[z:z + 14, y:y + 15, x:x + 15] = _blob(rng, (14, 15, 15), 0.0)
    b[z:z + 14, y:y + 15, x:x + 15] = _blob(rng, (14, 15, 15), 0.0)
    spacing = (3.0, 0.9, 1.1)
    expected = _uncropped_hd95(a, b, spacing)
    assert metrics.hd95(a, b, spacing) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_mismatched_shapes_and_spacing_are_rejected():
    with pytest.raises(ValueError):
        metrics.dice(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool))
    with pytest.raises(ValueError):
        metrics.hd95(np.ones((2, 2, 2), bool), np.ones((2, 2, 2), bool), (1.0, 1.0))


def test_metric_columns_order():
    columns = metrics.metric_columns()
    assert len(columns) == 12
    assert columns[:4] == ['WT_dice', 'WT_ppv', 'WT_sensitivity', 'WT_hd95']
    assert columns[-1] == 'ET_hd95'


def test_score_regions_on_a_tiny_brats2017_volume():
    # One row of voxels along x; every voxel is on the surface of its region.
    truth = np.array([0, 1, 1, 2, 2, 4, 0, 0]).reshape(1, 1, 8)
    prediction = np.array([0, 1, 2, 2, 2, 4, 4, 0]).reshape(1, 1, 8)
    # WT: truth x=1..5, prediction x=1..6.  TC = {1, 4}: truth {1, 2, 5}, prediction {1, 5, 6}.
    # ET: truth {5}, prediction {5, 6}.  Label 2 counts in WT only, label 1 in WT and TC.
    expected = {
        'WT_dice': 10 / 11, 'WT_ppv': 5 / 6, 'WT_sensitivity': 1.0,
        'WT_hd95': np.percentile([0] * 5 + [1] + [0] * 5, 95),
        'TC_dice': 4 / 6, 'TC_ppv': 2 / 3, 'TC_sensitivity': 2 / 3,
        'TC_hd95': np.percentile([0, 0, 1] + [0, 1, 0], 95),
        'ET_dice': 2 / 3, 'ET_ppv': 1 / 2, 'ET_sensitivity': 1.0,
        'ET_hd95': np.percentile([0, 1] + [0], 95),
    }
    row = metrics.score_regions(prediction, truth, ISOTROPIC)
    assert list(row) == metrics.metric_columns()
    assert row == pytest.approx(expected)


def test_score_regions_with_an_absent_region():
    truth = np.array([0, 2, 2, 3, 0]).reshape(1, 1, 5)          # BRATS2015: no enhancing
    prediction = np.array([0, 2, 2, 2, 0]).reshape(1, 1, 5)
    row = metrics.score_regions(prediction, truth, ISOTROPIC)
    assert row['WT_dice'] == 1.0 and row['WT_hd95'] == 0.0
    assert row['TC_dice'] == 0.0 and math.isnan(row['TC_ppv'])
    assert row['TC_sensitivity'] == 0.0 and math.isnan(row['TC_hd95'])
    assert row['ET_dice'] == 1.0
    assert all(math.isnan(row[name]) for name in ('ET_ppv', 'ET_sensitivity', 'ET_hd95'))


def test_mean_row_skips_nan_without_warnings():
    columns = metrics.metric_columns()
    first = dict.fromkeys(columns, 1.0)
    second = dict.fromkeys(columns, 0.5)
    first['ET_hd95'], second['ET_hd95'] = 4.0, float('nan')
    first['ET_ppv'] = second['ET_ppv'] = float('nan')
    second['patient'] = 'ignored'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        mean = metrics.mean_row([first, second])
        empty = metrics.mean_row([])
    assert list(mean) == columns
    assert mean['WT_dice'] == pytest.approx(0.75)
    assert mean['ET_hd95'] == pytest.approx(4.0)
    assert math.isnan(mean['ET_ppv'])
    assert all(math.isnan(value) for value in empty.values())
