"""Step 6 (optional): export a trained network as a TensorFlow SavedModel.

Writes OUTPUT/<version>/ in TF Serving's layout (tag 'serve', signature 'serving_default'): input
'slices', float32 [N, H, W, 4] normalised axial slices (FLAIR, T1, T1c, T2) of any height and width
that are multiples of 32; outputs 'probabilities' [N, H, W, 5] and 'labels' (uint8 argmax, labels
0-4). OUTPUT/<version>/assets.extra/preprocessing.json says how to normalise the slices, so the
export can be used without this repository; `Inference.py --saved-model OUTPUT` predicts with it.
"""
import sys

from model import checkpoints, cli, paths
from model.errors import InputError
from model.export import PREPROCESSING_NAME, EXTRA_DIR, export

CKPT_DIR = paths.CKPT_DIR
CHECKPOINT = 'latest'      # 'latest', 'best' (CKPT/best/, else the latest) or a checkpoint path
OUTPUT_DIR = paths.EXPORT_DIR
VERSION = 0                # the version folder to write; 0: one above the highest there


def parse_args(argv):
    parser = cli.parser(__doc__.splitlines()[0])
    add = parser.add_argument
    add('--ckpt-dir', default=CKPT_DIR, help='training run folder with config.json')
    add('--checkpoint', default=CHECKPOINT, help="'{}': the last checkpoint; '{}': the validation-selected "
        "one in CKPT/best/ (else the last); or a checkpoint path".format(*checkpoints.KEYWORDS))
    add('--output-dir', default=OUTPUT_DIR, help='where the version folders go')
    add('--version', type=int, default=VERSION, help='version folder to write (0: the next free one)')
    return parser.parse_args(argv)


@cli.reports_bad_input
def main(argv=None):
    args = parse_args(argv)
    if args.version < 0:
        raise InputError('--version must be at least 0, not {}'.format(args.version))
    cli.graph_mode()
    target = export(args.ckpt_dir, args.output_dir, args.checkpoint, args.version or None)
    print('wrote SavedModel {} (preprocessing: {}/{}/{})'.format(target, target, EXTRA_DIR, PREPROCESSING_NAME))
    return 0


if __name__ == '__main__':
    sys.exit(main())
