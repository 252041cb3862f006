"""The whole pipeline on the built-in phantom dataset, in a few minutes on a laptop CPU.

Generates phantom patients in the BRATS2015 layout, then runs the five scripts exactly as a
user would (each command is printed first, as it runs from the project's folder): readfile ->
create_pascal_tf_record -> Train (with validation) -> Export (a SavedModel in WORK/export/1) ->
Inference (from that export) -> Evaluate. Everything it writes is under WORK: the metrics in
WORK/predictions/metrics.csv, the paper-style figure WORK/example.png and the network's figure
WORK/pipeline.png. Only --readme-figures copies the two figures over the README's, in image/. The
network is the real DCR architecture at reduced width, so that it trains within the demo's budget.
"""
import os
import shlex
import shutil
import sys
import time

import Evaluate
import Export
import Inference
import Train
import create_pascal_tf_record
import readfile
from model import cli, phantom
from model.figures import draw_architecture

WORK_DIR = 'demo'
NUM_HGG = 8
NUM_LGG = 2
NUM_VAL_TEST = 4
SHAPE = (64, 240, 240)
TRAIN_FLAGS = ['--num-steps', '600', '--batch-size', '8', '--width', '0.25', '--refine-filters', '16',
               '--validate-every-steps', '200', '--save-every-steps', '200', '--summary-every-steps', '50']
# The figures the demo writes into its work folder, and the README's copies that --readme-figures replaces.
README_FIGURES = {'example.png': 'image/example.png', 'pipeline.png': 'image/pipeline.png'}
TARGET_WT_DICE = 0.80


def command_line(script, argv):
    """The shell command that runs `script` (a module of this project) with `argv` from the project's
    folder: `python Train.py ...` for a top-level script, `python -m model.phantom ...` for a package's."""
    program = ['-m', script.__name__] if '.' in script.__name__ else [script.__name__ + '.py']
    return ' '.join(shlex.quote(arg) for arg in ['python'] + program + list(argv))


def run(script, argv):
    """Print a script's command line, run its main() in-process, stop the demo on failure."""
    print('\n$ ' + command_line(script, argv), flush=True)
    code = script.main(argv)
    if code:
        sys.exit('demo: `{}` failed with exit code {}'.format(command_line(script, argv), code))


def work_paths(work):
    """{name: path} of everything the demo writes, all under `work`."""
    names = ('phantom', 'lists', 'records', 'checkpoints', 'export', 'predictions') + tuple(README_FIGURES)
    return {name: os.path.join(work, name) for name in names}


def steps(work):
    """[(script, argv)]: the commands the demo runs, in order, with everything under `work`."""
    paths = work_paths(work)
    data, lists, records = paths['phantom'], paths['lists'], paths['records']
    ckpt, exports, predictions = paths['checkpoints'], paths['export'], paths['predictions']
    return [
        (phantom, ['--output-dir', data, '--hgg', str(NUM_HGG), '--lgg', str(NUM_LGG), '--test', str(NUM_VAL_TEST),
                   '--shape', ','.join(map(str, SHAPE))]),
        (readfile, ['--data-dir', os.path.join(data, 'BRATS2015_Training'), '--data-dir', os.path.join(data, 'Testing'),
                    '--list-dir', lists, '--val-fraction', '0.2']),
        (create_pascal_tf_record, ['--list', os.path.join(lists, 'train.txt'), '--output-dir', records]),
        (Train, ['--train-records', os.path.join(records, 'train-*'), '--val-list', os.path.join(lists, 'val.txt'),
                 '--ckpt-dir', ckpt] + TRAIN_FLAGS),
        (Export, ['--ckpt-dir', ckpt, '--output-dir', exports]),
        (Inference, ['--list', os.path.join(lists, 'test.txt'), '--saved-model', exports, '--output-dir', predictions,
                     '--save-png', '--overwrite']),
        (Evaluate, ['--list', os.path.join(data, phantom.TRUTH_LIST), '--pred-dir', predictions,
                    '--example-png', paths['example.png']]),
    ]


def main(argv=None):
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default=WORK_DIR, help='where the demo writes everything')
    parser.add_argument('--readme-figures', action='store_true',
                        help='also copy the figures over the README\'s: {}'.format(', '.join(README_FIGURES.values())))
    args = parser.parse_args(argv)
    paths = work_paths(args.work_dir)
    started = time.time()
    shutil.rmtree(paths['export'], ignore_errors=True)   # one version: this run's network
    for script, script_argv in steps(args.work_dir):
        if script is not phantom or not os.path.exists(os.path.join(paths['phantom'], phantom.TRUTH_LIST)):
            run(script, script_argv)
    draw_architecture(paths['pipeline.png'])
    if args.readme_figures:
        for name, readme_copy in README_FIGURES.items():
            shutil.copyfile(paths[name], readme_copy)
            print('copied {} to {}'.format(paths[name], readme_copy))
    metrics = os.path.join(paths['predictions'], 'metrics.csv')
    wt_dice = Evaluate.mean_of(metrics)['WT_dice']
    print('\ndemo finished in {:.1f} minutes; metrics: {}, figures: {}, {}; SavedModel: {}'.format(
        (time.time() - started) / 60, metrics, paths['example.png'], paths['pipeline.png'],
        os.path.join(paths['export'], '1')))
    print('mean WT Dice on the {} phantom test patients: {:.3f} (the demo expects >= {:.2f})'.format(
        NUM_VAL_TEST, wt_dice, TARGET_WT_DICE))
    return 0 if wt_dice >= TARGET_WT_DICE else 1


if __name__ == '__main__':
    sys.exit(main())
