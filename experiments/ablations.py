"""The ablation study of issue #5: every row is one cross-validation run of the same folds and budget.

Each row names the Train.py and Inference.py flags it runs with; rows that only change test-time
options reuse the trained folds of another row (--trained-from), so they compare identical
networks. A finished row's results.json is copied to experiments/results/<row>.json, which is
committed; the tables in docs/ablations.md (and the training-defaults table of docs/accuracy.md)
are rendered from those files only. SELECTIONS
groups test-time rows whose option is chosen for each fold on the other folds
(experiments/fold_selection.py), the honest way to pick a value such as a threshold.

    python experiments/ablations.py run width-half      # ~70 min on 2 cores; resumable
    python experiments/ablations.py table               # rewrite the tables in docs/ablations.md
"""
import collections
import json
import os
import shutil
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.sections import replace_sections  # noqa: E402
from experiments import cross_validation, fold_selection, rule  # noqa: E402
from model import cli  # noqa: E402
from model.atomic import atomic_output  # noqa: E402
from model.errors import InputError  # noqa: E402

RUNS_DIR = 'experiments/runs'
RESULTS_DIR = 'experiments/results'
REPORT = 'docs/accuracy.md'      # the training-defaults table
HISTORY = 'docs/ablations.md'    # every row, the fold selections and the paired differences
BUDGET_RECIPE = '--crop-size 160 --learning-rate 1e-3 --lr-decay cosine --dice-weight 1 --tumour-fraction 0.5'   # rows append flags; the last wins


def with_jitter(scale, shift):
    """The budget recipe with Train.py's intensity scale and shift jitter set."""
    return BUDGET_RECIPE + ' --intensity-scale {:g} --intensity-shift {:g}'.format(scale, shift)


JITTER_RECIPE = with_jitter(0.5, 0.5)   # Train.py's defaults from intensity-jitter-0.5 until learning-rate-3e-3
RATE_RECIPE = JITTER_RECIPE + ' --learning-rate 3e-3'   # Train.py's defaults since learning-rate-3e-3


def test_time(threshold=None, tta='none', component_fraction=0.0):
    """Inference.py flags stating a row's decoding, test-time augmentation and component removal, so
    the row does not depend on Inference.py's defaults: argmax when `threshold` is None, else region
    decoding with tumour where P(WT) > threshold; `tta` as Inference.py's --tta; tumour components
    smaller than `component_fraction` of the largest removed."""
    decoding = '--decoding argmax' if threshold is None else '--decoding regions --tumour-threshold {:g}'.format(threshold)
    return '{} --tta {} --min-component-fraction {:g}'.format(decoding, tta, component_fraction)


ARGMAX = test_time()        # Inference.py's default until the tumour-threshold rows, and again since nested selection
REGIONS = test_time(0.5)
DEFAULT_TEST_TIME = test_time(0.2, tta='flip')   # Inference.py's defaults from row defaults-2 until the components rows
COMPONENTS_THRESHOLD, COMPONENTS_FRACTION = 0.2, 0.1   # Inference.py's defaults from the components rows until nested selection


def components_test_time(threshold=COMPONENTS_THRESHOLD, tta='flip'):
    """Inference.py's defaults from the components rows until nested selection (flip, tumour components
    under a tenth of the largest removed) at tumour threshold `threshold`, with test-time augmentation `tta`."""
    return test_time(threshold, tta=tta, component_fraction=COMPONENTS_FRACTION)


COMPONENTS_TEST_TIME = components_test_time()

Row = collections.namedtuple('Row', 'name change train_flags inference_flags trained_from val_patients ensemble '
                             'convert_flags batch_size', defaults=(0, 1, '', cross_validation.BATCH_SIZE))
TUMOUR_THRESHOLDS = (0.4, 0.3, 0.2)
LOW_TUMOUR_THRESHOLDS = TUMOUR_THRESHOLDS + (0.15, 0.1)   # the grid below 0.2, for networks trained since
# Trained rows whose networks get threshold rows, and the tumour thresholds each is decoded at.
THRESHOLD_BASES = (('budget-recipe', TUMOUR_THRESHOLDS), ('defaults', TUMOUR_THRESHOLDS),
                   ('intensity-jitter-0.5', TUMOUR_THRESHOLDS), ('defaults-2', LOW_TUMOUR_THRESHOLDS),
                   ('dice-off', LOW_TUMOUR_THRESHOLDS))


def threshold_rows(base, thresholds):
    """Test-time rows on the networks of row `base`: region decoding at the usual tumour threshold
    (0.5), then at each of `thresholds`."""
    rows = [Row(base + '-regions', '+ region decoding', '', REGIONS, base)]
    for threshold in thresholds:
        rows.append(Row('{}-regions-t{}'.format(base, threshold),
                        '+ region decoding, tumour where P(WT) > {}'.format(threshold), '',
                        test_time(threshold), base))
    return rows


COMPONENT_THRESHOLDS = (0.3, 0.2, 0.15, 0.1)   # around Inference.py's 0.2, once components are removed
COMPONENT_THRESHOLD_BASES = ('learning-rate-3e-3-avx2', 'spatial-strong-3e-3-avx2')   # networks decoded at each


def component_threshold_name(base, threshold):
    """The row decoding `base`'s networks with the components defaults at `threshold`; at the
    components threshold that is the row `<base>-components`."""
    return base + '-components' + ('' if threshold == COMPONENTS_THRESHOLD else '-t{:g}'.format(threshold))


def component_threshold_rows(base):
    """Test-time rows on the networks of row `base`: the components defaults (flip, components
    under a tenth of the largest removed) at each of COMPONENT_THRESHOLDS other than 0.2."""
    return [Row(component_threshold_name(base, threshold),
                "+ the components defaults at tumour threshold {:g} (from {:g})".format(threshold, COMPONENTS_THRESHOLD),
                '', components_test_time(threshold), base)
            for threshold in COMPONENT_THRESHOLDS if threshold != COMPONENTS_THRESHOLD]


def zooms_row(base):
    """base's networks decoded with the components defaults and the five zooms of --tta zooms: the row
    `<base>-zooms-5`."""
    return Row(base + '-zooms-5', '+ the probabilities of the slices zoomed by 0.8, 0.9, 1.1 and 1.2 averaged with '
               'the unzoomed ones (--tta zooms)', '', components_test_time(tta='zooms'), base)


ROWS = (
    Row('budget-recipe', 'crop 160, Adam 1e-3 cosine, CE + soft Dice; argmax', BUDGET_RECIPE, ARGMAX, ''),
    Row('budget-recipe-flip', '+ test-time flip', '', test_time(tta='flip'), 'budget-recipe'),
    Row('budget-recipe-regions-flip', '+ region decoding + flip', '', test_time(0.5, tta='flip'),
        'budget-recipe'),
    Row('budget-recipe-components', '+ drop components < 200 voxels', '', ARGMAX + ' --min-component-size 200',
        'budget-recipe'),
    *threshold_rows('budget-recipe', TUMOUR_THRESHOLDS),
    Row('width-half', 'budget recipe at width 0.5', BUDGET_RECIPE + ' --width 0.5', ARGMAX, ''),
    Row('tumour-weight-2', 'budget recipe, cross-entropy weight 2 on tumour classes',
        BUDGET_RECIPE + ' --class-weights 1,2,2,2,2', ARGMAX, ''),
    Row('paper-training', "the paper's training: crop 224, Adam 1e-4 constant, cross-entropy only",
        '--crop-size 224 --learning-rate 1e-4 --lr-decay none --dice-weight 0', ARGMAX, ''),
    Row('intensity-jitter-0.3', 'budget recipe, intensity scale and shift jitter 0.3 (from 0.1)',
        with_jitter(0.3, 0.3), ARGMAX, ''),
    Row('intensity-jitter-0.5', 'budget recipe, intensity scale and shift jitter 0.5 (from 0.1)',
        JITTER_RECIPE, ARGMAX, ''),
    *threshold_rows('intensity-jitter-0.5', TUMOUR_THRESHOLDS),
    Row('intensity-jitter-0.5-repeat', 'intensity-jitter-0.5 trained again (training is not seeded; the CPU may differ)',
        JITTER_RECIPE, ARGMAX, ''),
    Row('intensity-jitter-0.5-rerun', 'intensity-jitter-0.5 trained a third time, on an AVX-512 CPU like the first',
        JITTER_RECIPE, ARGMAX, ''),
    Row('defaults-2', "Train.py's defaults (jitter 0.5) trained once more, its networks kept for the test-time rows; argmax",
        JITTER_RECIPE, ARGMAX, ''),
    *threshold_rows('defaults-2', LOW_TUMOUR_THRESHOLDS),
    Row('defaults-2-regions-t0.2-flip', '+ region decoding, tumour where P(WT) > 0.2, test-time flip',
        '', DEFAULT_TEST_TIME, 'defaults-2'),
    Row('spatial-jitter-strong', "Train.py's defaults with rotations of ±20° (from 10) and scaling by 1 ± 0.2 (from 0.1); "
        "Inference.py's defaults (regions, threshold 0.2, flip)",
        JITTER_RECIPE + ' --rotate-degrees 20 --scale-range 0.2', DEFAULT_TEST_TIME, ''),
    Row('spatial-jitter-strong-argmax', '+ argmax, no flip', '', ARGMAX, 'spatial-jitter-strong'),
    Row('intensity-jitter-0.7', 'budget recipe, intensity scale and shift jitter 0.7 (from 0.1)',
        with_jitter(0.7, 0.7), ARGMAX, ''),
    Row('intensity-scale-0.5', 'budget recipe, intensity scale jitter 0.5, shift jitter 0.1 (as before)',
        with_jitter(0.5, 0.1), ARGMAX, ''),
    Row('dice-off', "Train.py's defaults without the soft Dice term (cross-entropy only); Inference.py's defaults",
        JITTER_RECIPE + ' --dice-weight 0', DEFAULT_TEST_TIME, ''),
    Row('dice-off-argmax', '+ argmax, no flip', '', ARGMAX, 'dice-off'),
    *threshold_rows('dice-off', LOW_TUMOUR_THRESHOLDS),
    Row('natural-sampling', "Train.py's defaults with tumour slices at their natural share (no oversampling); "
        "Inference.py's defaults", JITTER_RECIPE + ' --tumour-fraction 0', DEFAULT_TEST_TIME, ''),
    Row('natural-sampling-argmax', '+ argmax, no flip', '', ARGMAX, 'natural-sampling'),
    Row('defaults-seed-1', "Train.py's defaults trained with --seed 1 (the first seeded training); Inference.py's defaults",
        JITTER_RECIPE + ' --seed 1', DEFAULT_TEST_TIME, ''),
    Row('defaults-seed-1-argmax', '+ argmax, no flip', '', ARGMAX, 'defaults-seed-1'),
    Row('histogram-normalization', "Train.py's and Inference.py's defaults on records histogram-standardised "
        '(create_pascal_tf_record.py --normalization histogram) before the z-score',
        JITTER_RECIPE + ' --seed 1', DEFAULT_TEST_TIME, '', convert_flags='--normalization histogram'),
    Row('histogram-normalization-argmax', '+ argmax, no flip', '', ARGMAX, 'histogram-normalization'),
    Row('spatial-natural', "Train.py's defaults (seed 1) with spatial-jitter-strong's rotations and scaling and "
        "natural-sampling's slice shares together; Inference.py's defaults",
        JITTER_RECIPE + ' --rotate-degrees 20 --scale-range 0.2 --tumour-fraction 0 --seed 1', DEFAULT_TEST_TIME, ''),
    Row('batch-4', "Train.py's defaults (seed 1) at batch size 4 (from 8); Inference.py's defaults",
        JITTER_RECIPE + ' --seed 1', DEFAULT_TEST_TIME, '', batch_size=4),
    Row('batch-16', "Train.py's defaults (seed 1) at batch size 16 (from 8); Inference.py's defaults",
        JITTER_RECIPE + ' --seed 1', DEFAULT_TEST_TIME, '', batch_size=16),
    Row('learning-rate-3e-4', "Train.py's defaults (seed 1) at learning rate 3e-4 (from 1e-3), cosine decay as before; "
        "Inference.py's defaults", JITTER_RECIPE + ' --seed 1 --learning-rate 3e-4', DEFAULT_TEST_TIME, ''),
    Row('learning-rate-3e-3', "Train.py's defaults (seed 1) at learning rate 3e-3 (from 1e-3), cosine decay as before; "
        "Inference.py's defaults", JITTER_RECIPE + ' --seed 1 --learning-rate 3e-3', DEFAULT_TEST_TIME, ''),
    Row('learning-rate-3e-3-seed-2', "learning-rate-3e-3 trained again with --seed 2 (Train.py's defaults); "
        "Inference.py's defaults", RATE_RECIPE + ' --seed 2', DEFAULT_TEST_TIME, ''),
    Row('lr-decay-none', "Train.py's defaults (seed 1, learning rate 3e-3) held constant instead of the cosine decay; "
        "Inference.py's defaults", RATE_RECIPE + ' --seed 1 --lr-decay none', DEFAULT_TEST_TIME, ''),
    Row('lr-decay-poly', "Train.py's defaults (seed 1, learning rate 3e-3) with polynomial decay (power 0.9) instead "
        "of cosine; Inference.py's defaults", RATE_RECIPE + ' --seed 1 --lr-decay poly', DEFAULT_TEST_TIME, ''),
    Row('spatial-strong-3e-3', "Train.py's defaults (seed 1, learning rate 3e-3) with spatial-jitter-strong's "
        "rotations of ±20° and scaling by 1 ± 0.2; Inference.py's defaults",
        RATE_RECIPE + ' --seed 1 --rotate-degrees 20 --scale-range 0.2', DEFAULT_TEST_TIME, ''),
    Row('spatial-strong-3e-3-seed-2', "spatial-strong-3e-3 trained again with --seed 2; Inference.py's defaults",
        RATE_RECIPE + ' --seed 2 --rotate-degrees 20 --scale-range 0.2', DEFAULT_TEST_TIME, ''),
    Row('learning-rate-3e-3-avx2', "learning-rate-3e-3 (Train.py's defaults, seed 1) trained on a CPU without AVX-512, "
        "at about a third of the slices/s; argmax, no flip", RATE_RECIPE + ' --seed 1', ARGMAX, ''),
    Row('learning-rate-3e-3-avx2-defaults', "+ Inference.py's defaults (region decoding, tumour threshold 0.2, flip)", '',
        DEFAULT_TEST_TIME, 'learning-rate-3e-3-avx2'),
    Row('learning-rate-3e-3-avx2-components', "+ Inference.py's defaults and tumour components smaller than 0.1 "
        "of the patient's largest removed", '', COMPONENTS_TEST_TIME, 'learning-rate-3e-3-avx2'),
    *component_threshold_rows('learning-rate-3e-3-avx2'),
    zooms_row('learning-rate-3e-3-avx2'),
    Row('learning-rate-3e-3-avx2-seed-2', "learning-rate-3e-3-avx2 trained again with --seed 2 on the AVX2 CPU; "
        "Inference.py's defaults (flip, components, five zooms)", RATE_RECIPE + ' --seed 2',
        components_test_time(tta='zooms'), ''),
    Row('learning-rate-3e-3-avx2-seed-2-components', '+ no test-time zooms (--tta flip)', '', COMPONENTS_TEST_TIME,
        'learning-rate-3e-3-avx2-seed-2'),
    Row('spatial-strong-3e-3-avx2', "spatial-strong-3e-3 (seed 1) trained on a CPU without AVX-512, like "
        "learning-rate-3e-3-avx2; Inference.py's defaults",
        RATE_RECIPE + ' --seed 1 --rotate-degrees 20 --scale-range 0.2', DEFAULT_TEST_TIME, ''),
    Row('spatial-strong-3e-3-avx2-components', "+ tumour components smaller than 0.1 of the patient's largest "
        "removed", '', COMPONENTS_TEST_TIME, 'spatial-strong-3e-3-avx2'),
    *component_threshold_rows('spatial-strong-3e-3-avx2'),
    zooms_row('spatial-strong-3e-3-avx2'),
    Row('crop-128-3e-3-avx2', "learning-rate-3e-3-avx2's training (seed 1) on crops of 128 (from 160), so more "
        "steps fit in the 20 minutes; Inference.py's defaults", RATE_RECIPE + ' --seed 1 --crop-size 128',
        COMPONENTS_TEST_TIME, ''),
    Row('learning-rate-6e-3-avx2', "learning-rate-3e-3-avx2's training (seed 1) at a peak learning rate of 6e-3 "
        "(from 3e-3), cosine decay as before; Inference.py's defaults", RATE_RECIPE + ' --seed 1 --learning-rate 6e-3',
        COMPONENTS_TEST_TIME, ''),
    Row('learning-rate-6e-3-avx2-argmax', '+ argmax, no flip', '', ARGMAX, 'learning-rate-6e-3-avx2'),
    Row('histogram-3e-3-avx2', "learning-rate-3e-3-avx2's training (seed 1) on records histogram-standardised "
        "(create_pascal_tf_record.py --normalization histogram) before the z-score; Inference.py's defaults",
        RATE_RECIPE + ' --seed 1', components_test_time(tta='zooms'), '', convert_flags='--normalization histogram'),
    Row('histogram-3e-3-avx2-components', '+ no test-time zooms (--tta flip)', '', COMPONENTS_TEST_TIME,
        'histogram-3e-3-avx2'),
    Row('histogram-3e-3-avx2-seed-2', 'histogram-3e-3-avx2 trained again with --seed 2; Inference.py\'s defaults',
        RATE_RECIPE + ' --seed 2', components_test_time(tta='zooms'), '', convert_flags='--normalization histogram'),
    Row('crop-224', "budget recipe at the paper's crop of 224", BUDGET_RECIPE + ' --crop-size 224', ARGMAX, ''),
    Row('defaults', "Train.py's defaults until jitter 0.5: the budget recipe, jitter 0.1, float32; argmax",
        '--intensity-scale 0.1 --intensity-shift 0.1', ARGMAX, ''),
    *threshold_rows('defaults', TUMOUR_THRESHOLDS),
    Row('bfloat16', 'intensity-jitter-0.5 with bfloat16 convolutions (--bfloat16 on)', JITTER_RECIPE + ' --bfloat16 on',
        ARGMAX, ''),
    Row('jitter-0.5-ensemble-2', 'two networks with intensity jitter 0.5, 10 minutes each, probabilities averaged',
        JITTER_RECIPE, ARGMAX, '', ensemble=2),
    Row('validation-selected', "Train.py's defaults (seed 1) on 7 of the 8 training patients, keeping the checkpoint "
        "of best mean validation Dice on the 8th (checked every 200 steps and at the end, argmax without flip, as "
        "Train.py validated then); Inference.py's defaults on that checkpoint (--checkpoint best)",
        JITTER_RECIPE + ' --seed 1 --validate-every-steps 200 --val-decoding argmax --val-tta none',
        DEFAULT_TEST_TIME + ' --checkpoint best', '', val_patients=1),
    Row('validation-selected-last', '+ the last checkpoint instead of the validation-selected one', '',
        DEFAULT_TEST_TIME + ' --checkpoint latest', 'validation-selected'),
)
# Test-time options chosen per fold on the other folds (experiments/fold_selection.py).
SELECTIONS = tuple(('tumour threshold of {}, 0.5 to {:g}'.format(base, thresholds[-1]),
                    tuple(row.name for row in threshold_rows(base, thresholds)))
                   for base, thresholds in THRESHOLD_BASES) + tuple(
    ('tumour threshold of {} with flip and components removed, 0.3 to 0.1'.format(base),
     tuple(component_threshold_name(base, threshold) for threshold in COMPONENT_THRESHOLDS))
    for base in COMPONENT_THRESHOLD_BASES)
# (row, baseline): compared patient by patient (same folds, same held-out patients).
PAIRED = (('paper-training', 'budget-recipe'), ('tumour-weight-2', 'budget-recipe'),
          ('defaults', 'budget-recipe'), ('intensity-jitter-0.3', 'defaults'),
          ('intensity-jitter-0.5', 'defaults'), ('intensity-jitter-0.5', 'intensity-jitter-0.3'),
          ('intensity-jitter-0.7', 'intensity-jitter-0.5'), ('intensity-scale-0.5', 'intensity-jitter-0.5'),
          ('jitter-0.5-ensemble-2', 'intensity-jitter-0.5'), ('bfloat16', 'intensity-jitter-0.5'),
          ('intensity-jitter-0.5-repeat', 'intensity-jitter-0.5'), ('intensity-jitter-0.5-rerun', 'intensity-jitter-0.5'),
          ('intensity-jitter-0.5-regions-t0.2', 'intensity-jitter-0.5'),
          ('defaults-2', 'intensity-jitter-0.5'), ('defaults-2-regions-t0.2', 'defaults-2'),
          ('defaults-2-regions-t0.2-flip', 'defaults-2-regions-t0.2'),
          ('spatial-jitter-strong', 'defaults-2-regions-t0.2-flip'), ('spatial-jitter-strong-argmax', 'defaults-2'),
          ('dice-off', 'defaults-2-regions-t0.2-flip'), ('dice-off-argmax', 'defaults-2'),
          ('dice-off-regions-t0.2', 'dice-off-argmax'),
          ('natural-sampling', 'defaults-2-regions-t0.2-flip'), ('natural-sampling-argmax', 'defaults-2'),
          ('defaults-seed-1', 'defaults-2-regions-t0.2-flip'), ('defaults-seed-1-argmax', 'defaults-2'),
          ('spatial-jitter-strong', 'defaults-seed-1'), ('dice-off', 'defaults-seed-1'),
          ('natural-sampling', 'defaults-seed-1'),
          ('histogram-normalization', 'defaults-seed-1'), ('histogram-normalization-argmax', 'defaults-seed-1-argmax'),
          ('batch-4', 'defaults-seed-1'), ('batch-16', 'defaults-seed-1'), ('spatial-natural', 'defaults-seed-1'),
          ('validation-selected', 'defaults-seed-1'), ('validation-selected', 'validation-selected-last'),
          ('validation-selected-last', 'defaults-seed-1'), ('learning-rate-3e-4', 'defaults-seed-1'),
          ('learning-rate-3e-3', 'defaults-seed-1'), ('learning-rate-3e-3-seed-2', 'learning-rate-3e-3'),
          ('lr-decay-none', 'learning-rate-3e-3'), ('lr-decay-poly', 'learning-rate-3e-3'),
          ('spatial-strong-3e-3', 'learning-rate-3e-3'),
          ('spatial-strong-3e-3-seed-2', 'learning-rate-3e-3-seed-2'),
          ('learning-rate-3e-3-avx2', 'intensity-jitter-0.5-repeat'),
          ('learning-rate-3e-3-avx2-defaults', 'learning-rate-3e-3'),
          ('learning-rate-3e-3-avx2-components', 'learning-rate-3e-3-avx2-defaults'),
          ('spatial-strong-3e-3-avx2', 'learning-rate-3e-3-avx2-defaults'),
          ('spatial-strong-3e-3-avx2-components', 'spatial-strong-3e-3-avx2'),
          ('crop-128-3e-3-avx2', 'learning-rate-3e-3-avx2-components'),
          ('learning-rate-6e-3-avx2', 'learning-rate-3e-3-avx2-components'),
          ('learning-rate-6e-3-avx2-argmax', 'learning-rate-3e-3-avx2'),
          ('learning-rate-3e-3-avx2-components-t0.3', 'learning-rate-3e-3-avx2-components'),
          ('learning-rate-3e-3-avx2-components-t0.15', 'learning-rate-3e-3-avx2-components'),
          ('spatial-strong-3e-3-avx2-components-t0.15', 'spatial-strong-3e-3-avx2-components'),
          ('learning-rate-3e-3-avx2-seed-2', 'learning-rate-3e-3-avx2-zooms-5'),
          ('learning-rate-3e-3-avx2-seed-2', 'learning-rate-3e-3-avx2-seed-2-components'),
          ('histogram-3e-3-avx2', 'learning-rate-3e-3-avx2-zooms-5'),
          ('histogram-3e-3-avx2-components', 'learning-rate-3e-3-avx2-components'),
          ('histogram-3e-3-avx2', 'histogram-3e-3-avx2-components'),
          ('histogram-3e-3-avx2-seed-2', 'learning-rate-3e-3-avx2-seed-2'),
          ('histogram-3e-3-avx2-seed-2', 'histogram-3e-3-avx2'),
          ('learning-rate-3e-3-avx2-zooms-5', 'learning-rate-3e-3-avx2-components'),
          ('spatial-strong-3e-3-avx2-zooms-5', 'spatial-strong-3e-3-avx2-components'))
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
PAIRED_METRICS = (('WT_dice', 'WT Dice'), ('WT_ppv', 'WT PPV'), ('WT_sensitivity', 'WT sens.'),
                  ('TC_dice', 'TC Dice'), ('ET_dice', 'ET Dice'))
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
    if row.val_patients:
        argv += ['--val-patients', str(row.val_patients)]
    if row.ensemble > 1:
        argv += ['--ensemble', str(row.ensemble)]
    if row.batch_size != cross_validation.BATCH_SIZE:
        argv += ['--batch-size', str(row.batch_size)]
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


def selection_table(results):
    """Markdown table of each SELECTIONS entry whose rows all have results: the row chosen for
    each fold on the other folds, and the pooled held-out metrics under those choices."""
    lines = ['| selection | chosen per fold (on the other folds) | '
             + ' | '.join(title for _, title in COLUMNS) + ' |', '|' + '---|' * (len(COLUMNS) + 2)]
    for title, names in SELECTIONS:
        if not all(name in results for name in names):
            continue
        candidates = {name: results[name] for name in names}
        choices = fold_selection.choose_per_fold(candidates)
        lines.append('| {} | {} | {} |'.format(title, ', '.join(name for _, name in choices),
                                               pooled_cells(fold_selection.selected_rows(candidates, choices))))
    return '\n'.join(lines)


def paired_differences(results, baseline, metric):
    """(mean difference, its standard error, patients better, patients compared) of `metric`
    between two runs' rows of the same held-out patients (NaN pairs skipped)."""
    fold_selection.check_same_folds({'row': results, 'baseline': baseline})
    others = {row['patient']: row[metric] for row in cross_validation.held_out_rows(baseline['folds'])}
    differences = [row[metric] - others[row['patient']] for row in cross_validation.held_out_rows(results['folds'])
                   if row[metric] == row[metric] and others[row['patient']] == others[row['patient']]]
    mean = statistics.fmean(differences) if differences else float('nan')
    error = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else float('nan')
    return mean, error, sum(d > 0 for d in differences), len(differences)


def paired_table(results):
    """Markdown table of each PAIRED (row, baseline) with results: per metric, the mean
    patient-by-patient difference +- its standard error, and how many patients improved."""
    lines = ['| row | against | ' + ' | '.join(title for _, title in PAIRED_METRICS) + ' |',
             '|' + '---|' * (len(PAIRED_METRICS) + 2)]
    for name, baseline in PAIRED:
        if name in results and baseline in results:
            cells = ('{:+.3f} ± {:.3f} ({}/{})'.format(*paired_differences(results[name], results[baseline], metric))
                     for metric, _ in PAIRED_METRICS)
            lines.append('| {} | {} | {} |'.format(name, baseline, ' | '.join(cells)))
    return '\n'.join(lines)


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
                for document, sections in ((history, (('ablation table', table), ('fold selection', selection_table),
                                                      ('paired differences', paired_table))),
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
