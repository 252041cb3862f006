"""experiments/ablations.py: rows, their commands, and the table rendered from results files."""
import json

import pytest

from bench.sections import markers
from experiments import ablations
from model.errors import InputError


def test_every_test_time_row_reuses_a_trained_row():
    names = [row.name for row in ablations.ROWS]
    assert len(set(names)) == len(names)
    for row in ablations.ROWS:
        if row.trained_from:
            assert not row.train_flags
            assert not ablations.row_named(row.trained_from).trained_from
        else:   # a trained row states its flags, so it reruns as it ran when Train.py's defaults move
            assert row.train_flags
        # ...and every row its decoding, component removal and test-time augmentation, for Inference.py's defaults
        assert '--decoding argmax' in row.inference_flags or '--tumour-threshold' in row.inference_flags
        assert '--min-component-fraction' in row.inference_flags and '--tta' in row.inference_flags


def test_every_selection_names_registered_rows_of_one_network():
    for _, names in ablations.SELECTIONS:
        rows = [ablations.row_named(name) for name in names]
        assert len({row.trained_from or row.name for row in rows}) == 1


def test_every_paired_comparison_names_registered_rows():
    for name, baseline in ablations.PAIRED:
        assert name != baseline
        ablations.row_named(name)
        ablations.row_named(baseline)


def test_cross_validation_arguments_of_a_row():
    argv = ablations.cross_validation_argv(ablations.row_named('budget-recipe-regions-flip'))
    assert argv == ['--work-dir', 'experiments/runs/budget-recipe-regions-flip',
                    '--inference-flags=--decoding regions --tumour-threshold 0.5 --tta flip --min-component-fraction 0',
                    '--trained-from', 'experiments/runs/budget-recipe']
    argv = ablations.cross_validation_argv(ablations.row_named('histogram-normalization'))
    assert argv[2] == '--convert-flags=--normalization histogram' and argv[3].startswith('--train-flags=')
    assert ablations.cross_validation_argv(ablations.row_named('batch-16'))[-2:] == ['--batch-size', '16']
    assert '--batch-size' not in ablations.cross_validation_argv(ablations.row_named('defaults-seed-1'))
    with pytest.raises(InputError, match='no such ablation row'):
        ablations.row_named('nonsense')


def results(wt_dice, cpu=None):
    patient = {'WT_dice': wt_dice, 'WT_ppv': 0.9, 'WT_sensitivity': 0.8, 'TC_dice': 0.7, 'ET_dice': float('nan')}
    folds = [{'steps': 100 + index, 'train_slices_per_s': 5.0 + index, 'rows': [patient, patient],
              'test': ['p{}a'.format(index), 'p{}b'.format(index)]} for index in range(3)]
    if cpu:
        for fold in folds:
            fold['machine'] = {'cpu_model': cpu}
    return {'command': 'python experiments/cross_validation.py --work-dir X', 'folds': folds}


def test_table_lists_rows_with_results_in_registry_order(tmp_path):
    (tmp_path / 'width-half.json').write_text(json.dumps(results(0.5)))
    (tmp_path / 'budget-recipe.json').write_text(json.dumps(results(0.75, cpu='AMD EPYC')))
    lines = ablations.table(ablations.load_results(str(tmp_path))).splitlines()
    assert lines[2].startswith('| budget-recipe |') and '0.750 ± 0.000' in lines[2]
    assert lines[2].endswith('| 100/101/102 | 6.0 | AMD EPYC |')
    assert lines[3].startswith('| width-half |') and '0.500 ± 0.000' in lines[3]
    assert 'nan ± nan' in lines[3] and lines[3].endswith('| 100/101/102 | 6.0 | not recorded |')
    assert '- width-half: `python experiments/cross_validation.py --work-dir X`' in lines


def test_machine_cell_names_each_cpu_with_its_vector_extensions_where_recorded():
    folds = results(0.5, cpu='AMD EPYC')['folds']
    folds[1]['machine']['cpu_vector_extensions'] = ['avx2', 'fma']
    folds[2]['machine']['cpu_vector_extensions'] = ['avx2', 'fma']
    assert ablations.machine_cell(folds) == 'AMD EPYC, AMD EPYC (avx2 fma)'
    assert ablations.machine_cell(results(0.5)['folds']) == 'not recorded'


def test_write_tables_replaces_only_the_marked_parts(tmp_path):
    (tmp_path / 'budget-recipe.json').write_text(json.dumps(results(0.75)))
    history, report = tmp_path / 'history.md', tmp_path / 'report.md'
    history.write_text('intro\n{}\nold table\n{}\nmiddle\n{}\nstale rows\n{}\n{}\n{}\noutro\n'.format(
        *markers('ablation table'), *markers('fold selection'), *markers('paired differences')))
    report.write_text('summary\n{}\nold rule table\n{}\nend\n'.format(*markers('training defaults')))
    ablations.write_tables(str(report), str(history), str(tmp_path))
    text = history.read_text()
    assert text.startswith('intro\n') and text.endswith('\noutro\n') and '\nmiddle\n' in text
    assert 'old table' not in text and 'stale rows' not in text
    assert '| budget-recipe |' in text and '| selection |' in text and '| option | default |' not in text
    text = report.read_text()
    assert text.startswith('summary\n') and text.endswith('\nend\n') and 'old rule table' not in text
    assert '| option | default |' in text
    for broken in ('{}\n{}\nno selection markers\n'.format(*markers('ablation table')),
                   '{1}\n{0}\n'.format(*markers('ablation table'))):
        history.write_text(broken)
        with pytest.raises(InputError, match='missing or out of order'):
            ablations.write_tables(str(report), str(history), str(tmp_path))
        assert history.read_text() == broken


def test_selection_table_scores_each_fold_with_the_choice_of_the_other_folds(tmp_path, monkeypatch):
    monkeypatch.setattr(ablations, 'SELECTIONS', (('threshold', ('budget-recipe-regions', 'width-half')),))
    plain, lowered = results(0.8), results(0.7)
    lowered['folds'][0]['rows'] = [dict(row, WT_dice=1.0) for row in lowered['folds'][0]['rows']]
    (tmp_path / 'budget-recipe-regions.json').write_text(json.dumps(plain))
    assert len(ablations.selection_table(ablations.load_results(str(tmp_path))).splitlines()) == 2  # one missing
    (tmp_path / 'width-half.json').write_text(json.dumps(lowered))
    line = ablations.selection_table(ablations.load_results(str(tmp_path))).splitlines()[2]
    # Fold 0, where the second candidate shines, is scored with the first (better on folds 1 and 2);
    # folds 1 and 2 see fold 0's 1.0 and pick the second, which scores them 0.7.
    assert '| budget-recipe-regions, width-half, width-half |' in line
    assert '0.733 ± 0.047' in line


def test_paired_differences_compare_the_same_patients(tmp_path):
    baseline, better = results(0.7), results(0.7)
    for index, fold in enumerate(better['folds']):   # patient a of each fold gains 0.1 * (fold + 1)
        fold['rows'] = [dict(fold['rows'][0], patient=fold['test'][0], WT_dice=0.7 + 0.1 * (index + 1)),
                        dict(fold['rows'][1], patient=fold['test'][1])]
    for fold in baseline['folds']:
        fold['rows'] = [dict(row, patient=name) for row, name in zip(fold['rows'], fold['test'])]
    mean, error, better_count, count = ablations.paired_differences(better, baseline, 'WT_dice')
    assert count == 6 and better_count == 3
    assert abs(mean - 0.1) < 1e-9 and abs(error - 0.0516) < 1e-3   # sample stdev 0.1265 / sqrt(6)
    assert ablations.paired_differences(better, baseline, 'ET_dice')[3] == 0   # all NaN: nothing compared
    shifted = json.loads(json.dumps(baseline))
    shifted['folds'][0]['test'] = ['other', 'patients']
    with pytest.raises(InputError, match='holds out other patients'):
        ablations.paired_differences(better, shifted, 'WT_dice')
