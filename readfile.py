"""Step 1: index BRATS patients into train/val/test list files.

Finds every patient under the data folders (BRATS2015 .mha or BraTS 2017-2021 NIfTI, at any
depth), splits the labelled ones into training and a seeded, grade-stratified validation
share, and writes LISTS/train.txt, LISTS/val.txt (when the share is positive) and
LISTS/test.txt (unlabelled patients), each a CSV `patient,flair,t1,t1c,t2,label`.
"""
import collections
import os
import sys

from model import cli, paths
from model.brats import find_patients
from model.lists import split_validation, write_patient_list

DATA_DIRS = [paths.DATA_DIR]
LIST_DIR = paths.LIST_DIR
VAL_FRACTION = 0.1
SEED = 0
SKIP_INCOMPLETE = False


def parse_args(argv):
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument('--data-dir', action='append', dest='data_dirs',
                        help='folder to search (repeatable); default: {}'.format(DATA_DIRS))
    parser.add_argument('--list-dir', default=LIST_DIR, help='where the list files go')
    parser.add_argument('--val-fraction', type=float, default=VAL_FRACTION,
                        help='share of labelled patients held out for validation (0 for none)')
    parser.add_argument('--seed', type=int, default=SEED, help='seed of the validation split')
    parser.add_argument('--skip-incomplete', action='store_true', default=SKIP_INCOMPLETE,
                        help='warn about and skip patients missing a modality')
    args = parser.parse_args(argv)
    args.data_dirs = args.data_dirs or DATA_DIRS
    return args


def summarize(patients, split_sizes):
    """One line per fact: patients per layout, per grade, labelled/unlabelled, list sizes."""
    layouts = collections.Counter(patient.layout for patient in patients)
    grades = collections.Counter(patient.grade or 'unknown grade' for patient in patients)
    labelled = sum(1 for patient in patients if patient.label)
    lines = ['found {} patients: {}'.format(len(patients), ', '.join(
                 '{} {}'.format(count, layout) for layout, count in sorted(layouts.items()))),
             'grades: ' + ', '.join('{} {}'.format(count, grade) for grade, count in sorted(grades.items())),
             'labelled: {}, unlabelled: {}'.format(labelled, len(patients) - labelled)]
    lines += ['{}: {} patients'.format(path, size) for path, size in split_sizes]
    return '\n'.join(lines)


def write_lists(patients, list_dir, val_fraction, seed):
    """Write train/val/test lists; returns [(path, number of patients)] for what was written."""
    labelled = [patient for patient in patients if patient.label]
    unlabelled = [patient for patient in patients if not patient.label]
    train, validation = split_validation(labelled, val_fraction, seed)
    os.makedirs(list_dir, exist_ok=True)
    written = []
    for name, members in (('train', train), ('val', validation), ('test', unlabelled)):
        path = os.path.join(list_dir, name + '.txt')
        if members:
            write_patient_list(members, path)
            written.append((path, len(members)))
        elif os.path.exists(path):
            os.remove(path)
    return written


def warn_skipped(message):
    print('warning: skipping {}'.format(message), file=sys.stderr)


@cli.reports_bad_input
def main(argv=None):
    args = parse_args(argv)
    patients = find_patients(args.data_dirs,
                             on_incomplete=warn_skipped if args.skip_incomplete else None)
    written = write_lists(patients, args.list_dir, args.val_fraction, args.seed)
    print(summarize(patients, written))
    return 0


if __name__ == '__main__':
    sys.exit(main())
