"""The training ablations behind Train.py's defaults: every row is one cross-validation run of the same folds and budget.

Each row states the create_pascal_tf_record.py, Train.py and Inference.py flags it runs with, so a rerun
runs the same recipe when the scripts' defaults move; rows that only change test-time options reuse the
trained folds of another row (--trained-from), so they compare identical networks. A finished row's
results.json is copied to experiments/results/<row>.json, which is committed; the rows table of
docs/ablations.md and the training-defaults table of docs/accuracy.md (each of Train.py's options
against its simpler alternative, by experiments/rule.py) are rendered from those files only.

    python experiments/ablations.py run dice-off      # about an hour on 2 cores; resumable
    python experiments/ablations.py table             # rewrite both tables
"""
import collections
import json
import os
import shutil
import statistics
import sys

from bench.sections import replace_sections
from experiments import cross_validation, rule
from model import cli
from model.atomic import atomic_output
from model.errors import InputError

RUNS_DIR = 'experiments/runs'
RESULTS_DIR = 'experiments/results'
REPORT = 'docs/accuracy.md'      # the training-defaults table
HISTORY = 'docs/ablations.md'    # the rows table
# Train.py's defaults from row budget-recipe until intensity-jitter-0.5; rows append flags, the last wins.
BUDGET_RECIPE = ('--crop-size 160 --learning-rate 1e-3 --lr-decay cosine --dice-weight 1 --tumour-fraction 0.5 '
                 '--intensity-scale 0.1 --intensity-shift 0.1')
JITTER_RECIPE = BUDGET_RECIPE + ' --intensity-scale 0.5 --intensity-shift 0.5'   # until learning-rate-3e-3
RATE_RECIPE = JITTER_RECIPE + ' --learning-rate 3e-3'
HISTOGRAM = '--normalization histogram'   # create_pascal_tf_record.py's


def test_time(threshold=None, tta='none', component_fraction=0.0):
    """Inference.py flags stating a row's decoding, test-time augmentation and component removal, so
    the row does not depend on Inference.py's defaults: argmax when `threshold` is None, else region
    decoding with tumour where P(WT) > threshold; `tta` as Inference.py's --tta; tumour components
    smaller than `component_fraction` of the largest removed."""
    decoding = '--decoding argmax' if threshold is None else '--decoding regions --tumour-threshold {:g}'.format(threshold)
    return '{} --tta {} --min-component-fraction {:g}'.format(decoding, tta, component_fraction)


ARGMAX = test_time()
LOW_THRESHOLD_FLIP = test_time(0.2, tta='flip')   # Inference.py's defaults when rows defaults-2 to lr-decay-none ran
ZOOMS_COMPONENTS = test_time(0.2, tta='zooms', component_fraction=0.1)   # ... and when the last three ran

Row = collections.namedtuple('Row', 'name change train_flags inference_flags trained_from convert_flags', defaults=('',))
ROWS = (
    Row('budget-recipe', 'crop 160, Adam 1e-3 cosine, CE + soft Dice, half of each batch tumour slices, intensity '
        'jitter 0.1; argmax', BUDGET_RECIPE, ARGMAX, ''),
    Row('tumour-weight-2', 'budget recipe, cross-entropy weight 2 on tumour classes',
        BUDGET_RECIPE + ' --class-weights 1,2,2,2,2', ARGMAX, ''),
    Row('paper-training', "the paper's training: crop 224, Adam 1e-4 constant, cross-entropy only",
        BUDGET_RECIPE + ' --crop-size 224 --learning-rate 1e-4 --lr-decay none --dice-weight 0', ARGMAX, ''),
    Row('defaults', 'the budget recipe trained again on a faster CPU (the baseline of the jitter rows)',
        BUDGET_RECIPE, ARGMAX, ''),
    Row('intensity-jitter-0.5', 'budget recipe, intensity scale and shift jitter 0.5 (from 0.1)',
        JITTER_RECIPE, ARGMAX, ''),
    Row('intensity-jitter-0.5-rerun', 'intensity-jitter-0.5 trained again, on an AVX-512 CPU like the first',
        JITTER_RECIPE, ARGMAX, ''),
    Row('defaults-2', 'intensity-jitter-0.5 trained once more, its networks kept for the test-time rows',
        JITTER_RECIPE, ARGMAX, ''),
    Row('defaults-2-regions-t0.2-flip', '+ region decoding, tumour where P(WT) > 0.2, test-time flip',
        '', LOW_THRESHOLD_FLIP, 'defaults-2'),
    Row('dice-off', 'jitter 0.5 without the soft Dice term (cross-entropy only); regions at 0.2, flip',
        JITTER_RECIPE + ' --dice-weight 0', LOW_THRESHOLD_FLIP, ''),
    Row('dice-off-argmax', '+ argmax, no flip', '', ARGMAX, 'dice-off'),
    Row('natural-sampling', 'jitter 0.5 with tumour slices at their natural share (no oversampling); regions at '
        '0.2, flip', JITTER_RECIPE + ' --tumour-fraction 0', LOW_THRESHOLD_FLIP, ''),
    Row('natural-sampling-argmax', '+ argmax, no flip', '', ARGMAX, 'natural-sampling'),
    Row('defaults-seed-1', 'jitter 0.5 trained with --seed 1 (the first seeded training); regions at 0.2, flip',
        JITTER_RECIPE + ' --seed 1', LOW_THRESHOLD_FLIP, ''),
    Row('histogram-normalization', 'defaults-seed-1 on records histogram-standardised '
        '(create_pascal_tf_record.py --normalization histogram) before the z-score',
        JITTER_RECIPE + ' --seed 1', LOW_THRESHOLD_FLIP, '', HISTOGRAM),
    Row('learning-rate-3e-3', 'defaults-seed-1 at peak learning rate 3e-3 (from 1e-3), cosine decay as before',
        RATE_RECIPE + ' --seed 1', LOW_THRESHOLD_FLIP, ''),
    Row('lr-decay-none', 'learning-rate-3e-3 held constant instead of the cosine decay',
        RATE_RECIPE + ' --seed 1 --lr-decay none', LOW_THRESHOLD_FLIP, ''),
    Row('learning-rate-3e-3-avx2', 'learning-rate-3e-3 trained on a CPU without AVX-512, at about a third of the '
        'slices/s; argmax, no flip', RATE_RECIPE + ' --seed 1', ARGMAX, ''),
    Row('learning-rate-3e-3-avx2-zooms-5', '+ regions at 0.2, tumour components under 0.1 of the largest removed, '
        '--tta zooms (flip and zooms of 0.8 to 1.2)', '', ZOOMS_COMPONENTS, 'learning-rate-3e-3-avx2'),
    Row('histogram-3e-3-avx2', 'learning-rate-3e-3-avx2 on histogram-standardised records, decoded as '
        'learning-rate-3e-3-avx2-zooms-5', RATE_RECIPE + ' --seed 1', ZOOMS_COMPONENTS, '', HISTOGRAM),
)
# Train.py's options against their simpler alternative, by the rule (experiments/rule.py):
# (option, its current default, row with the option, row with the simpler alternative).
RULE_CHECKS = (
    ('soft Dice term (weight 1)', 'off', 'defaults-2', 'dice-off-argmax'),
    ('soft Dice term (weight 1), regions decoding', 'off', 'defaults-2-regions-t0.2-flip', 'dice-off'),
    ('tumour oversampling (half of each batch)', 'off', 'defaults-2', 'natural-sampling-argmax'),
    ('tumour oversampling (half of each batch), regions decoding', 'off', 'defaults-seed-1', 'natural-sampling'),
    ('intensity jitter 0.5 (from 0.1)', '0.5', 'intensity-jitter-0.5', 'defaults'),
    ('intensity jitter 0.5 (from 0.1), second training', '0.5', 'intensity-jitter-0.5-rerun', 'defaults'),
    ('peak learning rate 3e-3 (from 1e-3)', '3e-3', 'learning-rate-3e-3', 'defaults-seed-1'),
    ('cosine decay (from constant)', 'cosine', 'learning-rate-3e-3', 'lr-decay-none'),
    ("crop 160, Adam 1e-3 cosine (from the paper's crop 224, 1e-4 constant)", 'crop 160', 'budget-recipe',
     'paper-training'),
    ('histogram standardisation (from z-score alone)', 'off', 'histogram-normalization', 'defaults-seed-1'),
    ('histogram standardisation (from z-score alone), second training', 'off', 'histogram-3e-3-avx2',
     'learning-rate-3e-3-avx2-zooms-5'),
    ('class weight 2 on tumour (from 1)', 'off', 'tumour-weight-2', 'budget-recipe'),
)
COLUMNS = (('WT_dice', 'WT Dice'), ('WT_ppv', 'WT PPV'), ('WT_sensitivity', 'WT sens.'),
           ('TC_dice', 'TC Dice'), ('ET_dice', 'ET Dice'))


def row_named(name):
    """The Row called `name`."""
    for row in ROWS:
        if row.name == name:
            return row
    raise InputError('{}: no such ablation row (rows: {})'.format(name, ', '.join(r.name for r in ROWS)))


def cross_validation_argv(row):
    """experiments/cross_validation.py arguments of a row."""
    argv = ['--work-dir', os.path.join(RUNS_DIR, row.name)]
    if row.convert_flags:
        argv.append('--convert-flags=' + row.convert_flags)
    if row.train_flags:
        argv.append('--train-flags=' + row.train_flags)
    if row.inference_flags:
        argv.append('--inference-flags=' + row.inference_flags)
    if row.trained_from:
        argv += ['--trained-from', os.path.join(RUNS_DIR, row.trained_from)]
    return argv


def run(row):
    """Run a row (after the row it reuses, when that has no results yet) and keep its results."""
    if row.trained_from and not os.path.exists(os.path.join(RUNS_DIR, row.trained_from, 'results.json')):
        run(row_named(row.trained_from))
    code = cross_validation.main(cross_validation_argv(row))
    if code:
        raise SystemExit(code)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with atomic_output(os.path.join(RESULTS_DIR, row.name + '.json')) as temporary:
        shutil.copyfile(os.path.join(RUNS_DIR, row.name, 'results.json'), temporary)


def load_results(results_dir=RESULTS_DIR):
    """{row name: results document} of the registered rows with a results file, in registry order."""
    results = {}
    for row in ROWS:
        path = os.path.join(results_dir, row.name + '.json')
        if os.path.exists(path):
            with open(path) as stream:
                results[row.name] = json.load(stream)
    return results


def pooled_cells(patients):
    """The COLUMNS' mean +- std over patient rows, as table cells."""
    return ' | '.join('{:.3f} ± {:.3f}'.format(*cross_validation.mean_and_std(patients, column))
                      for column, _ in COLUMNS)


def machine_cell(folds):
    """The CPU the folds were trained on, with its vector extensions where recorded ('not
    recorded' for runs from before the CPU was)."""
    cpus = set()
    for fold in folds:
        if 'machine' in fold:
            extensions = fold['machine'].get('cpu_vector_extensions')
            cpus.add(fold['machine']['cpu_model'] + (' ({})'.format(' '.join(extensions)) if extensions else ''))
    return ', '.join(sorted(cpus)) or 'not recorded'


def table(results):
    """Markdown table of every row with results: pooled mean +- std over the held-out patients,
    steps and training rate per fold, and the CPU."""
    lines = ['| row | change | ' + ' | '.join(title for _, title in COLUMNS)
             + ' | steps per fold | train slices/s | CPU |', '|' + '---|' * (len(COLUMNS) + 5)]
    commands = []
    for name, run_results in results.items():
        folds = run_results['folds']
        patients = cross_validation.held_out_rows(folds)
        steps = '/'.join(str(fold['steps']) for fold in folds)
        rate = sum(fold['train_slices_per_s'] for fold in folds) / len(folds)
        lines.append('| {} | {} | {} | {} | {:.1f} | {} |'.format(
            name, row_named(name).change, pooled_cells(patients), steps, rate, machine_cell(folds)))
        commands.append('- {}: `{}`'.format(name, run_results['command']))
    return '\n'.join(lines + ['', 'Commands, as run:', ''] + commands)


def paired_differences(results, baseline, metric):
    """(mean difference, its standard error, patients better, patients compared) of `metric`
    between two runs' rows of the same held-out patients (NaN pairs skipped)."""
    if [sorted(fold['test']) for fold in results['folds']] != [sorted(fold['test']) for fold in baseline['folds']]:
        raise InputError('the row holds out other patients than its baseline; a pair must share its folds')
    others = {row['patient']: row[metric] for row in cross_validation.held_out_rows(baseline['folds'])}
    differences = [row[metric] - others[row['patient']] for row in cross_validation.held_out_rows(results['folds'])
                   if row[metric] == row[metric] and others[row['patient']] == others[row['patient']]]
    mean = statistics.fmean(differences) if differences else float('nan')
    error = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else float('nan')
    return mean, error, sum(d > 0 for d in differences), len(differences)


def rule_table(results):
    """Markdown table of each RULE_CHECKS entry with results: the option's paired WT Dice gain and
    WT PPV change over its simpler alternative, TC Dice, and whether it passes the rule."""
    lines = ['| option | default | rows | WT Dice gain ± s.e. (better) | WT PPV change | TC Dice change | passes |',
             '|' + '---|' * 7]
    for option, default, name, simpler in RULE_CHECKS:
        if name in results and simpler in results:
            gain, error, better, count = paired_differences(results[name], results[simpler], 'WT_dice')
            ppv = paired_differences(results[name], results[simpler], 'WT_ppv')[0]
            core = paired_differences(results[name], results[simpler], 'TC_dice')[0]
            lines.append('| {} | {} | {} vs {} | {:+.3f} ± {:.3f} ({}/{}) | {:+.3f} | {:+.3f} | {} |'.format(
                option, default, name, simpler, gain, error, better, count, ppv, core,
                'yes' if rule.passes(gain, error, ppv) else 'no'))
    return '\n'.join(lines)


def write_tables(report=REPORT, history=HISTORY, results_dir=RESULTS_DIR):
    """Replace the text between each generated section's markers with its table: the rows' in
    `history`, the training defaults' in `report`; returns the tables."""
    results = load_results(results_dir)
    rendered = {document: collections.OrderedDict((section, render(results)) for section, render in sections)
                for document, sections in ((history, (('ablation table', table),)),
                                           (report, (('training defaults', rule_table),)))}
    for document, tables in rendered.items():
        replace_sections(document, tables)
    return '\n\n'.join(body for tables in rendered.values() for body in tables.values())


def parse_args(argv):
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument('action', choices=('run', 'table'))
    parser.add_argument('rows', nargs='*', help='rows to run (run)')
    return parser.parse_args(argv)


@cli.reports_bad_input
def main(argv=None):
    args = parse_args(argv)
    if args.action == 'run':
        for name in args.rows:
            run(row_named(name))
    print(write_tables())
    return 0


if __name__ == '__main__':
    sys.exit(main())
