"""Measure Inference.py's test-time options on a labelled list: flip averaging and removal of
small connected components, each on and off, and Inference.py's test-time zooms with the flip,
scored by Evaluate.py.

    python experiments/test_time_options.py --list LIST --ckpt-dir CKPT --work-dir DIR

Prints a markdown table (mean WT/TC/ET Dice and PPV, seconds per patient) and writes it to
DIR/results.md.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import Evaluate  # noqa: E402
import Inference  # noqa: E402
from model import cli  # noqa: E402
from model.lists import read_patient_list  # noqa: E402

MIN_COMPONENT_SIZE = 200
COLUMNS = ('WT_dice', 'WT_ppv', 'TC_dice', 'TC_ppv', 'ET_dice', 'ET_ppv')


def parse_args(argv):
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument('--list', required=True, help='labelled patients to segment')
    parser.add_argument('--ckpt-dir', required=True, help='training run folder')
    parser.add_argument('--work-dir', required=True, help='predictions and results go here')
    parser.add_argument('--min-component-size', type=int, default=MIN_COMPONENT_SIZE,
                        help='threshold (voxels) of the component-removal variant')
    return parser.parse_args(argv)


def variants(min_component_size):
    """(name, Inference.py flags) of every on/off combination of flip and removal by size, then
    --tta zooms; removal relative to the largest component stays off, so that removal by size is
    measured alone."""
    components = ['--min-component-size', str(min_component_size)]
    return [(name, flags + ['--min-component-fraction', '0']) for name, flags in (
        ('plain', ['--tta', 'none']), ('flip', ['--tta', 'flip']),
        ('components >= {}'.format(min_component_size), ['--tta', 'none'] + components),
        ('flip + components', ['--tta', 'flip'] + components),
        ('flip + zooms 0.8-1.2', ['--tta', 'zooms']))]


def main(argv=None):
    args = parse_args(argv)
    cli.graph_mode()
    patients = len(read_patient_list(args.list))
    lines = ['| variant | ' + ' | '.join(COLUMNS) + ' | s/patient |', '|' + '---|' * (len(COLUMNS) + 2)]
    for index, (name, flags) in enumerate(variants(args.min_component_size)):
        output = os.path.join(args.work_dir, 'variant{}'.format(index))
        started = time.time()
        if Inference.main(['--list', args.list, '--ckpt-dir', args.ckpt_dir, '--output-dir', output,
                           '--overwrite'] + flags):
            return 1
        seconds = (time.time() - started) / patients
        if Evaluate.main(['--list', args.list, '--pred-dir', output]):
            return 1
        means = Evaluate.mean_of(os.path.join(output, 'metrics.csv'))
        lines.append('| {} | '.format(name) + ' | '.join('{:.3f}'.format(means[c]) for c in COLUMNS)
                     + ' | {:.1f} |'.format(seconds))
    table = '\n'.join(lines)
    with open(os.path.join(args.work_dir, 'results.md'), 'w') as stream:
        stream.write(table + '\n')
    print('\n' + table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
