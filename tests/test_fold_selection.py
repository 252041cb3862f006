"""experiments/fold_selection.py: an option is never chosen on the patients it is scored on."""
import pytest

from experiments import fold_selection
from model.errors import InputError


def run_of(dice_per_fold, held_out=(('a', 'b'), ('c', 'd'), ('e', 'f'))):
    return {'folds': [{'test': list(patients), 'rows': [{'WT_dice': dice, 'patient': name} for name in patients]}
                      for dice, patients in zip(dice_per_fold, held_out)]}


def test_each_fold_gets_the_best_candidate_of_the_other_folds():
    candidates = {'t0.5': run_of([0.75, 0.75, 0.75]), 't0.3': run_of([1.0, 0.5, 0.625])}
    # fold 0 sees 0.75 vs 0.5625; fold 1 sees 0.75 vs 0.8125; fold 2 sees 0.75 vs 0.75 (tie: first)
    choices = fold_selection.choose_per_fold(candidates)
    assert choices == [(0, 't0.5'), (1, 't0.3'), (2, 't0.5')]
    scores = [row['WT_dice'] for row in fold_selection.selected_rows(candidates, choices)]
    assert scores == [0.75, 0.75, 0.5, 0.5, 0.75, 0.75]


def test_a_candidate_without_scores_elsewhere_is_never_chosen():
    candidates = {'empty': run_of([float('nan')] * 3), 'scored': run_of([0.5] * 3)}
    assert [name for _, name in fold_selection.choose_per_fold(candidates)] == ['scored'] * 3


def test_candidates_must_hold_out_the_same_patients():
    candidates = {'t0.5': run_of([0.8] * 3), 't0.3': run_of([0.8] * 3, (('a', 'c'), ('b', 'd'), ('e', 'f')))}
    with pytest.raises(InputError, match='t0.3: holds out other patients than t0.5'):
        fold_selection.choose_per_fold(candidates)
    reordered = run_of([0.8] * 3, (('b', 'a'), ('d', 'c'), ('f', 'e')))
    assert len(fold_selection.choose_per_fold({'t0.5': run_of([0.8] * 3), 't0.3': reordered})) == 3
