"""experiments/dcr_study.py: its rows, and the table, figure and README claims rendered from results."""
import json
import os
import shutil

import pytest

from bench.sections import markers
from experiments import dcr_study
from model.errors import InputError


def results(wt_dice_of_patient, wt_ppv=0.9):
    """A cross-validation results document of 3 folds x 2 patients whose WT Dice is
    wt_dice_of_patient(fold, patient index)."""
    folds = []
    for fold in range(3):
        names = ['p{}{}'.format(fold, index) for index in range(2)]
        rows = [{'patient': name, 'WT_dice': wt_dice_of_patient(fold, index), 'WT_ppv': wt_ppv, 'WT_sensitivity': 0.8,
                 'TC_dice': 0.7, 'ET_dice': 0.6} for index, name in enumerate(names)]
        folds.append({'fold': fold, 'test': names, 'steps': 1500, 'train_slices_per_s': 7.0, 'rows': rows})
    return {'command': 'python experiments/cross_validation.py', 'folds': folds}


def write_results(results_dir, documents):
    os.makedirs(results_dir, exist_ok=True)
    for name, document in documents.items():
        with open(dcr_study.results_path(dcr_study.row_named(name), results_dir), 'w') as stream:
            json.dump(document, stream)


def test_every_row_trains_with_train_py_flags_for_the_same_steps_and_test_time():
    import Train
    assert dcr_study.ROWS[0].name == dcr_study.BASELINE and not dcr_study.ROWS[0].train_flags
    for row in dcr_study.ROWS:
        argv = dcr_study.cross_validation_argv(row)
        assert argv[argv.index('--num-steps') + 1] == str(dcr_study.NUM_STEPS)
        assert '--inference-flags=' + dcr_study.INFERENCE_FLAGS in argv
        assert argv[1] == os.path.join(dcr_study.RUNS_DIR, 'study-' + row.name)
        Train.network_config(Train.resolve_recipe(Train.parse_args(row.train_flags.split())))   # flags Train.py accepts
    for _, names in dcr_study.CLAIMS:
        assert all(dcr_study.row_named(name) for name in names)
    with pytest.raises(InputError, match='no such study row'):
        dcr_study.row_named('dcr-D')


def test_the_rows_weights_differ_by_their_networks():
    counts = {name: dcr_study.weight_count(dcr_study.row_named(name)) for name in ('dcr-A', 'dcr-none', 'dilations-1')}
    assert counts['dcr-A'] > counts['dcr-none'] > 20e6
    assert counts['dilations-1'] == counts['dcr-A']   # dilation changes no weight


def test_a_difference_within_two_standard_errors_is_no_difference():
    assert dcr_study.verdict(0.004, 0.002) == 'no difference measured'
    assert dcr_study.verdict(0.0041, 0.002) == 'higher'
    assert dcr_study.verdict(-0.02, 0.005) == 'lower'
    assert dcr_study.verdict(0.01, float('nan')) == 'no difference measured'


def test_training_rates_are_averaged_within_each_cpu_class_only():
    def fold(rate, extensions):
        return {'train_slices_per_s': rate, 'machine': {'cpu_vector_extensions': extensions}}
    folds = [fold(4.0, ['avx2', 'fma']), fold(15.0, ['avx2', 'avx512f']), fold(4.6, ['avx2']), fold(14.0, ['avx512f'])]
    assert dcr_study.training_rate_cell(folds) == '14.5 AVX-512; 4.3 AVX2'
    assert dcr_study.training_rate_cell([{'train_slices_per_s': 7.0}]) == '7.0 CPU not recorded'


def test_render_writes_the_rows_that_ran_and_registers_the_rest(tmp_path):
    results_dir = str(tmp_path / 'results')
    write_results(results_dir, {'dcr-A': results(lambda fold, index: 0.80),
                                'dcr-none': results(lambda fold, index: 0.80 - 0.02 - 0.002 * index, wt_ppv=0.95)})
    kept_unet_fold = os.path.join(dcr_study.kept_folds_dir(dcr_study.row_named('unet'), results_dir), 'fold0.json')
    os.makedirs(os.path.dirname(kept_unet_fold))
    with open(kept_unet_fold, 'w') as stream:
        json.dump({'fold': 0}, stream)
    documents = {}
    for name, section in (('report', 'dcr study'), ('readme', 'claims')):
        documents[name] = str(tmp_path / (name + '.md'))
        with open(documents[name], 'w') as stream:
            stream.write('before\n{}\nstale section\n{}\nafter\n'.format(*markers(section)))
    shutil.copyfile(dcr_study.NESTED_RESULTS, str(tmp_path / 'nested.json'))
    figure = str(tmp_path / 'study.png')
    dcr_study.render(results_dir, documents['report'], documents['readme'], figure, str(tmp_path / 'nested.json'))
    with open(documents['report']) as stream:
        report = stream.read()
    assert report.startswith('before\n') and report.endswith('after\n') and 'stale section' not in report
    none_row = next(line for line in report.splitlines() if line.startswith('| dcr-none |'))
    assert '-0.021 ± 0.000 (0/6): lower' in none_row and '| 24.1 M |' in none_row
    registered = report.split('Registered, not run yet:')[1]
    assert '- dcr-B: `python experiments/dcr_study.py run dcr-B`\n' in registered
    assert '- unet: `python experiments/dcr_study.py run unet` (1 of 3 folds kept)' in registered
    with open(documents['readme']) as stream:
        readme = stream.read()
    assert 'dcr-none: Dice -0.021 ± 0.000, lower; PPV +0.050 ± 0.000, higher' in readme
    assert 'not measured yet: dcr-B, dcr-C' in readme
    with open(dcr_study.NESTED_RESULTS) as stream:
        nested = json.load(stream)['nested']
    assert '{:.3f} and {:.3f}'.format(nested['WT_dice'][0], nested['WT_ppv'][0]) in readme
    assert os.path.getsize(figure) > 0


def test_finished_folds_are_kept_and_restored_where_cross_validation_skips_them(tmp_path):
    row = dcr_study.row_named('dcr-none')
    first_runs, results_dir = str(tmp_path / 'runs'), str(tmp_path / 'results')
    summaries = results(lambda fold, index: 0.8)['folds']
    for summary in summaries[:2]:   # folds 0 and 1 finished; fold 2 was interrupted
        fold_dir = os.path.join(dcr_study.work_dir(row, first_runs), 'fold{}'.format(summary['fold']))
        os.makedirs(os.path.join(fold_dir, 'checkpoints'))
        with open(os.path.join(fold_dir, 'summary.json'), 'w') as stream:
            json.dump(summary, stream)
    os.makedirs(os.path.join(dcr_study.work_dir(row, first_runs), 'fold2', 'checkpoints'))
    assert dcr_study.keep_finished_folds(row, first_runs, results_dir) == 2
    assert sorted(os.listdir(dcr_study.kept_folds_dir(row, results_dir))) == ['fold0.json', 'fold1.json']
    other_machine = str(tmp_path / 'elsewhere')
    assert dcr_study.restore_kept_folds(row, other_machine, results_dir) == ['fold0', 'fold1']
    with open(os.path.join(dcr_study.work_dir(row, other_machine), 'fold1', 'summary.json')) as stream:
        assert json.load(stream) == summaries[1]
    assert not os.path.exists(os.path.join(dcr_study.work_dir(row, other_machine), 'fold2'))
    assert dcr_study.restore_kept_folds(row, other_machine, results_dir) == []   # present already


def test_the_committed_sections_are_the_rendering_of_the_committed_results():
    rendered = dcr_study.study_table(dcr_study.load_results(), dcr_study.kept_fold_counts())
    with open(dcr_study.REPORT) as stream:
        assert rendered in stream.read()
    with open(dcr_study.NESTED_RESULTS) as stream:
        claims = dcr_study.claims_table(dcr_study.load_results(), json.load(stream))
    with open(dcr_study.README) as stream:
        assert claims in stream.read()
