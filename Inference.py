"""Step 4: segment every patient of the lists and write one labelled volume per patient.

Reads the volumes directly, normalises them exactly as training does, predicts every axial
slice (with --tta, averaging the probabilities of test-time variants of it), decodes the labels
(--decoding), optionally removes small tumour components (--min-component-fraction) and writes
labels 0-4 with the input's size, spacing, origin and direction:
`VSD.<run name>.<Flair id>.mha` for BRATS2015 patients (the online evaluation's naming) and
`<case>.nii.gz` for NIfTI ones. The network is rebuilt from CKPT/config.json and restored from
its last checkpoint (--checkpoint best: the validation-selected one in CKPT/best/). Several
--ckpt-dir folders make an ensemble that averages the networks' probabilities; --saved-model
predicts with an export of Export.py instead. Patients whose prediction exists are skipped unless
--overwrite.

Own scans: `--t1c PATH --flair PATH --t1 PATH --t2 PATH` segments one patient's scans as a clinic
hands them over (NIfTI, MetaImage or NRRD files, or DICOM series folders, in any grid and pose):
registered onto T1c, segmented, and written on the T1c input's own grid (model/own_scans.py).
"""
import argparse
import collections
import os
import sys

from tqdm import tqdm

from model import checkpoints, cli, own_scans, paths, recipes
from model.cpu import cpu_has_bfloat16
from model.atomic import remove_stale_partials
from model.brats import load_patient, write_volume
from model.errors import InputError
from model.figures import save_overlay_montage
from model.lists import read_patient_list
from model.decoding import DECODINGS, TEST_TIME_AUGMENTATIONS
from model.predict import exported_predictor, restored_predictor

LISTS = (paths.VAL_LIST, paths.TEST_LIST)   # the ones that exist, by default
CKPT_DIR = paths.CKPT_DIR
CHECKPOINT = 'latest'      # 'latest', 'best' (CKPT/best/, else the latest) or a checkpoint path
SAVED_MODEL = ''           # an export of Export.py to predict with instead of CKPT_DIR ('' for the checkpoints)
OUTPUT_DIR = paths.PREDICTIONS_DIR
RUN_NAME = 'dcr'           # the free text in VSD.<run name>.<Flair id>.mha
BATCH_SIZE = 8
# Test-time augmentation ('none', 'flip' or 'zooms'), decoding ('argmax', the paper's, or 'regions'),
# tumour threshold and component removal: the measured recipe's (model/recipes.py), chosen by nested
# cross-validation under the rule in docs/accuracy.md, "Defaults"; each has a flag below.
DECODING = recipes.MEASURED.decoding
BFLOAT16 = 'auto'          # bfloat16 convolutions: 'auto' (where the CPU has them natively), 'on' or 'off'
SHARD = '0/1'              # 'I/N': predict patients I, I+N, I+2N, ... of the lists (0 <= I < N), so N processes split them
SAVE_PNG = False
OVERWRITE = False
GPU_MEMORY_FRACTION = 0.0
SAVE_PROBABILITIES = False   # own scans: also write the region probability maps
DICOM_SEG = False            # own scans: also write a DICOM Segmentation of a DICOM T1c


def parse_args(argv):
    parser = cli.parser(__doc__.splitlines()[0])
    add = parser.add_argument
    add('--list', action='append', dest='lists', help='patients to segment (CSV from readfile.py); '
        'repeatable; default: whichever of {} exist'.format(', '.join(LISTS)))
    add('--ckpt-dir', action='append', dest='ckpt_dirs', help='training run folder with config.json; '
        'repeat it for an ensemble that averages the networks\' probabilities (default {}, or the network '
        'shipped in pretrained/ when that holds no trained run)'.format(CKPT_DIR))
    add('--saved-model', default=SAVED_MODEL, help="an export of Export.py to predict with instead of "
        "--ckpt-dir (its folder of versions, or one version); '' uses the checkpoints")
    add('--checkpoint', default=CHECKPOINT, help="'{}': the last checkpoint; '{}': the validation-selected "
        "one in CKPT/best/ (else the last); or a checkpoint path".format(*checkpoints.KEYWORDS))
    add('--output-dir', default=OUTPUT_DIR, help='where predictions go')
    add('--run-name', default=RUN_NAME, help='free text of VSD.<run>.<id>.mha names')
    add('--batch-size', type=int, default=BATCH_SIZE, help='slices per forward pass')
    add('--tta', choices=tuple(TEST_TIME_AUGMENTATIONS), default=DECODING.tta,
        help="test-time augmentation: 'none' (one forward pass), 'flip' (also the mirror image, 2 passes) "
        "or 'zooms' (flip and zooms 0.8-1.2, 10 passes)")
    add('--decoding', choices=DECODINGS, default=DECODING.method,
        help="labels by 'argmax' over the classes, or by 'regions' (WT, then TC, then ET)")
    add('--tumour-threshold', type=float, default=None,
        help='regions decoding: tumour where P(WT) exceeds this (default {}; below 0.5: more sensitive, '
        'less precise); argmax decoding has none'.format(DECODING.tumour_threshold))
    add('--min-component-size', type=int, default=DECODING.min_component_size,
        help='drop tumour components smaller than this many voxels (0: off)')
    add('--min-component-fraction', type=float, default=DECODING.min_component_fraction,
        help="drop tumour components smaller than this fraction of the patient's largest (0: off; 1: keep the "
        'largest alone; default {:g})'.format(DECODING.min_component_fraction))
    add('--bfloat16', choices=('auto', 'on', 'off'), default=BFLOAT16,
        help="bfloat16 convolutions on the CPU ('auto': on where the CPU has native bfloat16; labels agree "
        'with float32 as docs/accuracy.md measures)')
    add('--shard', type=shard, default=SHARD, help="'I/N': only every N-th patient of the lists, from "
        'the I-th (counting from 0), so that N processes or machines split a test set into one output folder')
    add('--save-png', action='store_true', default=SAVE_PNG, help='write overlay montages too')
    add('--overwrite', action='store_true', default=OVERWRITE, help='redo existing predictions')
    add('--gpu-memory-fraction', type=float, default=GPU_MEMORY_FRACTION)
    scans = parser.add_argument_group('own scans', 'one patient\'s four scans instead of --list: each a NIfTI, '
                                      'MetaImage or NRRD file, or a folder holding one DICOM series')
    for sequence in own_scans.SEQUENCES:
        scans.add_argument('--' + sequence, help='the {} scan'.format(sequence.upper()))
    scans.add_argument('--name', help="output name (default: the T1c file's name, or the DICOM PatientID)")
    scans.add_argument('--series-uid', action='append', help='SeriesInstanceUID to take from a folder holding '
                       'several DICOM series; repeatable')
    scans.add_argument('--save-probabilities', action='store_true', default=SAVE_PROBABILITIES,
                       help='also write the WT, TC and ET probability maps')
    scans.add_argument('--dicom-seg', action='store_true', default=DICOM_SEG,
                       help='also write a DICOM Segmentation referencing the T1c series (T1c given as DICOM)')
    return parser.parse_args(argv)


def shard(text):
    """Parse 'I/N' (0 <= I < N) into (I, N) (an argparse type)."""
    try:
        index, count = (int(part) for part in text.split('/'))
    except ValueError:
        raise argparse.ArgumentTypeError("expected I/N such as 0/2, got {!r}".format(text))
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError('shard {}: I must be at least 0 and below N'.format(text))
    return index, count


def patients_to_segment(lists, part=(0, 1)):
    """Patients of the given lists, or of the default lists that exist (validation and test:
    every patient not used for training); of those, every part[1]-th from the part[0]-th."""
    lists = lists or [path for path in LISTS if os.path.isfile(path)] or [LISTS[-1]]
    patients = [patient for path in lists for patient in read_patient_list(path)]
    counts = collections.Counter(patient.name for patient in patients)
    duplicate = next((name for name, count in counts.items() if count > 1), None)
    if duplicate:
        raise InputError('{}: patient {} is listed twice'.format(', '.join(lists), duplicate))
    index, count = part
    return patients[index::count]


def check_output_dir(output_dir, patients):
    """Refuse an output folder that holds any of the input volumes; create it, and clear
    temporary files of killed earlier runs."""
    output = os.path.realpath(output_dir)
    for patient in patients:
        for path in patient.modality_paths + ((patient.label,) if patient.label else ()):
            if os.path.dirname(os.path.realpath(path)) == output:
                raise InputError('{}: output folder holds input volume {}; choose another '
                                 '--output-dir'.format(output_dir, path))
    os.makedirs(output_dir, exist_ok=True)
    remove_stale_partials(output_dir)
    if not os.access(output_dir, os.W_OK):
        raise InputError('{}: output folder is not writable'.format(output_dir))


def segment(session, predictor, patient, output_path, args):
    """Predict one patient and write its volume (and montage); returns the label volume."""
    image, _, geometry = load_patient(patient, with_label=False)
    with tqdm(total=int(image.any(axis=(1, 2, 3)).sum()), desc=patient.name, unit='slice',
              leave=False) as bar:
        labels = predictor.predict(session, image, progress=bar.update)
    write_volume(labels, geometry, output_path)
    if args.save_png:
        save_overlay_montage(image[..., 0], labels, os.path.join(args.output_dir, patient.name + '.png'))
    return labels


def decoding_of(args):
    """The Decoding the flags ask for: DECODING with each flag given in place of its field."""
    return DECODING.overridden(tta=args.tta, method=args.decoding, tumour_threshold=args.tumour_threshold,
                               min_component_size=args.min_component_size,
                               min_component_fraction=args.min_component_fraction)


def uses_bfloat16(setting):
    """Whether --bfloat16 `setting` ('auto', 'on', 'off') runs the convolutions in bfloat16."""
    return setting == 'on' or (setting == 'auto' and cpu_has_bfloat16())


def default_ckpt_dirs(log=print):
    """[CKPT_DIR] when it holds a trained run; else the network shipped in pretrained/ when it
    exists (said in one line); else [CKPT_DIR], whose error then names it."""
    if not checkpoints.holds_trained_run(CKPT_DIR) and checkpoints.holds_trained_run(paths.PRETRAINED_DIR):
        log('{} holds no trained run: using the network shipped in {}'.format(CKPT_DIR, paths.PRETRAINED_DIR))
        return [paths.PRETRAINED_DIR]
    return [CKPT_DIR]


def opened_predictor(args, decoding):
    """The (session, Predictor, sources) context of the export --saved-model, else of the
    --ckpt-dir folders."""
    options = dict(gpu_memory_fraction=args.gpu_memory_fraction, bfloat16=uses_bfloat16(args.bfloat16))
    if args.saved_model:
        if args.ckpt_dirs or args.checkpoint != CHECKPOINT:
            raise InputError('--saved-model {}: predicts without checkpoints; it cannot go with --ckpt-dir '
                             'or --checkpoint'.format(args.saved_model))
        return exported_predictor(args.saved_model, decoding, args.batch_size, **options)
    return restored_predictor(args.ckpt_dirs or default_ckpt_dirs(), args.checkpoint, decoding, args.batch_size,
                              **options)


@cli.reports_bad_input
def main(argv=None):
    args = parse_args(argv)
    decoding = decoding_of(args)
    cli.graph_mode()
    if own_scans.requested(args):
        return own_scans.run(args, lambda own_args: opened_predictor(own_args, decoding))
    patients = patients_to_segment(args.lists, args.shard)
    done = skipped = 0
    with opened_predictor(args, decoding) as (session, predictor, checkpoints):
        check_output_dir(args.output_dir, patients)
        for patient in tqdm(patients, desc='inference', unit='patient'):
            output_path = os.path.join(args.output_dir, patient.prediction_name(args.run_name))
            if os.path.exists(output_path) and not args.overwrite:
                skipped += 1
                continue
            segment(session, predictor, patient, output_path, args)
            done += 1
    print('wrote {} predictions to {} with {} ({} already there, skipped)'.format(
        done, args.output_dir, ', '.join(checkpoints), skipped))
    return 0


if __name__ == '__main__':
    sys.exit(main())
