"""experiments/fit_gap.py: the training vs held-out table, and its refusal of unfinished runs."""
from experiments import fit_gap


def test_gap_table_pairs_training_and_held_out_columns():
    row = {'WT_dice': 0.9, 'WT_sensitivity': 0.8, 'TC_dice': 0.7, 'ET_dice': float('nan')}
    lower = dict(row, WT_dice=0.7)
    lines = fit_gap.gap_table([('fold 0', [row, row], [lower, row])]).splitlines()
    assert lines[0].startswith('| | WT_dice train | WT_dice held-out |')
    assert lines[2].startswith('| fold 0 | 0.900 ± 0.000 | 0.800 ± 0.100 | 0.800 ± 0.000 |')
    assert 'nan ± nan' in lines[2]


def test_unfinished_run_is_refused(tmp_path, capsys):
    assert fit_gap.main(['--run-dir', str(tmp_path)]) == 2
    assert 'results.json: missing' in capsys.readouterr().err
