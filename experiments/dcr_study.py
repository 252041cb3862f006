"""The paper's parameter study (issue #28): DCR-A against its refine types, dilations and baselines.

Every row is one run of experiments/cross_validation.py on the same seeded folds, trained for the
same number of steps with Train.py's defaults but for the row's own network flags, and predicted
with Inference.py's defaults (stated explicitly, so a row does not move when they do). A finished
row's results.json is kept as experiments/results/study-<row>.json; the table in docs/accuracy.md,
image/dcr_study.png and README.md's claims section are rendered from those files only.

A row took 45 minutes (AVX-512 with bfloat16) to three hours on 2 cores. Until it is complete,
each of its finished folds is kept as experiments/results/study-<row>-folds/fold<k>.json (commit
them): a later run, on this machine or another, restores them and trains only the folds still
missing; an interrupted fold resumes from its checkpoint where experiments/runs/ still holds it.

    python experiments/dcr_study.py run dcr-A      # resumable, fold by fold
    python experiments/dcr_study.py run --all      # every row without results, in order
    python experiments/dcr_study.py render         # tables, figure and README section
"""
import collections
import glob
import json
import os
import shlex
import shutil
import statistics
import sys

import model  # noqa: F401  (sets TensorFlow's environment, so before tensorflow)
import numpy as np
import tensorflow.compat.v1 as tf

import Train
from bench.common import vector_level
from bench.sections import replace_sections
from experiments import ablations, cross_validation
from model import cli
from model.atomic import atomic_output
from model.dcr import build_network
from model.errors import InputError
from model.figures import save_grouped_bars

RUNS_DIR = 'experiments/runs'
RESULTS_DIR = 'experiments/results'
REPORT = 'docs/accuracy.md'          # its 'dcr study' section
README = 'README.md'                 # its 'claims' section
FIGURE = 'image/dcr_study.png'
NESTED_RESULTS = 'experiments/results/nested-selection.json'   # the headline claim's measurement
NUM_STEPS = 1500   # per fold at batch 8, as experiments/nested_selection.py trains the defaults
# Inference.py's defaults since the nested selection, spelled out.
INFERENCE_FLAGS = '--decoding regions --tumour-threshold 0.5 --tta flip --min-component-fraction 0'
BASELINE = 'dcr-A'
METRICS = (('WT_dice', 'WT Dice'), ('WT_ppv', 'WT PPV'), ('TC_dice', 'TC Dice'), ('ET_dice', 'ET Dice'))
DIFFERENCES = (('WT_dice', 'WT Dice'), ('WT_ppv', 'WT PPV'))   # paired against BASELINE
# The paper's claims about its parameters: (claim, the rows that test it against BASELINE).
CLAIMS = (('the refine branches help (DCR-A against none)', ('dcr-none',)),
          ('refine type A against B and C', ('dcr-B', 'dcr-C')),
          ('dilation rates 12,6,3,1 against none and the released 12,6,4,1', ('dilations-1', 'dilations-12-6-4-1')),
          ('DCR-A against a U-Net (not in the paper)', ('unet',)))

StudyRow = collections.namedtuple('StudyRow', 'name network train_flags')
ROWS = (
    StudyRow('dcr-A', 'DCR-A, dilations 12,6,3,1 (the defaults)', ''),
    StudyRow('dcr-none', 'no refine branches (encoder skips through a 1x1 conv)', '--dcr-type none'),
    StudyRow('dcr-B', 'DCR-B (1x1 refine)', '--dcr-type B'),
    StudyRow('dcr-C', 'DCR-C (dilated 3x3 refine)', '--dcr-type C'),
    StudyRow('dilations-1', 'DCR-A, dilations 1,1,1,1 (no dilation)', '--dilations 1,1,1,1'),
    StudyRow('dilations-12-6-4-1', "DCR-A, the released code's dilations 12,6,4,1", '--dilations 12,6,4,1'),
    StudyRow('unet', '2-D U-Net, same input, loss and decoding', '--architecture unet'),
)


def row_named(name):
    """The StudyRow called `name`."""
    for row in ROWS:
        if row.name == name:
            return row
    raise InputError('{}: no such study row (rows: {})'.format(name, ', '.join(row.name for row in ROWS)))


def results_path(row, results_dir=RESULTS_DIR):
    """Where a row's results document is kept."""
    return os.path.join(results_dir, 'study-{}.json'.format(row.name))


def work_dir(row, runs_dir=RUNS_DIR):
    """The cross-validation work folder of a row."""
    return os.path.join(runs_dir, 'study-' + row.name)


def kept_folds_dir(row, results_dir=RESULTS_DIR):
    """Where the finished folds of a row that is not complete are kept."""
    return os.path.join(results_dir, 'study-{}-folds'.format(row.name))


def keep_finished_folds(row, runs_dir=RUNS_DIR, results_dir=RESULTS_DIR):
    """Copy the summary of each finished fold of a row's work folder to kept_folds_dir; returns
    how many folds are kept."""
    kept = kept_folds_dir(row, results_dir)
    finished = sorted(glob.glob(os.path.join(work_dir(row, runs_dir), 'fold*', 'summary.json')))
    for summary in finished:
        os.makedirs(kept, exist_ok=True)
        with atomic_output(os.path.join(kept, os.path.basename(os.path.dirname(summary)) + '.json')) as temporary:
            shutil.copyfile(summary, temporary)
    return len(glob.glob(os.path.join(kept, 'fold*.json')))


def restore_kept_folds(row, runs_dir=RUNS_DIR, results_dir=RESULTS_DIR):
    """Put the kept fold summaries of a row into its work folder, where cross-validation skips
    their folds; returns the names of the folds restored."""
    restored = []
    for kept in sorted(glob.glob(os.path.join(kept_folds_dir(row, results_dir), 'fold*.json'))):
        fold = os.path.splitext(os.path.basename(kept))[0]
        summary = os.path.join(work_dir(row, runs_dir), fold, 'summary.json')
        if not os.path.exists(summary):
            os.makedirs(os.path.dirname(summary), exist_ok=True)
            with atomic_output(summary) as temporary:
                shutil.copyfile(kept, temporary)
            restored.append(fold)
    return restored


def cross_validation_argv(row, num_steps=NUM_STEPS):
    """experiments/cross_validation.py arguments of a row."""
    argv = ['--work-dir', work_dir(row), '--num-steps', str(num_steps),
            '--inference-flags=' + INFERENCE_FLAGS]
    if row.train_flags:
        argv.append('--train-flags=' + row.train_flags)
    return argv


def run(row):
    """Run a row's cross-validation, skipping the folds kept from earlier runs; keep its results
    document when it is complete, else its finished folds (also when interrupted)."""
    restored = restore_kept_folds(row)
    if restored:
        print('{}: {} kept from an earlier run'.format(row.name, ', '.join(restored)))
    try:
        code = cross_validation.main(cross_validation_argv(row))
    finally:
        print('{}: {} finished folds kept in {}'.format(row.name, keep_finished_folds(row), kept_folds_dir(row)))
    if code:
        raise SystemExit(code)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with atomic_output(results_path(row)) as temporary:
        shutil.copyfile(os.path.join(work_dir(row), 'results.json'), temporary)
    shutil.rmtree(kept_folds_dir(row))   # results.json holds every fold


def load_results(results_dir=RESULTS_DIR):
    """{row name: results document} of the rows with a results file, in registry order."""
    results = {}
    for row in ROWS:
        if os.path.exists(results_path(row, results_dir)):
            with open(results_path(row, results_dir)) as stream:
                results[row.name] = json.load(stream)
    return results


def run_command(*names):
    """The command that runs the rows called `names`."""
    return 'python experiments/dcr_study.py run ' + ' '.join(names)


def weight_count(row):
    """Trainable weights of a row's network at full size (Train.py's defaults and the row's flags)."""
    config = Train.network_config(Train.resolve_recipe(Train.parse_args(shlex.split(row.train_flags))))
    with tf.Graph().as_default():
        build_network(tf.placeholder(tf.float32, [None, 224, 224, 4]), config, is_training=False)
        return sum(int(np.prod(variable.shape.as_list())) for variable in tf.trainable_variables())


def standard_error(patients, metric):
    """Standard error of the mean of `metric` over patient rows (NaN rows skipped)."""
    values = [row[metric] for row in patients if row[metric] == row[metric]]
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float('nan')


def verdict(difference, error):
    """'no difference measured' within two standard errors, else 'higher' or 'lower'."""
    if not abs(difference) > 2 * error:
        return 'no difference measured'
    return 'higher' if difference > 0 else 'lower'


def paired_to_baseline(results, name, metric):
    """('+0.004 ± 0.002', verdict, patients better, patients compared): a row's paired difference to BASELINE."""
    mean, error, better, count = ablations.paired_differences(results[name], results[BASELINE], metric)
    return '{:+.3f} ± {:.3f}'.format(mean, error), verdict(mean, error), better, count


def difference_cell(results, name, metric):
    """'+0.004 ± 0.002 (7/12): verdict' of a row's paired difference to BASELINE in `metric`."""
    difference, judged, better, count = paired_to_baseline(results, name, metric)
    return '{} ({}/{}): {}'.format(difference, better, count, judged)


def claim_cell(results, name):
    """'dcr-none: Dice -0.028 ± 0.013, lower; PPV ...': a row's WT differences to BASELINE, for the README."""
    parts = ['{} {}, {}'.format(title.split()[-1], *paired_to_baseline(results, name, metric)[:2])
             for metric, title in DIFFERENCES]
    return '{}: {}'.format(name, '; '.join(parts))


def kept_fold_counts(results_dir=RESULTS_DIR):
    """{row name: number of finished folds kept}; 0 for a complete row, whose kept folds are removed."""
    return {row.name: len(glob.glob(os.path.join(kept_folds_dir(row, results_dir), 'fold*.json'))) for row in ROWS}


def training_rate_cell(folds):
    """Mean training slices/s of the folds, per class of CPU they ran on ('4.3 AVX2; 14.5 AVX-512')."""
    rates = collections.defaultdict(list)
    for fold in folds:
        machine = fold.get('machine')
        cpu = vector_level(machine.get('cpu_vector_extensions', [])) if machine else 'CPU not recorded'
        rates[cpu].append(fold['train_slices_per_s'])
    return '; '.join('{:.1f} {}'.format(statistics.fmean(values), cpu) for cpu, values in sorted(rates.items()))


def study_table(results, kept_folds=None):
    """Markdown table of the rows with results: metrics, paired differences to BASELINE, weights and
    training rate on each CPU class; then the rows still to run, with their commands and how many
    folds they have kept."""
    titles = [title for _, title in METRICS] + ['{} − {}'.format(title, BASELINE) for _, title in DIFFERENCES]
    lines = ['| row | network | ' + ' | '.join(titles) + ' | weights | train slices/s (CPU) |',
             '|' + '---|' * (len(titles) + 4)]
    commands, missing = [], []
    for row in ROWS:
        if row.name not in results:
            kept = (kept_folds or {}).get(row.name, 0)
            progress = ' ({} of {} folds kept)'.format(kept, cross_validation.FOLDS) if kept else ''
            missing.append('- {}: `{}`{}'.format(row.name, run_command(row.name), progress))
            continue
        folds = results[row.name]['folds']
        patients = cross_validation.held_out_rows(folds)
        cells = ['{:.3f} ± {:.3f}'.format(*cross_validation.mean_and_std(patients, metric)) for metric, _ in METRICS]
        cells += [difference_cell(results, row.name, metric) if row.name != BASELINE and BASELINE in results else ''
                  for metric, _ in DIFFERENCES]
        lines.append('| {} | {} | {} | {:.1f} M | {} |'.format(row.name, row.network, ' | '.join(cells),
                                                              weight_count(row) / 1e6, training_rate_cell(folds)))
        commands.append('- {}: `{}`'.format(row.name, run_command(row.name)))
    text = lines + ['', 'Metrics: mean ± std over the held-out patients; differences: mean ± standard error of the '
                    'patient-paired difference (patients better / compared). Training rates are '
                    'comparable only within a CPU class: the study ran on two machines. Commands:', ''] + commands
    if not commands:
        text = ['No row has run yet.']
    if missing:
        text += ['', 'Registered, not run yet:', ''] + missing
    return '\n'.join(text)


def save_figure(results, path=FIGURE):
    """image/dcr_study.png: each row's WT/TC/ET Dice, with standard errors over its patients."""
    names = [row.name for row in ROWS if row.name in results]
    patients = {name: cross_validation.held_out_rows(results[name]['folds']) for name in names}
    metrics = [metric for metric, _ in METRICS if metric.endswith('dice')]
    save_grouped_bars(names, [title for metric, title in METRICS if metric in metrics],
                      [[cross_validation.mean_and_std(patients[name], metric)[0] for metric in metrics]
                       for name in names],
                      [[standard_error(patients[name], metric) for metric in metrics] for name in names],
                      path, 'mean over held-out patients (± standard error)')


def claims_table(results, nested):
    """README's table: each claim of the paper, what was measured and the command."""
    lines = ['| the paper\'s claim | measured (WT; paired difference to DCR-A ± standard error) | command |',
             '|---|---|---|']
    for claim, names in CLAIMS:
        measured = [claim_cell(results, name) for name in names if name in results and BASELINE in results]
        missing = [name for name in names if name not in results or BASELINE not in results]
        if missing:
            measured.append('not measured yet: ' + ', '.join(missing))
        lines.append('| {} | {} | `{}` |'.format(claim, '<br>'.join(measured), run_command(BASELINE, *names)))
    scores = nested['nested']
    lines.append('| WT Dice 0.87 and PPV 0.91 (BRATS2015 test set) | {:.3f} and {:.3f}: the defaults, nested '
                 'cross-validation on 12 real BraTS 2018 patients | `{}` |'.format(
                     scores['WT_dice'][0], scores['WT_ppv'][0], nested['command']))
    return '\n'.join(lines)


def render(results_dir=RESULTS_DIR, report=REPORT, readme=README, figure=FIGURE, nested_path=NESTED_RESULTS):
    """Rewrite the study section of `report`, the claims section of `readme` and the figure."""
    results = load_results(results_dir)
    with open(nested_path) as stream:
        nested = json.load(stream)
    replace_sections(report, {'dcr study': study_table(results, kept_fold_counts(results_dir))})
    replace_sections(readme, {'claims': claims_table(results, nested)})
    if results:
        save_figure(results, figure)


def parse_args(argv):
    parser = cli.parser(__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest='command', required=True)
    run_parser = commands.add_parser('run', help='train and score rows')
    run_parser.add_argument('rows', nargs='*', help='row names ({})'.format(', '.join(row.name for row in ROWS)))
    run_parser.add_argument('--all', action='store_true', help='every row without a results file, in order')
    commands.add_parser('render', help='rewrite the study table, figure and README section')
    return parser.parse_args(argv)


@cli.reports_bad_input
def main(argv=None):
    args = parse_args(argv)
    if args.command == 'run':
        rows = [row for row in ROWS if not os.path.exists(results_path(row))] if args.all else \
            [row_named(name) for name in args.rows]
        if not rows:
            raise InputError('run: name rows or give --all')
        for row in rows:
            run(row)
    cli.graph_mode()
    render()
    print('rewrote the study sections of {} and {}, and {}'.format(REPORT, README, FIGURE))
    return 0


if __name__ == '__main__':
    sys.exit(main())
