"""experiments/missed_tumour.py: where a prediction misses tumour, on a hand-made case."""
import numpy as np

from experiments import missed_tumour


def test_missed_voxels_are_split_by_label_slice_and_intensity():
    image = np.zeros((4, 8, 8, 4), np.int16)
    image[:, 1:7, 1:7] = 100                     # brain
    truth = np.zeros((4, 8, 8), np.uint8)
    truth[0:3, 2:4, 2:4] = 2                     # oedema in slices 0-2, 4 voxels each
    truth[1, 4, 4] = 4                           # one enhancing voxel
    image[0, 2:4, 2:4, 0] = 150                  # the oedema of slice 0 is faint on FLAIR ...
    image[1:3, 2:4, 2:4, 0] = 400                # ... that of slices 1-2 bright
    prediction = np.zeros_like(truth)
    prediction[1:3, 2:4, 2:4] = 2                # finds the bright oedema; slice 0 has nothing
    statistics = missed_tumour.missed_tumour(image, truth, prediction)
    assert statistics['WT voxels'] == 13
    assert np.isclose(statistics['missed'], 5 / 13)
    assert np.isclose(statistics['of missed: oedema'], 4 / 5)
    assert np.isclose(statistics['of missed: enhancing'], 1 / 5)
    assert statistics['of missed: necrosis/NET'] == 0
    assert np.isclose(statistics['of missed: in slices with none found'], 4 / 5)
    assert statistics['FLAIR of missed oedema'] < statistics['FLAIR of found oedema']
    assert statistics['FLAIR oedema contrast'] > 0
    assert np.isnan(missed_tumour.missed_tumour(image, truth, truth)['FLAIR of missed oedema'])


def test_contrast_correlation_pairs_found_share_with_contrast():
    rows = [('a', {'missed': 0.5, 'FLAIR oedema contrast': 1.0}), ('b', {'missed': 0.2, 'FLAIR oedema contrast': 2.0}),
            ('c', {'missed': 0.1, 'FLAIR oedema contrast': 3.0}),
            ('d', {'missed': 0.9, 'FLAIR oedema contrast': float('nan')})]   # no oedema: left out
    assert 0.9 < missed_tumour.contrast_correlation(rows) <= 1.0
    assert np.isnan(missed_tumour.contrast_correlation(rows[:2]))


def test_gain_is_split_at_the_median_contrast():
    rows = [(name, {'missed': 0.1, 'FLAIR oedema contrast': contrast, 'WT Dice gain': gain})
            for name, contrast, gain in (('a', 3.0, 0.0), ('b', 1.0, 0.10), ('c', 2.0, 0.02), ('d', 0.5, 0.06),
                                         ('e', float('nan'), 0.5), ('f', 2.5, 0.01))]
    lower, higher = missed_tumour.gain_by_contrast_half(rows)   # 'e' has no oedema: left out; 'c' is the median
    assert np.isclose(lower, 0.08) and np.isclose(higher, 0.005)
    assert '+0.080 in the lower-contrast half' in missed_tumour.markdown(rows)
    assert 'gain' not in missed_tumour.markdown([(n, {k: v for k, v in s.items() if k != 'WT Dice gain'})
                                                for n, s in rows])


def test_unfinished_run_is_refused(tmp_path, capsys):
    assert missed_tumour.main(['--run-dir', str(tmp_path)]) == 2
    assert 'results.json: missing' in capsys.readouterr().err
