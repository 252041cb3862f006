"""Where the held-out predictions of a finished cross-validation miss tumour.

For every held-out patient: the share of whole-tumour voxels missed, the FLAIR contrast of its
oedema (mean normalised FLAIR of oedema minus that of tumour-free brain), how the missed voxels
split over the true labels (necrosis/non-enhancing, oedema, enhancing), the share of them in
axial slices where the network found no tumour at all (misses at the tumour's upper and lower
ends) and the mean normalised FLAIR and T2 of the oedema it found against the oedema it missed
(faint oedema is missed first if the network's threshold sits between them). Below the table:
the correlation, over patients, of the share of tumour found with the oedema contrast.
Intensities are taken as the fold's network saw them: after the histogram standardisation of
its training records, if it had one (so the contrast of a histogram run and of a z-score run
are measured on different scales). With
--baseline-run-dir (another run holding out the same patients), each patient's WT Dice gain over
that run is added, and the mean gain of the lower- and the higher-contrast half of the patients.

    python experiments/missed_tumour.py --run-dir experiments/runs/defaults
    python experiments/missed_tumour.py --run-dir experiments/runs/intensity-jitter-0.5 \
        --baseline-run-dir experiments/runs/defaults

Prints a markdown table and writes it to RUN/missed_tumour.md.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cross_validation import finished_folds, held_out_rows, write_run_report  # noqa: E402
from model import cli  # noqa: E402
from model import checkpoints  # noqa: E402
from model.brats import find_prediction, load_patient, read_volume  # noqa: E402
from model.errors import InputError  # noqa: E402
from model.lists import read_patient_list  # noqa: E402
from model.normalization import CLIP_SD, brain_mask, intensity_stats, standardize  # noqa: E402

OEDEMA = 2
FLAIR, T2 = 0, 3   # channel order of model.brats.MODALITIES


def normalised(image):
    """The four modalities z-scored over the brain and clipped, as the network sees them."""
    mean, std = intensity_stats(image)
    return np.clip((image - mean) / std, -CLIP_SD, CLIP_SD) * brain_mask(image)[..., np.newaxis]


def _mean(values, mask):
    """Mean of values[mask], NaN for an empty mask."""
    return float(values[mask].mean()) if mask.any() else float('nan')


def missed_tumour(image, truth, prediction):
    """One patient's miss statistics (see the module docstring) as a dict of numbers."""
    tumour, found = truth > 0, prediction > 0
    missed = tumour & ~found
    slices_without_tumour = ~found.any(axis=(1, 2))
    zscores = normalised(image)
    oedema = truth == OEDEMA
    normal = brain_mask(image) & ~tumour
    statistics = {'WT voxels': int(tumour.sum()), 'missed': missed.sum() / max(tumour.sum(), 1),
                  'FLAIR oedema contrast': _mean(zscores[..., FLAIR], oedema) - _mean(zscores[..., FLAIR], normal)}
    for label, name in ((1, 'of missed: necrosis/NET'), (OEDEMA, 'of missed: oedema'), (4, 'of missed: enhancing')):
        statistics[name] = (missed & (truth == label)).sum() / max(missed.sum(), 1)
    statistics['of missed: in slices with none found'] = missed[slices_without_tumour].sum() / max(missed.sum(), 1)
    for channel, name in ((FLAIR, 'FLAIR'), (T2, 'T2')):
        for mask, kind in ((oedema & found, 'found'), (oedema & ~found, 'missed')):
            statistics['{} of {} oedema'.format(name, kind)] = _mean(zscores[..., channel], mask)
    return statistics


def contrast_correlation(rows):
    """Pearson correlation, over patients, of the share of tumour found with the FLAIR oedema contrast."""
    pairs = np.array([(1.0 - statistics['missed'], statistics['FLAIR oedema contrast']) for _, statistics in rows
                      if np.isfinite(statistics['FLAIR oedema contrast'])])
    return float(np.corrcoef(pairs.T)[0, 1]) if len(pairs) > 2 else float('nan')


def gain_by_contrast_half(rows):
    """Mean 'WT Dice gain' of the patients below and of those above the median FLAIR oedema
    contrast (patients without oedema left out), as (lower half, higher half)."""
    ranked = sorted((statistics['FLAIR oedema contrast'], statistics['WT Dice gain']) for _, statistics in rows
                    if np.isfinite(statistics['FLAIR oedema contrast']))
    half = len(ranked) // 2
    lower, higher = [gain for _, gain in ranked[:half]], [gain for _, gain in ranked[len(ranked) - half:]]
    return (float(np.mean(lower)) if lower else float('nan')), (float(np.mean(higher)) if higher else float('nan'))


def markdown(rows):
    """A markdown table of (patient, statistics) pairs, and the contrast correlation (and, when
    the rows have a 'WT Dice gain', the gain by contrast half) below it."""
    columns = list(rows[0][1])
    lines = ['| patient | ' + ' | '.join(columns) + ' |', '|' + '---|' * (len(columns) + 1)]
    for patient, statistics in rows:
        lines.append('| {} | '.format(patient) + ' | '.join(
            str(value) if isinstance(value, int) else '{:.2f}'.format(value) for value in statistics.values()) + ' |')
    lines += ['', 'Correlation over the {} patients of the share of tumour found (WT sensitivity) with the '
              'FLAIR oedema contrast (mean z-score of oedema minus that of tumour-free brain): r = {:.2f}'.format(
                  len(rows), contrast_correlation(rows))]
    if 'WT Dice gain' in rows[0][1]:
        lines += ['', 'Mean WT Dice gain over the baseline run: {:+.3f} in the lower-contrast half of the '
                  'patients, {:+.3f} in the higher-contrast half'.format(*gain_by_contrast_half(rows))]
    return '\n'.join(lines)


@cli.reports_bad_input
def main(argv=None):
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument('--run-dir', required=True, help='work folder of a finished cross_validation.py run')
    parser.add_argument('--baseline-run-dir', default='',
                        help='a finished run holding out the same patients: add the WT Dice gain over it')
    args = parser.parse_args(argv)
    folds = finished_folds(args.run_dir)
    dice = {row['patient']: row['WT_dice'] for row in held_out_rows(folds)}
    baseline = ({row['patient']: row['WT_dice'] for row in held_out_rows(finished_folds(args.baseline_run_dir))}
                if args.baseline_run_dir else {})
    missing = sorted(set(dice) - set(baseline)) if baseline else []
    if missing:
        raise InputError('{}: holds out no {} (not the same folds as {})'.format(
            args.baseline_run_dir, ', '.join(missing), args.run_dir))
    rows = []
    for fold in folds:
        fold_dir = os.path.join(args.run_dir, 'fold{}'.format(fold['fold']))
        normalization = checkpoints.read_normalization(fold['checkpoints'][0])
        for patient in read_patient_list(os.path.join(fold_dir, 'lists', 'test.txt'), require_labels=True):
            image, truth, _ = load_patient(patient)
            image = standardize(image, normalization)
            prediction, _ = read_volume(find_prediction(patient, os.path.join(fold_dir, 'predictions')))
            statistics = missed_tumour(image, truth, prediction)
            if baseline:
                statistics['WT Dice gain'] = dice[patient.name] - baseline[patient.name]
            rows.append((patient.name, statistics))
    write_run_report(args.run_dir, 'missed_tumour', argv, markdown(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
