"""experiments/cross_validation.py: fold assignment and the results table."""
import json
import math

import pytest

from experiments.cross_validation import (assign_folds, mean_and_std, results_markdown, split_validation,
                                         trained_checkpoints, trained_fold)
from model.brats import Patient
from model.errors import InputError
from model.lists import read_patient_list


def patients(names):
    return [Patient(name=name, layout='nifti', flair='f', t1='t1', t1c='t1c', t2='t2', label='l')
            for name in names]


def test_folds_are_patient_level_seeded_and_spread_the_lgg_cases():
    cases = patients(['case{:02d}'.format(index) for index in range(12)])
    lgg = {'case03', 'case07'}
    folds = assign_folds(cases, 3, seed=0, lgg_names=lgg)
    assert sorted(len(fold) for fold in folds) == [4, 4, 4]
    assert sorted(p.name for fold in folds for p in fold) == sorted(p.name for p in cases)
    assert sorted(sum(p.name in lgg for p in fold) for fold in folds) == [0, 1, 1]
    assert [[p.name for p in fold] for fold in folds] == \
        [[p.name for p in fold] for fold in assign_folds(cases, 3, seed=0, lgg_names=lgg)]
    assert any([[p.name for p in fold] for fold in assign_folds(cases, 3, seed=seed, lgg_names=lgg)]
               != [[p.name for p in fold] for fold in folds] for seed in range(1, 5))


def test_mean_and_std_skip_nan():
    rows = [{'WT_dice': 0.5}, {'WT_dice': float('nan')}, {'WT_dice': 1.0}]
    mean, std = mean_and_std(rows, 'WT_dice')
    assert mean == 0.75 and std == 0.25
    assert all(math.isnan(value) for value in mean_and_std([{'WT_dice': float('nan')}], 'WT_dice'))


def test_results_table_has_a_row_per_fold_and_the_pooled_row():
    columns = ('WT', 'TC', 'ET')
    row = dict({'{}_{}'.format(region, metric): 0.5 for region in columns
                for metric in ('dice', 'ppv', 'sensitivity', 'hd95')}, patient='p')
    summaries = [{'fold': index, 'rows': [row, row], 'steps': 10, 'train_slices_per_s': 4.0,
                  'train_minutes': 20.0, 'fold_minutes': 21.0 + index} for index in range(3)]
    table = results_markdown(summaries, 'python experiments/cross_validation.py')
    assert '| fold 2 |' in table and '**all 6 held-out**' in table
    assert '0.500 ± 0.000' in table and table.endswith('`python experiments/cross_validation.py`')
    assert '| 20.0 | 23.0 |' in table and table.splitlines()[-3].endswith('| | | | 66.0 |')
    del summaries[0]['fold_minutes']
    lines = results_markdown(summaries, 'command').splitlines()
    assert '| 20.0 | n/a |' in lines[2] and '| 20.0 | 22.0 |' in lines[3] and lines[-3].endswith('| n/a |')


def test_trained_from_reuses_only_a_finished_run_with_the_same_folds(tmp_path):
    held_out = patients(['case01', 'case02'])
    with pytest.raises(InputError, match='needs a finished run'):
        trained_fold(str(tmp_path), 0, held_out)
    (tmp_path / 'fold0').mkdir()
    summary = {'test': ['case02', 'case01'], 'machine': {'cpu_model': 'Some CPU', 'logical_cores': 2}}
    (tmp_path / 'fold0' / 'summary.json').write_text(json.dumps(summary))
    assert trained_fold(str(tmp_path), 0, held_out) == summary
    assert trained_checkpoints(str(tmp_path), 0, summary) == [str(tmp_path / 'fold0' / 'checkpoints')]
    ensemble = {'test': ['case01', 'case02'], 'checkpoints': ['x/member0', 'x/member1']}
    assert trained_checkpoints(str(tmp_path), 0, ensemble) == [
        str(tmp_path / 'fold0' / 'checkpoints' / 'member{}'.format(k)) for k in range(2)]
    with pytest.raises(InputError, match='held out other patients'):
        trained_fold(str(tmp_path), 0, patients(['case01', 'case03']))


@pytest.mark.slow
def test_validation_patients_are_seeded_hgg_cases_of_the_training_set():
    cases = patients(['case{:02d}'.format(index) for index in range(8)])
    train, validation = split_validation(cases, 2, seed=3, lgg_names={'case00', 'case05'})
    assert len(validation) == 2 and not {p.name for p in validation} & {'case00', 'case05'}
    assert sorted(p.name for p in train + validation) == [p.name for p in cases]
    assert split_validation(cases, 2, seed=3, lgg_names={'case00', 'case05'}) == (train, validation)
    assert split_validation(cases, 0, seed=3, lgg_names=set()) == (cases, [])
    with pytest.raises(InputError, match='--val-patients 6: a fold has 6 HGG training patients'):
        split_validation(cases, 6, seed=3, lgg_names={'case00', 'case05'})


def assert_a_reusing_run_lists_what_the_networks_were_trained_on(source_work, data):
    """A --trained-from run on `source_work`, whose fold 0 is made to have validated on one of
    its training patients: the reusing run's lists and training rate are the source's, not what
    its own --val-patients and --batch-size would give."""
    from experiments import cross_validation
    summary_path = source_work / 'fold0' / 'summary.json'
    source = json.loads(summary_path.read_text())
    source['train'], source['validation'] = source['train'][1:], source['train'][:1]
    summary_path.write_text(json.dumps(source))
    work = source_work.parent / 'reuse'
    assert cross_validation.main(['--data-dir', str(data), '--work-dir', str(work), '--folds', '2', '--lgg', 'none',
                                  '--trained-from', str(source_work), '--inference-flags=--tta none']) == 0
    fold = json.loads((work / 'fold0' / 'summary.json').read_text())
    assert (fold['train'], fold['validation']) == (source['train'], source['validation'])
    assert [p.name for p in read_patient_list(str(work / 'fold0' / 'lists' / 'train.txt'))] == source['train']
    assert fold['train_slices_per_s'] == source['train_slices_per_s']


@pytest.mark.slow
def test_a_tiny_ensemble_run_trains_two_networks_per_fold_and_reports(tmp_path, capsys):
    """The whole harness on 4 tiny phantom patients, 2 folds, 2 tiny networks per fold, on
    histogram-standardised records."""
    from experiments import cross_validation
    from model import phantom
    data = tmp_path / 'phantom'
    phantom.generate_dataset(str(data), num_hgg=3, num_lgg=1, num_test=0, shape=(16, 64, 64), progress=False)
    work = tmp_path / 'run'
    tiny = ('--width 0.125 --refine-filters 8 --dcr-type C --dilations 6,3,2,1 --crop-size 64 '
            '--shuffle-buffer 8 --num-steps 2')
    argv = ['--data-dir', str(data), '--work-dir', str(work), '--folds', '2', '--budget-minutes', '5',
            '--batch-size', '2', '--ensemble', '2', '--lgg', 'none', '--train-flags=' + tiny,
            '--convert-flags=--normalization histogram']
    assert cross_validation.main(argv) == 0
    folds = json.loads((work / 'results.json').read_text())['folds']
    assert [len(fold['rows']) for fold in folds] == [2, 2]
    for fold in folds:
        assert fold['checkpoints'] == [str(work / 'fold{}'.format(fold['fold']) / 'checkpoints' / 'member{}'.format(k))
                                       for k in range(2)]
        assert fold['steps'] == 4   # 2 steps (the last --num-steps wins) for each member
        trains = [command for command in fold['commands'] if command.startswith('python Train.py')]
        assert len(trains) == 2 and all('--time-budget-minutes 2.5' in command for command in trains)
        conversions = [command for command in fold['commands'] if command.startswith('python create_pascal')]
        assert len(conversions) == 1 and conversions[0].endswith('--normalization histogram')
        inference = [command for command in fold['commands'] if command.startswith('python Inference.py')]
        assert inference[0].count('--ckpt-dir') == 2
    assert '**all 4 held-out**' in (work / 'results.md').read_text()
    assert_a_reusing_run_lists_what_the_networks_were_trained_on(work, data)
    assert cross_validation.main(argv + ['--ensemble', '0']) == 2
    assert '--ensemble 0' in capsys.readouterr().err
