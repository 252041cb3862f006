"""Step 5: score predictions against the ground truth on the BRATS regions.

For every patient of a labelled list, finds its prediction by Inference.py's naming rule and
computes Dice, PPV, sensitivity and the 95 % Hausdorff distance (mm) for the whole tumour
(labels 1-4), tumour core (1, 3, 4) and enhancing tumour (4). Prints a table and writes a CSV
with one row per patient and a `mean` row (NaN skipped).
"""
import csv
import math
import os
import sys

from tqdm import tqdm

from model import cli, paths
from model.atomic import atomic_output
from model.brats import DataError, find_prediction, load_patient, read_volume
from model.figures import save_example
from model.labels import check_labels
from model.lists import read_patient_list
from model.metrics import mean_row, metric_columns, score_regions

LIST = paths.VAL_LIST
PRED_DIR = paths.PREDICTIONS_DIR
OUTPUT = ''        # '' means PRED_DIR/metrics.csv
RUN_NAME = ''      # '' accepts any VSD.<run>.<FlairID>.mha
EXAMPLE_PNG = ''   # e.g. image/example.png: FLAIR | prediction | truth of the median-WT-Dice patient


def parse_args(argv):
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument('--list', default=LIST, help='labelled patients (CSV from readfile.py)')
    parser.add_argument('--pred-dir', default=PRED_DIR, help='folder of predictions')
    parser.add_argument('--output', default=OUTPUT, help="metrics CSV ('' for PRED_DIR/metrics.csv)")
    parser.add_argument('--run-name', default=RUN_NAME, help='only VSD.<run>.<id>.mha predictions')
    parser.add_argument('--example-png', default=EXAMPLE_PNG,
                        help="paper-style figure of the median-WT-Dice patient ('' for none)")
    return parser.parse_args(argv)


def load_pair(patient, pred_dir, run_name):
    """(image, truth, prediction, geometry) of a patient; DataError on a bad prediction."""
    image, truth, geometry = load_patient(patient)
    path = find_prediction(patient, pred_dir, run_name or None)
    prediction, predicted_geometry = read_volume(path)
    if not geometry.matches(predicted_geometry):
        raise DataError('{}: prediction grid differs from patient {}\'s images (size {} vs {}, '
                        'origin {} vs {})'.format(path, patient.name, predicted_geometry.size,
                                                  geometry.size, predicted_geometry.origin, geometry.origin))
    return image, truth, check_labels(prediction, 'brats2015', path), geometry


def score_patient(patient, pred_dir, run_name):
    """Metrics row of one patient."""
    _, truth, prediction, geometry = load_pair(patient, pred_dir, run_name)
    spacing_zyx = tuple(reversed(geometry.spacing))
    return dict(patient=patient.name, **score_regions(prediction, truth, spacing_zyx))


def format_table(rows):
    """Fixed-width text table of metric rows."""
    columns = ['patient'] + metric_columns()
    width = max(len('patient'), *(len(str(row['patient'])) for row in rows))
    lines = [' '.join(['patient'.ljust(width)] + [name.rjust(14) for name in columns[1:]])]
    for row in rows:
        cells = [str(row['patient']).ljust(width)]
        cells += ['{:14.4f}'.format(row[name]) if not math.isnan(row[name]) else 'nan'.rjust(14)
                  for name in columns[1:]]
        lines.append(' '.join(cells))
    return '\n'.join(lines)


def write_csv(rows, path):
    """Write the metrics rows to CSV atomically (NaN as an empty cell)."""
    columns = ['patient'] + metric_columns()
    with atomic_output(path) as temporary:
        with open(temporary, 'w', newline='') as stream:
            writer = csv.writer(stream, lineterminator='\n')
            writer.writerow(columns)
            for row in rows:
                writer.writerow([row['patient']] + ['' if math.isnan(row[name]) else '{:.6f}'.format(row[name])
                                                    for name in columns[1:]])


def save_median_example(patients, rows, pred_dir, run_name, path):
    """Write the FLAIR | prediction | truth figure of the patient with the median WT Dice."""
    order = sorted(range(len(patients)), key=lambda index: rows[index]['WT_dice'])
    patient = patients[order[len(order) // 2]]
    image, truth, prediction, _ = load_pair(patient, pred_dir, run_name)
    save_example(image[..., 0], prediction, truth, path,
                 title='{} (WT Dice {:.3f})'.format(patient.name, rows[patients.index(patient)]['WT_dice']))


def read_csv(path):
    """Rows of a metrics CSV written by write_csv, metric values as floats (NaN when empty)."""
    with open(path, newline='') as stream:
        return [{key: value if key == 'patient' else float(value) if value else math.nan
                 for key, value in row.items()} for row in csv.DictReader(stream)]


def mean_of(path):
    """The `mean` row of a metrics CSV."""
    return next(row for row in read_csv(path) if row['patient'] == 'mean')


@cli.reports_bad_input
def main(argv=None):
    args = parse_args(argv)
    patients = read_patient_list(args.list, require_labels=True)
    if not os.path.isdir(args.pred_dir):
        raise DataError('{}: prediction folder does not exist'.format(args.pred_dir))
    rows = [score_patient(patient, args.pred_dir, args.run_name)
            for patient in tqdm(patients, desc='evaluation', unit='patient', leave=False)]
    rows.append(dict(patient='mean', **mean_row(rows)))
    output = args.output or os.path.join(args.pred_dir, 'metrics.csv')
    write_csv(rows, output)
    print(format_table(rows))
    print('wrote {}'.format(output))
    if args.example_png:
        save_median_example(patients, rows, args.pred_dir, args.run_name, args.example_png)
        print('wrote {}'.format(args.example_png))
    return 0


if __name__ == '__main__':
    sys.exit(main())
