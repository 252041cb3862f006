"""Step 2: write the axial slices of a patient list to sharded, GZIP-compressed TFRecords.

Each slice becomes one tf.train.Example (schema in model/records.py): the four modalities as
raw int16, the label, and the volume's intensity statistics for normalisation at read time.
With --normalization histogram, the intensities are first standardised onto a scale learned
from the list's patients; Train.py passes that scale on to Inference.py through the checkpoint.
Outputs: RECORDS/<list-name>-<k>-of-<n>.tfrecord and the sidecar RECORDS/<list-name>.json.
Only labelled lists are converted; Inference.py reads test volumes directly.
"""
import os
import sys

from model import cli, paths
from model.conversion import convert
from model.lists import read_patient_list
from model.normalization import METHODS

LIST = paths.TRAIN_LIST
OUTPUT_DIR = paths.RECORDS_DIR
WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
NUM_SHARDS = 0
KEEP_EMPTY_SLICES = False
NORMALIZATION = 'zscore'          # or 'histogram' (see model/normalization.py)


def parse_args(argv):
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument('--list', default=LIST, help='patient list (CSV from readfile.py)')
    parser.add_argument('--output-dir', default=OUTPUT_DIR, help='where the records go')
    parser.add_argument('--workers', type=int, default=WORKERS, help='worker processes')
    parser.add_argument('--num-shards', type=int, default=NUM_SHARDS,
                        help='number of shards; 0 for one shard per patient')
    parser.add_argument('--keep-empty-slices', action='store_true', default=KEEP_EMPTY_SLICES,
                        help='also keep slices that hold no brain voxel')
    parser.add_argument('--normalization', choices=METHODS, default=NORMALIZATION,
                        help='z-score each volume, or histogram-standardise it first')
    return parser.parse_args(argv)


@cli.reports_bad_input
def main(argv=None):
    args = parse_args(argv)
    patients = read_patient_list(args.list, require_labels=True)
    sidecar = convert(patients, args.list, args.output_dir, args.workers,
                      num_shards=args.num_shards, keep_empty_slices=args.keep_empty_slices,
                      normalization=args.normalization)
    print('wrote {} slices ({} with tumour) of {} patients into {} shards in {}'.format(
        sidecar['num_examples'], sidecar['num_tumour_examples'], sidecar['num_patients'],
        len(sidecar['shards']), args.output_dir))
    return 0


if __name__ == '__main__':
    sys.exit(main())
