"""model/normalization.py: histogram landmarks, the learned standard scale, standardisation and
its checks, on synthetic volumes with a known brain and on a real BraTS 2018 case."""
import numpy as np
import pytest

from model import normalization
from model.brats import find_patients, load_patient
from model.errors import InputError
from model.normalization import HISTOGRAM_PERCENTILES, ZSCORE, STANDARD_RANGE

SHAPE = (12, 40, 40)


def synthetic_volume(seed=0):
    """An int16 (z, y, x, 4) volume: a skewed intensity distribution inside a box, zero outside."""
    rng = np.random.default_rng(seed)
    volume = np.zeros(SHAPE + (4,), np.int16)
    inside = (slice(2, 10), slice(5, 35), slice(8, 30))
    brain = volume[inside].shape
    volume[inside] = np.clip(rng.gamma(4.0, 60.0, brain) + rng.normal(200.0, 5.0, brain[:-1] + (1,)),
                             1, 3000).astype(np.int16)
    return volume


def zscored(volume):
    """The z-score over brain voxels, clipped, as model.normalization.normalize computes it."""
    mean, std = normalization.intensity_stats(volume)
    return np.clip((volume - mean) / std, -normalization.CLIP_SD, normalization.CLIP_SD) \
        * normalization.brain_mask(volume)[..., None]


def monotone_remap(volume, function):
    """`function` applied to the non-zero voxels (the synthetic brain), zeros kept, rounded back to int16."""
    values = volume.astype(np.float64)
    return np.where(volume != 0, np.rint(function(values)), 0).astype(np.int16)


@pytest.fixture(scope='module')
def histogram():
    return normalization.learn_histogram([normalization.landmarks(synthetic_volume(seed)) for seed in range(3)])


def test_landmarks_are_the_brain_percentiles_and_strictly_increasing():
    volume = synthetic_volume()
    marks = normalization.landmarks(volume)
    assert marks.shape == (4, len(HISTOGRAM_PERCENTILES))
    brain = volume[normalization.brain_mask(volume)].astype(np.float64)
    np.testing.assert_allclose(marks[:, 5], np.median(brain, axis=0))
    flat = np.zeros(SHAPE + (4,), np.int16)
    flat[3:6, 3:6, 3:6] = 7                 # every percentile ties
    assert (np.diff(normalization.landmarks(flat), axis=1) > 0).all()


def test_the_learned_scale_spans_the_standard_range_and_passes_its_check(histogram):
    standard = np.array(histogram['standard'])
    assert standard.shape == (4, len(HISTOGRAM_PERCENTILES))
    np.testing.assert_allclose(standard[:, [0, -1]], np.tile(STANDARD_RANGE, (4, 1)))
    assert (np.diff(standard, axis=1) > 0).all()
    assert normalization.check_normalization(histogram, 'sidecar.json') is histogram


@pytest.mark.parametrize('broken', [
    {'method': 'minmax'},
    {'method': 'histogram', 'percentiles': [1, 99], 'standard': [[1.0, 2.0]] * 4},
    {'method': 'histogram', 'percentiles': list(HISTOGRAM_PERCENTILES), 'standard': [[1.0] * 11] * 4},
    {'method': 'histogram', 'percentiles': list(HISTOGRAM_PERCENTILES)},
    'histogram',
])
def test_malformed_normalisations_are_refused_naming_their_source(broken):
    with pytest.raises(InputError, match=r'^records/train\.json: invalid intensity normalisation'):
        normalization.check_normalization(broken, 'records/train.json')


def test_zscore_leaves_the_volume_as_it_is():
    volume = synthetic_volume()
    assert normalization.standardize(volume, ZSCORE) is volume


def without_flair_in_half_the_brain(volume, seed=0):
    """`volume` with FLAIR zero on a random half of its brain, as when a scan lacks it there."""
    volume = volume.copy()
    volume[..., 0][np.random.default_rng(seed).random(volume.shape[:3]) < 0.5] = 0
    return volume


def test_histogram_puts_the_volumes_landmarks_on_the_standard_scale_and_keeps_zeros(histogram):
    volume = without_flair_in_half_the_brain(synthetic_volume(seed=5))
    standardized = normalization.standardize(volume, histogram)
    assert standardized.dtype == np.int16
    np.testing.assert_array_equal(standardized == 0, volume == 0)
    np.testing.assert_array_equal(normalization.brain_mask(standardized), normalization.brain_mask(volume))
    assert standardized[volume != 0].min() >= 1
    np.testing.assert_allclose(normalization.landmarks(standardized), histogram['standard'], atol=1.0)


def test_a_modality_missing_over_part_of_the_brain_keeps_its_landmarks_and_mapping(histogram):
    volume = synthetic_volume(seed=6)
    partial = without_flair_in_half_the_brain(volume)
    np.testing.assert_allclose(normalization.landmarks(partial)[0], normalization.landmarks(volume)[0], rtol=0.02)
    present = partial[..., 0] != 0
    difference = (normalization.standardize(partial, histogram)[..., 0][present].astype(float)
                  - normalization.standardize(volume, histogram)[..., 0][present])
    assert np.abs(difference).mean() < 0.01 * histogram['standard'][0][-1]


def test_tied_end_landmarks_do_not_blow_up_the_intensities_beyond_them(histogram):
    volume = synthetic_volume(seed=7)
    flair = volume[..., 0]
    brain = flair != 0
    ranks = np.random.default_rng(0).random(flair.shape)
    flair[brain & (ranks < 0.15)] = 1000     # a saturated top: the 90th and 99th percentiles tie
    flair[brain & (ranks < 0.001)] = 1200    # and a few voxels above them
    marks = normalization.landmarks(volume)[0]
    assert marks[-1] - marks[-2] < 1.0
    standardized = normalization.standardize(volume, histogram)[..., 0]
    assert standardized.max() < 2 * histogram['standard'][0][-1]


def test_an_affine_change_of_scanner_scale_does_not_change_the_standardised_volume(histogram):
    volume = synthetic_volume(seed=1)
    rescaled = monotone_remap(volume, lambda values: 3.0 * values + 40.0)
    difference = np.abs(normalization.standardize(rescaled, histogram).astype(int)
                        - normalization.standardize(volume, histogram).astype(int))
    assert difference.max() <= 40     # int16 rounding of the input, magnified by at most the local slope
    assert difference.mean() < 2.0


def test_histogram_undoes_a_nonlinear_contrast_change_that_the_zscore_keeps(histogram):
    volume = synthetic_volume(seed=2)
    brain = normalization.brain_mask(volume)
    squared = monotone_remap(volume, lambda values: (values / 20.0) ** 2)
    zscore_error = np.abs(zscored(squared) - zscored(volume))[brain].mean()
    histogram_error = np.abs(zscored(normalization.standardize(squared, histogram))
                             - zscored(normalization.standardize(volume, histogram)))[brain].mean()
    assert zscore_error > 0.1
    assert histogram_error < zscore_error / 4


def test_a_real_case_standardised_on_its_own_scale_keeps_its_tissue_order(brats2018_root):
    patient = sorted(find_patients([brats2018_root]), key=lambda p: p.name)[0]
    image, label, _ = load_patient(patient)
    histogram = normalization.learn_histogram([normalization.landmarks(image)])
    standardized = normalization.standardize(image, histogram)
    np.testing.assert_array_equal(normalization.brain_mask(standardized), normalization.brain_mask(image))
    np.testing.assert_allclose(normalization.landmarks(standardized), histogram['standard'], atol=1.0)
    # A monotone map per modality: the tumour's median rank among the brain voxels is unchanged.
    brain, tumour = normalization.brain_mask(image), label > 0
    for channel in range(4):
        before = np.mean(image[brain][:, channel] < np.median(image[tumour][:, channel]))
        after = np.mean(standardized[brain][:, channel] < np.median(standardized[tumour][:, channel]))
        assert after == pytest.approx(before, abs=0.01)
