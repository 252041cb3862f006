"""Dice on the training patients against Dice on the held-out ones, for a finished cross-validation.

A network that also misses tumour on the patients it was trained on is limited by training
(budget, model); one that fits them but misses on new patients is limited by the data.
For each fold, Inference.py segments the fold's training patients with the fold's checkpoints
and Evaluate.py scores them; the held-out scores come from the run itself.

    python experiments/fit_gap.py --run-dir experiments/runs/budget-recipe

Prints a markdown table and writes it to RUN/fit_gap.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cross_validation import (finished_folds, held_out_rows, mean_and_std,  # noqa: E402
                                          predict_and_score, write_run_report)
from model import cli  # noqa: E402

COLUMNS = ('WT_dice', 'WT_sensitivity', 'TC_dice', 'ET_dice')


def parse_args(argv):
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument('--run-dir', required=True, help='work folder of a finished cross_validation.py run')
    parser.add_argument('--inference-flags', default='', help='extra Inference.py flags, one string')
    return parser.parse_args(argv)


def training_rows(fold_dir, summary, inference_flags):
    """Evaluate.py rows of a fold's training patients, predicted with the fold's checkpoints."""
    checkpoints = summary.get('checkpoints', os.path.join(fold_dir, 'checkpoints'))   # older runs: their own
    checkpoints = [checkpoints] if isinstance(checkpoints, str) else checkpoints   # older runs: one folder
    return predict_and_score(os.path.join(fold_dir, 'lists', 'train.txt'), checkpoints,
                             os.path.join(fold_dir, 'train_predictions'), inference_flags, [])


def gap_table(pairs):
    """Markdown rows of (name, training rows, held-out rows) pairs: mean ± std of COLUMNS."""
    lines = ['| | ' + ' | '.join('{} train | {} held-out'.format(c, c) for c in COLUMNS) + ' |',
             '|' + '---|' * (2 * len(COLUMNS) + 1)]
    for name, trained, held_out in pairs:
        lines.append('| {} | '.format(name) + ' | '.join(
            '{:.3f} ± {:.3f} | {:.3f} ± {:.3f}'.format(*mean_and_std(trained, c), *mean_and_std(held_out, c))
            for c in COLUMNS) + ' |')
    return '\n'.join(lines)


@cli.reports_bad_input
def main(argv=None):
    args = parse_args(argv)
    cli.graph_mode()
    folds = finished_folds(args.run_dir)
    pairs = []
    for summary in folds:
        fold_dir = os.path.join(args.run_dir, 'fold{}'.format(summary['fold']))
        pairs.append(('fold {}'.format(summary['fold']), training_rows(fold_dir, summary, args.inference_flags),
                      summary['rows']))
    pairs.append(('all folds', [row for _, trained, _ in pairs for row in trained], held_out_rows(folds)))
    write_run_report(args.run_dir, 'fit_gap', argv, gap_table(pairs))
    return 0


if __name__ == '__main__':
    sys.exit(main())
