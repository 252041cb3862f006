"""Choose among options without scoring a patient with an option chosen on it.

The candidates are finished ablation rows that hold out the same patients in each fold,
typically one network's rows that differ only in an Inference.py option. For each fold, the
candidate with the highest mean WT Dice over the other folds' held-out patients is chosen, and
this fold's held-out patients are scored with it. Pooled over the folds, that estimates "tune
the option by cross-validation, then use it on new patients", which picking the best row of
the ablation table overestimates. (It is not fully nested: a fold's patients helped train the
other folds' networks, whose held-out scores make its choice.)
"""
import math

from experiments.cross_validation import held_out_rows, mean_and_std
from model.errors import InputError

SELECTED_BY = 'WT_dice'


def check_same_folds(candidates):
    """Raise InputError unless every candidate holds out the same patients in each fold."""
    names = list(candidates)
    reference = [sorted(fold['test']) for fold in candidates[names[0]]['folds']]
    for name in names[1:]:
        if [sorted(fold['test']) for fold in candidates[name]['folds']] != reference:
            raise InputError('{}: holds out other patients than {}; candidates must share their '
                             'folds'.format(name, names[0]))


def score_without_fold(results, index, metric=SELECTED_BY):
    """Mean `metric` over the held-out patients of every fold but `index`; -inf if it has none."""
    others = [fold for other, fold in enumerate(results['folds']) if other != index]
    score = mean_and_std(held_out_rows(others), metric)[0]
    return -math.inf if math.isnan(score) else score


def choose_per_fold(candidates, metric=SELECTED_BY):
    """[(fold index, chosen candidate name)] for {name: results document}, in fold order.

    Ties go to the candidate listed first.
    """
    check_same_folds(candidates)
    folds = len(next(iter(candidates.values()))['folds'])
    return [(index, max(candidates, key=lambda name: score_without_fold(candidates[name], index, metric)))
            for index in range(folds)]


def selected_rows(candidates, choices):
    """Held-out patient rows of each fold under its chosen candidate."""
    return [row for index, name in choices for row in candidates[name]['folds'][index]['rows']]
