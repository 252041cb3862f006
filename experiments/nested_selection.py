"""Nested selection of Inference.py's decoding defaults, scored on patients the choice never saw.

1. Trains the cross-validation folds (experiments/cross_validation.py: 3 seeded folds of 8
   training and 4 held-out real patients) with Train.py's defaults for a fixed number of steps.
2. Predicts each fold's held-out patients with the fold's network once per test-time
   augmentation (Inference.py --tta) and decodes the probabilities with every candidate: argmax,
   or region decoding at each tumour threshold, each with and without removal of the tumour
   components smaller than a tenth of the largest. WT/TC/ET Dice, PPV and sensitivity of every
   candidate go to WORK/scores/fold<k>.json (resumable per patient); so does the agreement of
   bfloat16 with float32 inference.
3. Selects by the rule of docs/accuracy.md ("Defaults", experiments/rule.py). From the paper's decoding (argmax, no
   test-time augmentation, no component removal), the options are decided in turn: decoding and
   threshold, then component removal, then flip. (Zooms, 5x the time, are measured against the
   chosen defaults as `--tta zooms`, never made a default.) An alternative replaces the current
   value only if, over the selection patients, it raises WT Dice by more than two standard errors
   of the patient-paired difference (and by at least 0.001) and lowers WT PPV by at most 0.01;
   among several, the one of highest WT Dice.
4. Nesting: for each outer fold, the selection patients are the other folds' held-out patients
   (that is, the fold's own training patients), each predicted by the network that did not train
   on it; the outer fold's patients then score the choice. Pooled over the folds, this is what the
   procedure gives on new patients. (The other folds' networks did train on the outer fold's
   patients, so the outer labels reach the choice only through those weights.) The same
   procedure on all patients gives the defaults.

    python experiments/nested_selection.py        # about 100 min on 2 cores: train, predict, select
    python experiments/nested_selection.py --trained-from experiments/runs/baseline   # reuse trained folds

Writes WORK/nested_selection.md and .json (copied to experiments/results/nested-selection.json,
from which docs/accuracy.md, README.md's accuracy table and image/threshold.png are rendered).
"""
import collections
import json
import os
import shlex
import shutil
import statistics
import sys

import model  # noqa: F401  (sets TensorFlow's environment, so before tensorflow)
import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from bench.sections import replace_sections
from experiments import cross_validation, rule
import Inference
from model import checkpoints, cli
from model.atomic import atomic_output
from model.brats import load_patient
from model.dcr import NUM_CLASSES
from model.errors import InputError
from model.figures import save_threshold_curve
from model.lists import read_patient_list
from model.metrics import score_regions
from model.postprocess import remove_small_components
from model.decoding import TEST_TIME_AUGMENTATIONS, decode
from model.predict import restored_predictor

WORK_DIR = 'experiments/runs/nested'
RESULTS_PATH = 'experiments/results/nested-selection.json'
REPORT = 'docs/accuracy.md'
FIGURE = 'image/threshold.png'
README = 'README.md'
NUM_STEPS = 1500            # per fold, batch 8: 11 epochs of the 8 training patients' 1104 slices
TUMOUR_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
COMPONENT_FRACTION = 0.1
BFLOAT16_TTAS = ('none', 'flip')   # test-time augmentations whose bfloat16 labels are compared with float32
METRICS = ('WT_dice', 'WT_ppv', 'WT_sensitivity', 'TC_dice', 'ET_dice')

Candidate = collections.namedtuple('Candidate', 'tta decoding threshold component_fraction')
BASELINE = Candidate('none', 'argmax', 0.5, 0.0)   # the paper's decoding


def candidate_key(candidate):
    """The candidate's name in the score files, e.g. 'flip regions-0.3 components-0.1'."""
    decoding = 'argmax' if candidate.decoding == 'argmax' else 'regions-{:g}'.format(candidate.threshold)
    return '{} {} components-{:g}'.format(candidate.tta, decoding, candidate.component_fraction)


def decodings():
    """(decoding, tumour threshold) of every candidate decoding: argmax, then regions at each threshold."""
    return [('argmax', 0.5)] + [('regions', threshold) for threshold in TUMOUR_THRESHOLDS]


def candidates():
    """Every candidate: each test-time augmentation x decoding x component removal."""
    return [Candidate(tta, decoding, threshold, fraction) for tta in TEST_TIME_AUGMENTATIONS
            for decoding, threshold in decodings() for fraction in (0.0, COMPONENT_FRACTION)]


# ---------------------------------------------------------------------------------------------
# Scoring every candidate on a fold's held-out patients


class Decoder:
    """Every candidate decoding of a probability volume, in one TensorFlow run (model.predict.decode)."""

    def __init__(self):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.probabilities = tf.placeholder(tf.float32, [None, None, None, NUM_CLASSES])
            self.labels = {(method, threshold): decode(self.probabilities, Inference.DECODING.overridden(
                method=method, tumour_threshold=threshold)) for method, threshold in decodings()}
        self.session = tf.Session(graph=self.graph)

    def __call__(self, probabilities):
        """{(decoding, threshold): uint8 labels} of (z, y, x, 5) probabilities."""
        return self.session.run(self.labels, {self.probabilities: probabilities})


def tumour_box(probabilities, truth):
    """The slices (z, y, x) of the box holding every voxel that is not surely background in either."""
    mask = (probabilities[..., 0] < 1.0) | (truth > 0)
    if not mask.any():
        return (slice(0, 1),) * 3
    return tuple(slice(axis.min(), axis.max() + 1) for axis in np.nonzero(mask))


def candidate_scores(decoder, probabilities, truth, tta):
    """{candidate key: overlap metrics} of every decoding and component removal of `probabilities`."""
    box = tumour_box(probabilities, truth)
    scores = {}
    for (decoding, threshold), labels in decoder(probabilities[box]).items():
        for fraction in (0.0, COMPONENT_FRACTION):
            cleaned = remove_small_components(labels, 0, fraction) if fraction else labels
            scores[candidate_key(Candidate(tta, decoding, threshold, fraction))] = dict(
                score_regions(cleaned, truth[box]))
    return scores


def bfloat16_agreement(float_labels, bfloat16_labels, truth):
    """How bfloat16 argmax labels compare with float32's: the share of voxels with the same label
    among those either calls tumour, and the change of WT Dice."""
    tumour = (float_labels > 0) | (bfloat16_labels > 0)
    same = float((float_labels[tumour] == bfloat16_labels[tumour]).mean()) if tumour.any() else 1.0
    return {'tumour_voxels_agreeing': same,
            'WT_dice_change': score_regions(bfloat16_labels, truth)['WT_dice'] - score_regions(float_labels, truth)['WT_dice']}


def float_labels_path(scores_path, patient, tta):
    """Where the float32 argmax labels of a patient wait for the bfloat16 comparison."""
    return '{}-{}-{}.npz'.format(os.path.splitext(scores_path)[0], patient, tta)


def score_fold(fold, patients, path):
    """Score every candidate on a fold's held-out patients, and bfloat16 against float32; resumes
    from, and returns, the file at `path`: {patient: {'candidates': {key: metrics}, 'bfloat16':
    {tta: agreement}}}."""
    scores = {}
    if os.path.exists(path):
        with open(path) as stream:
            scores = json.load(stream)
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    decoder = Decoder()
    for tta in TEST_TIME_AUGMENTATIONS:
        passes = ((False, lambda entry: candidate_key(BASELINE._replace(tta=tta)) in entry['candidates']),)
        if tta in BFLOAT16_TTAS:
            passes += ((True, lambda entry: tta in entry['bfloat16']),)
        for bfloat16, finished in passes:
            todo = [name for name in fold['test'] if not finished(scores.setdefault(name, {'candidates': {}, 'bfloat16': {}}))]
            if not todo:
                continue
            with restored_predictor(fold['checkpoints'], checkpoints.LATEST, Inference.DECODING.overridden(tta=tta),
                                    Inference.BATCH_SIZE, bfloat16=bfloat16) as (session, predictor, _):
                for name in tqdm(todo, desc='fold {} --tta {}{}'.format(fold['fold'], tta, ' bfloat16' * bfloat16)):
                    image, truth, _ = load_patient(patients[name])
                    probabilities = predictor.probabilities(session, image)
                    labels = probabilities.argmax(axis=-1).astype(np.uint8)
                    cache = float_labels_path(path, name, tta)
                    if bfloat16:
                        with np.load(cache) as stored:
                            scores[name]['bfloat16'][tta] = bfloat16_agreement(stored['labels'], labels, truth)
                    else:
                        scores[name]['candidates'].update(candidate_scores(decoder, probabilities, truth, tta))
                        if tta in BFLOAT16_TTAS:
                            with atomic_output(cache) as temporary:
                                with open(temporary, 'wb') as stream:
                                    np.savez_compressed(stream, labels=labels)
                    cross_validation.write_json(scores, path)
    decoder.session.close()
    return scores


# ---------------------------------------------------------------------------------------------
# Selection by the rule, and its nested estimate


def paired(rows, patients, candidate, reference, metric):
    """(mean, standard error) over `patients` of the patient-paired difference of `metric` between
    two candidates; patients where either is NaN are skipped."""
    differences = [rows[name][candidate_key(candidate)][metric] - rows[name][candidate_key(reference)][metric]
                   for name in patients]
    differences = [value for value in differences if value == value]
    if len(differences) < 2:
        return float('nan'), float('nan')
    return statistics.fmean(differences), statistics.stdev(differences) / len(differences) ** 0.5


def mean_of(rows, patients, candidate, metric):
    """Mean of `metric` over `patients` under `candidate`, skipping NaN."""
    return cross_validation.mean_and_std([rows[name][candidate_key(candidate)] for name in patients], metric)[0]


# The options in the order they are decided: (name, the alternatives to the current candidate).
# Zooms are not among them: at 5x the forward passes they break the 10 s per volume that the
# default must keep; they are measured against the chosen defaults as the --tta zooms switch.
OPTIONS = (
    ('decoding', lambda current: [current._replace(decoding='regions', threshold=threshold)
                                  for threshold in TUMOUR_THRESHOLDS]),
    ('component removal', lambda current: [current._replace(component_fraction=COMPONENT_FRACTION)]),
    ('flip', lambda current: [current._replace(tta='flip')]),
)


def select(rows, patients):
    """(chosen Candidate, decisions) of the rule over `patients`; each decision says, for one option,
    its best alternative, that one's WT Dice gain with its standard error and WT PPV change against
    the current candidate, and whether it was taken."""
    current, decisions = BASELINE, []
    for option, alternatives_of in OPTIONS:
        tested = []
        for alternative in alternatives_of(current):
            gain, error = paired(rows, patients, alternative, current, 'WT_dice')
            ppv_change = paired(rows, patients, alternative, current, 'WT_ppv')[0]
            passes = rule.passes(gain, error, ppv_change)
            tested.append((passes, mean_of(rows, patients, alternative, 'WT_dice'), alternative, gain, error, ppv_change))
        passes, _, best, gain, error, ppv_change = max(tested, key=lambda test: test[:2])
        decisions.append({'option': option, 'against': candidate_key(current), 'alternative': candidate_key(best),
                          'WT_dice_gain': gain, 'standard_error': error, 'WT_ppv_change': ppv_change,
                          'taken': passes})
        if passes:
            current = best
    return current, decisions


def nested_estimate(rows, folds):
    """Per outer fold: the candidate the rule chooses on the other folds' held-out patients, and the
    decisions that led to it."""
    outer = []
    for fold in folds:
        inner = [name for other in folds if other is not fold for name in other['test']]
        chosen, decisions = select(rows, inner)
        outer.append({'fold': fold['fold'], 'test': fold['test'], 'chosen': candidate_key(chosen),
                      'decisions': decisions,
                      'scores': pooled([rows[name][candidate_key(chosen)] for name in fold['test']])})
    return outer


def pooled(rows_of_patients):
    """{metric: (mean, std)} over patient metric rows."""
    return {metric: cross_validation.mean_and_std(rows_of_patients, metric) for metric in METRICS}


def summarise(rows, agreement, folds, command):
    """The results document: the nested estimate, the defaults chosen on all patients, the threshold
    curve and bfloat16's agreement."""
    everyone = [name for fold in folds for name in fold['test']]
    outer = nested_estimate(rows, folds)
    selected_rows = {name: rows[name][fold['chosen']] for fold in outer for name in fold['test']}
    chosen, decisions = select(rows, everyone)
    zoomed = chosen._replace(tta='zooms')
    zooms_gain, zooms_error = paired(rows, everyone, zoomed, chosen, 'WT_dice')
    previous = Candidate('zooms', 'regions', 0.2, COMPONENT_FRACTION)   # Inference.py's defaults before this
    differences = {}
    for metric in METRICS:
        values = [selected_rows[name][metric] - rows[name][candidate_key(BASELINE)][metric] for name in everyone]
        values = [value for value in values if value == value]
        differences[metric] = (statistics.fmean(values), statistics.stdev(values) / len(values) ** 0.5)
    curve_base = chosen._replace(decoding='regions')
    return {
        'command': command,
        'rule': {'standard_errors': rule.STANDARD_ERRORS, 'min_gain': rule.MIN_GAIN, 'max_ppv_loss': rule.MAX_PPV_LOSS},
        'folds': [{key: fold[key] for key in ('fold', 'test', 'steps', 'train_slices_per_s', 'machine') if key in fold}
                  for fold in folds],
        'outer': outer,
        'nested': pooled(list(selected_rows.values())),
        'nested_minus_baseline': differences,
        'baseline': pooled([rows[name][candidate_key(BASELINE)] for name in everyone]),
        'previous_defaults': {'candidate': candidate_key(previous),
                              'scores': pooled([rows[name][candidate_key(previous)] for name in everyone])},
        'defaults': chosen._asdict(), 'decisions': decisions,
        'zooms': {'candidate': candidate_key(zoomed), 'WT_dice_gain': zooms_gain, 'standard_error': zooms_error,
                  'WT_ppv_change': paired(rows, everyone, zoomed, chosen, 'WT_ppv')[0],
                  'scores': pooled([rows[name][candidate_key(zoomed)] for name in everyone])},
        'threshold_curve': {'tta': curve_base.tta, 'component_fraction': curve_base.component_fraction,
                            'argmax': pooled([rows[name][candidate_key(curve_base._replace(decoding='argmax', threshold=0.5))]
                                              for name in everyone]),
                            'regions': {'{:g}'.format(threshold): pooled(
                                [rows[name][candidate_key(curve_base._replace(threshold=threshold))] for name in everyone])
                                for threshold in TUMOUR_THRESHOLDS}},
        'bfloat16': {tta: {'patients': len(values),
                           'tumour_voxels_agreeing_mean': statistics.fmean(v['tumour_voxels_agreeing'] for v in values),
                           'tumour_voxels_agreeing_min': min(v['tumour_voxels_agreeing'] for v in values),
                           'WT_dice_change_mean': statistics.fmean(v['WT_dice_change'] for v in values),
                           'WT_dice_change_max_abs': max(abs(v['WT_dice_change']) for v in values)}
                     for tta, values in ((tta, [agreement[name][tta] for name in everyone]) for tta in BFLOAT16_TTAS)},
    }


# ---------------------------------------------------------------------------------------------
# Report


def cells(scores):
    """'mean ± std' table cells of pooled scores, in METRICS order."""
    return ' | '.join('{:.3f} ± {:.3f}'.format(*scores[metric]) for metric in METRICS)


def describe(key):
    """Words for a candidate key: 'flip regions-0.3 components-0.1' -> '--tta flip, regions at 0.3, components < 0.1'."""
    tta, decoding, components = key.split()
    fraction = components.split('-', 1)[1]
    decoded = 'argmax' if decoding == 'argmax' else 'regions at {}'.format(decoding.split('-', 1)[1])
    return '--tta {}, {}{}'.format(tta, decoded, ', components < {} of the largest removed'.format(fraction)
                                   if fraction != '0' else '')


def markdown(result):
    """The report of a results document: nested estimate, decisions, threshold curve, bfloat16."""
    header = ' | '.join(('WT Dice', 'WT PPV', 'WT sens.', 'TC Dice', 'ET Dice'))
    patients = sum(len(fold['test']) for fold in result['outer'])
    lines = ['Outer folds: the rule chooses on the other folds\' held-out patients, this fold\'s patients score the '
             'choice (mean ± std over patients).', '',
             '| | chosen | ' + header + ' |', '|' + '---|' * 7]
    for fold in result['outer']:
        lines.append('| outer fold {} | {} | {} |'.format(fold['fold'], describe(fold['chosen']), cells(fold['scores'])))
    lines += ['| **the selection procedure, all {}** | | {} |'.format(patients, cells(result['nested'])),
              "| the paper's decoding | {} | {} |".format(describe(candidate_key(BASELINE)), cells(result['baseline'])),
              '| the previous defaults | {} | {} |'.format(describe(result['previous_defaults']['candidate']),
                                                          cells(result['previous_defaults']['scores'])),
              '| procedure − paper, paired | | {} |'.format(' | '.join(
                  '{:+.3f} ± {:.3f}'.format(*result['nested_minus_baseline'][metric]) for metric in METRICS)),
              '', 'The rule on all {} patients, which sets the defaults (an alternative is taken when its WT Dice gain '
              'exceeds {:g} standard errors and {:g}, and WT PPV falls by at most {:g}):'.format(
                  patients, result['rule']['standard_errors'], result['rule']['min_gain'],
                  result['rule']['max_ppv_loss']), '',
              '| option | against | best alternative | WT Dice gain ± s.e. | WT PPV change | taken |', '|' + '---|' * 6]
    for decision in result['decisions']:
        lines.append('| {} | {} | {} | {:+.3f} ± {:.3f} | {:+.3f} | {} |'.format(
            decision['option'], describe(decision['against']), describe(decision['alternative']),
            decision['WT_dice_gain'], decision['standard_error'], decision['WT_ppv_change'],
            'yes' if decision['taken'] else 'no'))
    zooms = result['zooms']
    lines += ['', 'The accurate switch, `--tta zooms` ({}, 5x the forward passes), against the defaults on all {} patients: '
              'WT Dice {:+.3f} ± {:.3f}, WT PPV {:+.3f}.'.format(describe(zooms['candidate']), patients, zooms['WT_dice_gain'],
                                                                zooms['standard_error'], zooms['WT_ppv_change'])]
    curve = result['threshold_curve']
    lines += ['', 'Whole tumour against the tumour threshold of region decoding ({}; every patient predicted by the '
              'network that did not train on it):'.format(describe(candidate_key(Candidate(
                  curve['tta'], 'argmax', 0.5, curve['component_fraction']))).replace(', argmax', '')), '',
              '| decoding | WT Dice | WT PPV | WT sens. |', '|---|---|---|---|']
    for name, scores in [('argmax', curve['argmax'])] + [('regions at ' + threshold, scores)
                                                         for threshold, scores in curve['regions'].items()]:
        lines.append('| {} | {} |'.format(name, ' | '.join('{:.3f}'.format(scores[metric][0])
                                                            for metric in METRICS[:3])))
    lines += ['', 'bfloat16 against float32 inference (argmax labels, the same networks and patients):', '',
              '| --tta | patients | tumour voxels with the same label: mean (min) | WT Dice change: mean (largest) |',
              '|---|---|---|---|']
    for tta, agreement in result['bfloat16'].items():
        lines.append('| {} | {} | {:.4f} ({:.4f}) | {:+.4f} ({:.4f}) |'.format(
            tta, agreement['patients'], agreement['tumour_voxels_agreeing_mean'], agreement['tumour_voxels_agreeing_min'],
            agreement['WT_dice_change_mean'], agreement['WT_dice_change_max_abs']))
    return '\n'.join(lines + ['', 'Reproduce: `{}`'.format(result['command'])])


def readme_table(result):
    """The README's accuracy table: the defaults' nested estimate, the zooms switch, the paper's
    decoding on the same networks, and the paper's reported numbers."""
    patients = sum(len(fold['test']) for fold in result['outer'])
    defaults = Candidate(**result['defaults'])
    lines = ['| | WT Dice | WT PPV | WT sens. | TC Dice | ET Dice |', '|---|---|---|---|---|---|',
             '| **Inference.py defaults** ({}): the nested selection, {} unseen patients | {} |'.format(
                 describe(candidate_key(defaults)), patients, cells(result['nested'])),
             '| `--tta zooms` on top of the defaults (5x the time) | {} |'.format(cells(result['zooms']['scores'])),
             "| the paper's decoding (argmax, `--tta none`), same networks | {} |".format(cells(result['baseline'])),
             '| the paper, BRATS2015 test set (as reported) | 0.87 | 0.91 | | | |']
    return '\n'.join(lines + ['', 'Reproduce: `{}` (about 100 minutes on 2 cores; '
                                    '[docs/accuracy.md](docs/accuracy.md) has the per-fold choices).'.format(
                                        result['command'])])


def render(result, report, figure, readme):
    """Write the 'nested selection' section of `report` (docs/accuracy.md), the 'accuracy' section
    of `readme` and the `figure` (image/threshold.png) from a results document; returns the report
    section's text."""
    curve = result['threshold_curve']
    save_threshold_curve([float(threshold) for threshold in curve['regions']],
                         {metric: [scores[metric][0] for scores in curve['regions'].values()] for metric in METRICS[:3]},
                         {metric: curve['argmax'][metric][0] for metric in METRICS[:3]}, figure)
    text = markdown(result)
    replace_sections(report, {'nested selection': text})
    replace_sections(readme, {'accuracy': readme_table(result)})
    return text


def parse_args(argv):
    parser = cli.parser(__doc__.splitlines()[0])
    add = parser.add_argument
    add('--work-dir', default=WORK_DIR, help='trained folds, score files and the report go here')
    add('--trained-from', default='', help="reuse an earlier cross-validation run's trained folds "
        '(experiments/cross_validation.py --work-dir) instead of training')
    add('--num-steps', type=int, default=NUM_STEPS, help='training steps per fold')
    add('--results', default=RESULTS_PATH, help='the results document kept in the repository')
    add('--report', default=REPORT, help="the document whose 'nested selection' section is rewritten")
    add('--figure', default=FIGURE, help='the threshold figure')
    add('--readme', default=README, help="the document whose 'accuracy' section is rewritten")
    add('--render-only', action='store_true', help='only rewrite the report section and the figure from --results')
    return parser.parse_args(argv)


def run(args, command):
    """Train (unless reused), score and select; returns the results document."""
    run_dir = args.trained_from or os.path.join(args.work_dir, 'train')
    if not args.trained_from:
        code = cross_validation.main(['--work-dir', run_dir, '--num-steps', str(args.num_steps),
                                      '--inference-flags=--decoding argmax --tta none --min-component-fraction 0'])
        if code:
            raise SystemExit(code)
    folds = cross_validation.finished_folds(run_dir)
    patients = {patient.name: patient for patient in
                read_patient_list(os.path.join(run_dir, 'lists', 'train.txt'), require_labels=True)}
    rows, agreement = {}, {}
    for fold in folds:
        fold = dict(fold, checkpoints=cross_validation.trained_checkpoints(run_dir, fold['fold'], fold))
        scores = score_fold(fold, patients, os.path.join(args.work_dir, 'scores', 'fold{}.json'.format(fold['fold'])))
        for name in fold['test']:
            rows[name], agreement[name] = scores[name]['candidates'], scores[name]['bfloat16']
    return summarise(rows, agreement, folds, command)


@cli.reports_bad_input
def main(argv=None):
    args = parse_args(argv)
    if args.render_only:
        if not os.path.isfile(args.results):
            raise InputError('{}: missing; run experiments/nested_selection.py first'.format(args.results))
        with open(args.results) as stream:
            print(render(json.load(stream), args.report, args.figure, args.readme))
        return 0
    cli.graph_mode()
    command = 'python experiments/nested_selection.py ' + ' '.join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    result = run(args, command.strip())
    cross_validation.write_json(result, os.path.join(args.work_dir, 'nested_selection.json'))
    with atomic_output(os.path.join(args.work_dir, 'nested_selection.md')) as temporary:
        with open(temporary, 'w') as stream:
            stream.write(markdown(result) + '\n')
    with atomic_output(args.results) as temporary:
        shutil.copyfile(os.path.join(args.work_dir, 'nested_selection.json'), temporary)
    print(render(result, args.report, args.figure, args.readme))
    return 0


if __name__ == '__main__':
    sys.exit(main())
