"""The whole pipeline on the built-in phantom dataset, in a few minutes on a laptop CPU.

Generates phantom patients in the BRATS2015 layout, then runs the five scripts exactly as a
user would (each command is printed first): readfile -> create_pascal_tf_record -> Train
(with validation) -> Export (a SavedModel in WORK/export/1) -> Inference (from that export) ->
Evaluate. Leaves the metrics in WORK/predictions/metrics.csv
and the paper-style figure in image/example.png. The network is the real DCR architecture at
reduced width, so that it trains within the demo's budget.
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
EXAMPLE_PNG = 'image/example.png'
PIPELINE_PNG = 'image/pipeline.png'
TARGET_WT_DICE = 0.80


def run(script, argv):
    """Print a script's command line, run its main() in-process, stop the demo on failure."""
    print('\n$ python {}.py {}'.format(script.__name__, ' '.join(shlex.quote(arg) for arg in argv)),
          flush=True)
    code = script.main(argv)
    if code:
        sys.exit('demo: {}.py failed with exit code {}'.format(script.__name__, code))


def main(argv=None):
    parser = cli.parser(__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default=WORK_DIR, help='where the demo writes everything')
    args = parser.parse_args(argv)
    work = args.work_dir
    started = time.time()
    data = os.path.join(work, 'phantom')
    lists, records = os.path.join(work, 'lists'), os.path.join(work, 'records')
    ckpt, predictions = os.path.join(work, 'checkpoints'), os.path.join(work, 'predictions')
    exports = os.path.join(work, 'export')
    if not os.path.exists(os.path.join(data, phantom.TRUTH_LIST)):
        run(phantom, ['--output-dir', data, '--hgg', str(NUM_HGG), '--lgg', str(NUM_LGG),
                      '--test', str(NUM_VAL_TEST), '--shape', ','.join(map(str, SHAPE))])
    run(readfile, ['--data-dir', os.path.join(data, 'BRATS2015_Training'),
                   '--data-dir', os.path.join(data, 'Testing'), '--list-dir', lists,
                   '--val-fraction', '0.2'])
    run(create_pascal_tf_record, ['--list', os.path.join(lists, 'train.txt'), '--output-dir', records])
    run(Train, ['--train-records', os.path.join(records, 'train-*'),
                '--val-list', os.path.join(lists, 'val.txt'), '--ckpt-dir', ckpt] + TRAIN_FLAGS)
    shutil.rmtree(exports, ignore_errors=True)   # one version: this run's network
    run(Export, ['--ckpt-dir', ckpt, '--output-dir', exports])
    run(Inference, ['--list', os.path.join(lists, 'test.txt'), '--saved-model', exports,
                    '--output-dir', predictions, '--save-png', '--overwrite'])
    run(Evaluate, ['--list', os.path.join(data, phantom.TRUTH_LIST), '--pred-dir', predictions,
                   '--example-png', EXAMPLE_PNG])
    draw_architecture(PIPELINE_PNG)
    metrics = os.path.join(predictions, 'metrics.csv')
    wt_dice = Evaluate.mean_of(metrics)['WT_dice']
    print('\ndemo finished in {:.1f} minutes; metrics: {}, figures: {}, {}; SavedModel: {}'.format(
        (time.time() - started) / 60, metrics, EXAMPLE_PNG, PIPELINE_PNG, os.path.join(exports, '1')))
    print('mean WT Dice on the {} phantom test patients: {:.3f} (the demo expects >= {:.2f})'.format(
        NUM_VAL_TEST, wt_dice, TARGET_WT_DICE))
    return 0 if wt_dice >= TARGET_WT_DICE else 1


if __name__ == '__main__':
    sys.exit(main())
