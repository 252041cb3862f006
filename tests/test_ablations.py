"""experiments/ablations.py: rows, their commands, and the table rendered from results files."""
import json
import os

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


def test_the_registry_holds_the_rows_of_the_rule_checks_and_what_they_reuse():
    checked = {name for _, _, row, simpler in ablations.RULE_CHECKS for name in (row, simpler)}
    reused = {ablations.row_named(name).trained_from for name in checked} - {''}
    assert {row.name for row in ablations.ROWS} == checked | reused


def test_every_results_file_is_rendered_by_a_table():
    """experiments/results holds the ablation rows, the study's rows (and folds of a row not complete) and the
    nested selection, nothing else."""
    from experiments import dcr_study, nested_selection
    rendered = ({row.name + '.json' for row in ablations.ROWS}
                | {os.path.basename(path(row)) for row in dcr_study.ROWS
                   for path in (dcr_study.results_path, dcr_study.kept_folds_dir)}
                | {os.path.basename(nested_selection.RESULTS_PATH)})
    assert set(os.listdir(ablations.RESULTS_DIR)) <= rendered


def test_the_committed_tables_are_the_rendering_of_the_committed_results():
    results = ablations.load_results()
    assert list(results) == [row.name for row in ablations.ROWS]
    with open(ablations.HISTORY) as stream:
        assert ablations.table(results) in stream.read()
    with open(ablations.REPORT) as stream:
        assert ablations.rule_table(results) in stream.read()


def test_cross_validation_arguments_of_a_row():
    argv = ablations.cross_validation_argv(ablations.row_named('dice-off-argmax'))
    assert argv == ['--work-dir', 'experiments/runs/dice-off-argmax',
                    '--inference-flags=--decoding argmax --tta none --min-component-fraction 0',
                    '--trained-from', 'experiments/runs/dice-off']
    argv = ablations.cross_validation_argv(ablations.row_named('histogram-normalization'))
    assert argv[2] == '--convert-flags=--normalization histogram' and argv[3].startswith('--train-flags=')
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
    (tmp_path / 'paper-training.json').write_text(json.dumps(results(0.5)))
    (tmp_path / 'budget-recipe.json').write_text(json.dumps(results(0.75, cpu='AMD EPYC')))
    lines = ablations.table(ablations.load_results(str(tmp_path))).splitlines()
    assert lines[2].startswith('| budget-recipe |') and '0.750 ± 0.000' in lines[2]
    assert lines[2].endswith('| 100/101/102 | 6.0 | AMD EPYC |')
    assert lines[3].startswith('| paper-training |') and '0.500 ± 0.000' in lines[3]
    assert 'nan ± nan' in lines[3] and lines[3].endswith('| 100/101/102 | 6.0 | not recorded |')
    assert '- paper-training: `python experiments/cross_validation.py --work-dir X`' in lines


def test_machine_cell_names_each_cpu_with_its_vector_extensions_where_recorded():
    folds = results(0.5, cpu='AMD EPYC')['folds']
    folds[1]['machine']['cpu_vector_extensions'] = ['avx2', 'fma']
    folds[2]['machine']['cpu_vector_extensions'] = ['avx2', 'fma']
    assert ablations.machine_cell(folds) == 'AMD EPYC, AMD EPYC (avx2 fma)'
    assert ablations.machine_cell(results(0.5)['folds']) == 'not recorded'


def test_write_tables_replaces_only_the_marked_parts(tmp_path):
    (tmp_path / 'budget-recipe.json').write_text(json.dumps(results(0.75)))
    history, report = tmp_path / 'history.md', tmp_path / 'report.md'
    history.write_text('intro\n{}\nold table\n{}\noutro\n'.format(*markers('ablation table')))
    report.write_text('summary\n{}\nold rule table\n{}\nend\n'.format(*markers('training defaults')))
    ablations.write_tables(str(report), str(history), str(tmp_path))
    text = history.read_text()
    assert text.startswith('intro\n') and text.endswith('\noutro\n') and 'old table' not in text
    assert '| budget-recipe |' in text and '| option | default |' not in text
    text = report.read_text()
    assert text.startswith('summary\n') and text.endswith('\nend\n') and 'old rule table' not in text
    assert '| option | default |' in text
    for broken in ('no markers\n', '{1}\n{0}\n'.format(*markers('ablation table'))):
        history.write_text(broken)
        with pytest.raises(InputError, match='missing or out of order'):
            ablations.write_tables(str(report), str(history), str(tmp_path))
        assert history.read_text() == broken


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
