"""Patient-level k-fold cross-validation on real BraTS cases, through the project's scripts.

The cases are indexed once (readfile.py's lists). For each fold: the fold's training patients are
converted by create_pascal_tf_record.py, Train.py trains under a wall-clock budget (or to --num-steps), Inference.py
segments the held-out patients and Evaluate.py scores them. A fold whose summary.json exists
is not rerun, and an interrupted fold resumes from its last checkpoint. The results table
(per fold, and mean +- std over the held-out patients) goes to WORK/results.md and
WORK/results.json, with the command that reproduces it.

    python experiments/cross_validation.py --work-dir experiments/runs/baseline
    python experiments/cross_validation.py --work-dir experiments/runs/dice --train-flags='--dice-weight 1'

With --ensemble K, each fold trains K networks one after another, each for 1/K of the budget,
and Inference.py averages their probabilities.

With --trained-from, a run reuses the checkpoints of an earlier run's folds and only infers and
evaluates: the way to compare test-time options on identical networks.

    python experiments/cross_validation.py --work-dir experiments/runs/flip \
        --trained-from experiments/runs/baseline --inference-flags='--tta flip'
"""
import json
import os
import random
import shlex
import sys
import time

import model  # noqa: F401  (sets TensorFlow's environment, so before tensorflow)
import tensorflow.compat.v1 as tf

import Evaluate
import Inference
import Train
import create_pascal_tf_record
import readfile
from bench.common import machine
from model import checkpoints, cli
from model.atomic import atomic_output
from model.brats import find_patients
from model.errors import InputError
from model.lists import read_patient_list, write_patient_list
from model.metrics import mean_row

DATA_DIR = os.path.join('..', 'shared', 'data', 'brats2018_sample')
WORK_DIR = 'experiments/runs/baseline'
FOLDS = 3
SEED = 0
BUDGET_MINUTES = 20.0
NUM_STEPS = 0                # > 0: train every fold to this global step instead of for the budget
BATCH_SIZE = 8
CONVERT_FLAGS = ''
TRAIN_FLAGS = ''
INFERENCE_FLAGS = ''
ENSEMBLE = 1                # networks per fold (each trains for budget / ENSEMBLE minutes)
VAL_PATIENTS = 0            # training patients per fold held back as Train.py's validation list (CKPT/best/)
# The grade is not in the BraTS 2018 sample's folder names; these two cases are its LGGs.
LGG_CASES = 'Brats18_TCIA10_628_1,Brats18_TCIA13_623_1'
REPORTED = ('WT_dice', 'WT_ppv', 'WT_sensitivity', 'TC_dice', 'TC_ppv', 'TC_sensitivity',
            'ET_dice', 'ET_ppv', 'ET_sensitivity')


def parse_args(argv):
    parser = cli.parser(__doc__.splitlines()[0])
    add = parser.add_argument
    add('--data-dir', default=DATA_DIR, help='folder of labelled cases')
    add('--work-dir', default=WORK_DIR, help='everything of this experiment goes here')
    add('--folds', type=int, default=FOLDS)
    add('--seed', type=int, default=SEED, help='seed of the fold assignment')
    add('--budget-minutes', type=float, default=BUDGET_MINUTES, help='training time per fold')
    add('--num-steps', type=int, default=NUM_STEPS,
        help='> 0: train every fold to this global step, however long it takes, instead of for --budget-minutes')
    add('--batch-size', type=int, default=BATCH_SIZE)
    add('--ensemble', type=int, default=ENSEMBLE, help='networks trained per fold, one after another, '
        'sharing the budget; Inference.py averages their probabilities')
    add('--convert-flags', default=CONVERT_FLAGS, help='extra create_pascal_tf_record.py flags, one string')
    add('--train-flags', default=TRAIN_FLAGS, help='extra Train.py flags, one string')
    add('--inference-flags', default=INFERENCE_FLAGS, help='extra Inference.py flags, one string')
    add('--val-patients', type=int, default=VAL_PATIENTS,
        help="HGG training patients per fold held back as Train.py's validation list, which keeps "
        'the best checkpoint in CKPT/best/ (Inference.py uses it with --checkpoint best in --inference-flags)')
    add('--trained-from', default='', help="an earlier run's work folder whose trained folds are reused "
        '(same folds); only inference and evaluation run')
    add('--lgg', type=name_set, default=LGG_CASES, help='comma-separated LGG case names, spread across folds')
    return parser.parse_args(argv)


def name_set(text):
    """The set of comma-separated names in `text`."""
    return frozenset(text.split(','))


def assign_folds(patients, folds, seed, lgg_names):
    """Seeded patient-level folds; LGG cases are dealt first so they spread across folds."""
    rng = random.Random(seed)
    lgg = sorted((p for p in patients if p.name in lgg_names), key=lambda p: p.name)
    hgg = sorted((p for p in patients if p.name not in lgg_names), key=lambda p: p.name)
    rng.shuffle(lgg)
    rng.shuffle(hgg)
    assignment = [[] for _ in range(folds)]
    for index, patient in enumerate(lgg + hgg):
        assignment[index % folds].append(patient)
    return assignment


def split_validation(train_patients, count, seed, lgg_names):
    """(training, validation) patients of a fold: `count` seeded HGG cases are held back."""
    candidates = sorted((p for p in train_patients if p.name not in lgg_names), key=lambda p: p.name)
    if not 0 <= count < len(candidates):
        raise InputError('--val-patients {}: a fold has {} HGG training patients'.format(count, len(candidates)))
    return held_back_from(train_patients, {p.name for p in random.Random(seed).sample(candidates, count)})


def held_back_from(train_patients, names):
    """(training, validation) patients of a fold whose validation patients are `names`."""
    return ([p for p in train_patients if p.name not in names], [p for p in train_patients if p.name in names])


def run_script(script, argv, log):
    """Run a script's main in-process; log its command line; raise on a non-zero exit."""
    command = 'python {}.py {}'.format(script.__name__, ' '.join(shlex.quote(a) for a in argv))
    print('\n$ ' + command, flush=True)
    log.append(command)
    code = script.main(argv)
    if code:
        raise SystemExit('{} failed with exit code {}'.format(command, code))


def checkpoint_folders(fold_dir, members):
    """A fold's checkpoint folders: FOLD/checkpoints, or FOLD/checkpoints/member<k> for an ensemble."""
    ckpt = os.path.join(fold_dir, 'checkpoints')
    return [ckpt] if members == 1 else [os.path.join(ckpt, 'member{}'.format(k)) for k in range(members)]


def predict_and_score(list_path, ckpt_dirs, predictions, inference_flags, commands):
    """Inference.py (an ensemble when given several checkpoint folders) then Evaluate.py on a
    list; returns the per-patient metric rows."""
    ckpt_flags = [flag for ckpt_dir in ckpt_dirs for flag in ('--ckpt-dir', ckpt_dir)]
    run_script(Inference, ['--list', list_path] + ckpt_flags + ['--output-dir', predictions]
               + shlex.split(inference_flags), commands)
    run_script(Evaluate, ['--list', list_path, '--pred-dir', predictions], commands)
    return [row for row in Evaluate.read_csv(os.path.join(predictions, 'metrics.csv')) if row['patient'] != 'mean']


def held_out_rows(summaries):
    """The metric rows of every held-out patient of the fold summaries."""
    return [row for summary in summaries for row in summary['rows']]


def run_fold(index, train_patients, test_patients, args):
    """Train and evaluate one fold (skipped when its metrics exist); returns its summary."""
    fold_dir = os.path.join(args.work_dir, 'fold{}'.format(index))
    summary_path = os.path.join(fold_dir, 'summary.json')
    if os.path.exists(summary_path):
        with open(summary_path) as stream:
            return json.load(stream)
    started = time.monotonic()
    lists, records = os.path.join(fold_dir, 'lists'), os.path.join(fold_dir, 'records')
    predictions = os.path.join(fold_dir, 'predictions')
    os.makedirs(lists, exist_ok=True)
    source = trained_fold(args.trained_from, index, test_patients) if args.trained_from else None
    if source:   # the lists say what the reused networks were trained and validated on
        train_patients, val_patients = held_back_from(train_patients, set(source.get('validation', [])))
        ckpt_dirs, trained_on = trained_checkpoints(args.trained_from, index, source), source.get('machine')
    else:
        train_patients, val_patients = split_validation(train_patients, args.val_patients, args.seed + index, args.lgg)
        ckpt_dirs, trained_on = checkpoint_folders(fold_dir, args.ensemble), machine()
    val_list = os.path.join(lists, 'val.txt') if val_patients else ''
    write_patient_list(train_patients, os.path.join(lists, 'train.txt'))
    write_patient_list(test_patients, os.path.join(lists, 'test.txt'))
    if val_patients:
        write_patient_list(val_patients, val_list)
    commands = []
    if not source:
        run_script(create_pascal_tf_record, ['--list', os.path.join(lists, 'train.txt'), '--output-dir', records]
                   + shlex.split(args.convert_flags), commands)
        for ckpt in ckpt_dirs:   # the fold's budget is shared by the ensemble's members
            run_script(Train, ['--train-records', os.path.join(records, 'train-*'), '--val-list', val_list,
                               '--ckpt-dir', ckpt, '--batch-size', str(args.batch_size)] + training_length(args, len(ckpt_dirs))
                       + shlex.split(args.train_flags), commands)
    rows = predict_and_score(os.path.join(lists, 'test.txt'), ckpt_dirs, predictions, args.inference_flags, commands)
    steps, train_seconds = _trained(ckpt_dirs)
    # The batch size the reused networks were trained at is the source run's, not this run's.
    rate = source['train_slices_per_s'] if source else steps * args.batch_size / train_seconds
    summary = {'fold': index, 'train': [p.name for p in train_patients],
               'validation': [p.name for p in val_patients],
               'test': [p.name for p in test_patients], 'checkpoints': ckpt_dirs, 'steps': steps,
               'train_minutes': train_seconds / 60.0,
               'train_slices_per_s': rate,
               'fold_minutes': (time.monotonic() - started) / 60.0,
               'rows': rows, 'commands': commands}
    if trained_on:
        summary['machine'] = trained_on
    write_json(summary, summary_path)
    return summary


def training_length(args, members):
    """Train.py flags of how long each of a fold's `members` networks trains: to --num-steps when
    given, else for its share of the budget."""
    if args.num_steps > 0:
        return ['--num-steps', str(args.num_steps), '--time-budget-minutes', '0']
    return ['--time-budget-minutes', str(args.budget_minutes / members), '--num-steps', '1000000']


def trained_fold(run_dir, index, test_patients):
    """The summary of fold `index` of an earlier run, checked to hold out the same patients."""
    summary_path = os.path.join(run_dir, 'fold{}'.format(index), 'summary.json')
    if not os.path.isfile(summary_path):
        raise InputError('{}: missing; --trained-from needs a finished run'.format(summary_path))
    with open(summary_path) as stream:
        source = json.load(stream)
    if sorted(source['test']) != sorted(p.name for p in test_patients):
        raise InputError('{}: fold {} held out other patients; use the same --folds, --seed and '
                         '--lgg'.format(summary_path, index))
    return source


def trained_checkpoints(run_dir, index, source):
    """The checkpoint folders of fold `index` of an earlier run, whose summary is `source`."""
    members = len(source['checkpoints']) if isinstance(source.get('checkpoints'), list) else 1
    return checkpoint_folders(os.path.join(run_dir, 'fold{}'.format(index)), members)


def finished_folds(run_dir):
    """The fold summaries of a finished run's RUN/results.json.

    Raises:
      InputError: when the run has no results.json.
    """
    results_path = os.path.join(run_dir, 'results.json')
    if not os.path.isfile(results_path):
        raise InputError('{}: missing; run experiments/cross_validation.py first'.format(results_path))
    with open(results_path) as stream:
        return json.load(stream)['folds']


def write_json(document, path):
    """Write JSON atomically."""
    with atomic_output(path) as temporary:
        with open(temporary, 'w') as stream:
            json.dump(document, stream, indent=1)


def _trained(ckpt_dirs):
    """(global steps, training seconds) of the runs' latest checkpoints, summed over the runs."""
    latest = [tf.train.latest_checkpoint(ckpt_dir) for ckpt_dir in ckpt_dirs]
    return (sum(checkpoints.step_of(path) for path in latest),
            sum(float(tf.train.load_variable(path, 'train_seconds')) for path in latest))


def mean_and_std(rows, column):
    """Mean and (population) standard deviation of a column over rows, skipping NaN."""
    values = [row[column] for row in rows if row[column] == row[column]]
    if not values:
        return float('nan'), float('nan')
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def _fold_minutes(summaries):
    """Summed wall time of folds in minutes, as text; n/a if a fold ran before it was recorded."""
    if all('fold_minutes' in summary for summary in summaries):
        return '{:.1f}'.format(sum(summary['fold_minutes'] for summary in summaries))
    return 'n/a'


def results_markdown(summaries, command):
    """The results table: per fold means, then mean +- std over all held-out patients.

    "train min" is Train.py's wall time; "fold min" is this run's last attempt at the fold
    (records, training, inference and evaluation; with --trained-from, only the last two),
    summed over the folds in the last row.
    """
    header = '| | ' + ' | '.join(REPORTED) + ' | steps | train slices/s | train min | fold min |'
    lines = [header, '|' + '---|' * (len(REPORTED) + 5)]
    for summary in summaries:
        means = mean_row(summary['rows'])
        lines.append('| fold {} | '.format(summary['fold']) + ' | '.join(
            '{:.3f}'.format(means[column]) for column in REPORTED) + ' | {} | {:.2f} | {:.1f} | {} |'.format(
            summary['steps'], summary['train_slices_per_s'], summary['train_minutes'], _fold_minutes([summary])))
    rows = held_out_rows(summaries)
    lines.append('| **all {} held-out** | '.format(len(rows)) + ' | '.join(
        '{:.3f} ± {:.3f}'.format(*mean_and_std(rows, column)) for column in REPORTED)
        + ' | | | | {} |'.format(_fold_minutes(summaries)))
    return '\n'.join(lines + ['', 'Reproduce: `{}`'.format(command)])


@cli.reports_bad_input
def main(argv=None):
    args = parse_args(argv)
    if args.ensemble < 1:
        raise InputError('--ensemble {}: train at least one network per fold'.format(args.ensemble))
    cli.graph_mode()
    command = 'python experiments/cross_validation.py ' + ' '.join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lists = os.path.join(args.work_dir, 'lists')
    readfile.write_lists(find_patients([args.data_dir]), lists, 0.0, readfile.SEED)
    patients = read_patient_list(os.path.join(lists, 'train.txt'), require_labels=True)
    folds = assign_folds(patients, args.folds, args.seed, args.lgg)
    summaries = []
    for index, test_patients in enumerate(folds):
        train_patients = [p for p in patients if p not in test_patients]
        summaries.append(run_fold(index, train_patients, test_patients, args))
    table = results_markdown(summaries, command)
    with atomic_output(os.path.join(args.work_dir, 'results.md')) as temporary:
        with open(temporary, 'w') as stream:
            stream.write(table + '\n')
    write_json({'command': command, 'folds': summaries}, os.path.join(args.work_dir, 'results.json'))
    print('\n' + table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
