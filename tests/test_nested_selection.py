"""experiments/nested_selection.py: the rule for defaults, its nesting, and a tiny run end to end."""
import json
import math
import os

import numpy as np
import pytest

from bench.sections import markers
from experiments import nested_selection
from experiments.nested_selection import BASELINE, Candidate, candidate_key, candidates

PATIENTS = ['p{:02d}'.format(index) for index in range(12)]


def synthetic_rows(changes, noise=0.002, seed=0):
    """{patient: {candidate key: metrics}}: every candidate scores like the baseline, plus
    changes[key] = (WT Dice change, WT PPV change) and a little patient noise."""
    rng = np.random.RandomState(seed)
    rows = {}
    for index, name in enumerate(PATIENTS):
        base = {'WT_dice': 0.80 + 0.01 * (index % 5), 'WT_ppv': 0.85, 'WT_sensitivity': 0.8, 'TC_dice': 0.7,
                'ET_dice': 0.6}
        rows[name] = {}
        for candidate in candidates():
            dice_change, ppv_change = changes.get(candidate_key(candidate), (0.0, 0.0))
            rows[name][candidate_key(candidate)] = dict(
                base, WT_dice=base['WT_dice'] + dice_change + rng.normal(0, noise),
                WT_ppv=base['WT_ppv'] + ppv_change + rng.normal(0, noise))
    return rows


def test_an_option_is_taken_only_beyond_two_standard_errors_and_without_losing_ppv():
    regions = candidate_key(Candidate('none', 'regions', 0.3, 0.0))
    greedy = candidate_key(Candidate('none', 'regions', 0.1, 0.0))
    flip = candidate_key(Candidate('flip', 'regions', 0.3, 0.0))
    rows = synthetic_rows({regions: (0.02, -0.005), greedy: (0.04, -0.05), flip: (0.0215, -0.005)})
    chosen, decisions = nested_selection.select(rows, PATIENTS)
    assert chosen == Candidate('none', 'regions', 0.3, 0.0)   # flip's 0.0015 more is within the noise
    decoding, components, flipped = decisions
    assert decoding['taken'] and decoding['alternative'] == regions
    assert decoding['WT_dice_gain'] == pytest.approx(0.02, abs=0.003)
    assert not components['taken'] and not flipped['taken']
    assert flipped['alternative'] == flip and abs(flipped['WT_dice_gain']) < 2 * flipped['standard_error']


def test_without_a_real_gain_the_paper_decoding_stays():
    chosen, decisions = nested_selection.select(synthetic_rows({}), PATIENTS)
    assert chosen == BASELINE and not any(decision['taken'] for decision in decisions)


def test_a_fold_is_never_scored_by_a_choice_made_on_its_own_patients():
    regions = candidate_key(Candidate('none', 'regions', 0.4, 0.0))
    folds = [{'fold': index, 'test': PATIENTS[4 * index:4 * index + 4]} for index in range(3)]
    rows = synthetic_rows({regions: (0.03, 0.0)}, noise=0.0)
    for name in folds[0]['test']:   # regions decoding is a disaster on fold 0's own patients only
        rows[name][regions]['WT_dice'] -= 0.5
    outer = nested_selection.nested_estimate(rows, folds)
    assert [fold['chosen'] for fold in outer] == [
        regions, candidate_key(BASELINE), candidate_key(BASELINE)]
    assert outer[0]['scores']['WT_dice'][0] < 0.5


def test_bfloat16_agreement_counts_tumour_voxels_and_the_dice_change():
    truth = np.zeros((4, 8, 8), np.uint8)
    truth[1:3, 2:6, 2:6] = 2
    float_labels = truth.copy()
    bfloat16_labels = truth.copy()
    bfloat16_labels[1, 2, 2] = 0
    agreement = nested_selection.bfloat16_agreement(float_labels, bfloat16_labels, truth)
    assert agreement['tumour_voxels_agreeing'] == pytest.approx(31 / 32)
    assert agreement['WT_dice_change'] == pytest.approx(2 * 31 / 63 - 1.0)


@pytest.mark.slow
def test_a_tiny_run_scores_every_candidate_resumes_and_renders(tmp_path, monkeypatch):
    """Two tiny trained folds of phantom patients, scored, selected and rendered into a report."""
    from experiments import cross_validation
    from model import phantom
    data = tmp_path / 'phantom'
    phantom.generate_dataset(str(data), num_hgg=4, num_lgg=0, num_test=0, shape=(16, 64, 64), progress=False)
    trained = tmp_path / 'trained'
    tiny = ('--width 0.125 --refine-filters 8 --dcr-type C --dilations 6,3,2,1 --crop-size 64 '
            '--shuffle-buffer 8')
    assert cross_validation.main(['--data-dir', str(data), '--work-dir', str(trained), '--folds', '2',
                                  '--num-steps', '2', '--batch-size', '2', '--lgg', 'none',
                                  '--train-flags=' + tiny]) == 0
    report = tmp_path / 'accuracy.md'
    report.write_text('before\n{}\nstale-section\n{}\nafter\n'.format(*markers('nested selection')))
    readme = tmp_path / 'README.md'
    readme.write_text('{}\n{}\n'.format(*markers('accuracy')))
    paths = ['--results', str(tmp_path / 'results.json'), '--report', str(report),
             '--figure', str(tmp_path / 'threshold.png'), '--readme', str(readme)]
    work = tmp_path / 'nested'
    argv = ['--work-dir', str(work), '--trained-from', str(trained)] + paths
    assert nested_selection.main(argv) == 0
    scores = json.loads((work / 'scores' / 'fold0.json').read_text())
    assert len(scores) == 2
    for entry in scores.values():
        assert sorted(entry['candidates']) == sorted(candidate_key(candidate) for candidate in candidates())
        assert set(entry['bfloat16']) == set(nested_selection.BFLOAT16_TTAS)
        assert all(0.0 <= entry['candidates'][key]['WT_dice'] <= 1.0 for key in entry['candidates'])
    result = json.loads((tmp_path / 'results.json').read_text())
    assert [fold['fold'] for fold in result['outer']] == [0, 1]
    assert result['zooms']['candidate'].startswith('zooms ')
    assert set(result['defaults']) == {'tta', 'decoding', 'threshold', 'component_fraction'}
    assert not math.isnan(result['nested']['WT_dice'][0])
    text = report.read_text()
    assert text.startswith('before\n') and text.endswith('after\n') and 'stale-section' not in text
    assert '**the selection procedure, all 4**' in text and 'Reproduce: `python experiments/nested_selection.py' in text
    assert (tmp_path / 'threshold.png').stat().st_size > 0
    assert '**Inference.py defaults**' in readme.read_text() and '| 0.87 | 0.91 |' in readme.read_text()

    def no_prediction(*args, **kwargs):
        raise AssertionError('a finished fold was predicted again')
    monkeypatch.setattr(nested_selection, 'restored_predictor', no_prediction)
    assert nested_selection.main(argv) == 0   # resumed from the score files
    assert nested_selection.main(['--render-only'] + paths) == 0
    assert nested_selection.main(['--render-only', '--results', str(tmp_path / 'none.json')]) == 2


def test_inference_defaults_are_the_ones_the_nested_selection_chose():
    import Inference
    results = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'experiments', 'results', 'nested-selection.json')
    with open(results) as handle:
        chosen = json.load(handle)['defaults']
    decoding = Inference.DECODING
    assert (decoding.tta, decoding.method, decoding.tumour_threshold, decoding.min_component_fraction) == (
        chosen['tta'], chosen['decoding'], chosen['threshold'], chosen['component_fraction'])
