"""Benchmark 2: Train.py's step rate on the real input pipeline against one constant batch.

Each run is a child process that turns the same Train.py flags (full width, batch 8, DCR-A, the
measured recipe otherwise, its training crop too) into Train.py's TrainingSettings
(Train.settings_from_flags) and builds the graph that model.training.train builds, with
model.training_graph.build:

  (a) pipeline: model.input.training_dataset -> one-shot iterator -> build_training_graph
  (b) constant: one batch pulled from that same pipeline (in a throwaway graph), embedded as
      tf.constant -> build_training_graph
  (c) input (diagnostic, no target): the pipeline alone, batches pulled with no network, to
      show whether the input can keep up and what it costs
  (d) bfloat16: as (a) with Train.py --bfloat16 on (oneDNN mixed precision), where the CPU
      has native bfloat16
  (e) devices-2: as (a) with Train.py --devices 2 (MirroredStrategy over 2 logical CPU devices
      here), the same global batch split over the replicas
  (f) workers-2: as (a) in a 2-worker TF_CONFIG cluster on localhost ports
      (MultiWorkerMirroredStrategy; the second worker is a second child beside the timed chief)

(e) and (f) cannot be faster on one machine's cores; they measure what the strategies cost.

Each runs the loop's fetches (train op, global step, batch Dice, loss) in a Session with
model.predict.session_config, like Trainer.run, without checkpoints or summaries. The first
steps (shuffle-buffer fill, graph optimisation) are warm-up and not timed. The peak RSS is
that of the whole pipeline child process (os.wait4).
"""
import argparse
import contextlib
import json
import sys
import time

from bench.common import background_child, median, row, run_child
from model.cpu import cpu_has_bfloat16
from model.distribute import localhost_tf_configs

BATCH_SIZE = 8
NETWORK_FLAGS = ['--batch-size', str(BATCH_SIZE), '--dcr-type', 'A', '--width', '1.0']
STEPS, QUICK_STEPS = 20, 3
WARMUP_STEPS, QUICK_WARMUP_STEPS = 3, 1
MODES = ('pipeline', 'constant', 'input', 'bfloat16', 'devices-2', 'workers-2')   # input: no network
MODE_FLAGS = {'bfloat16': ['--bfloat16', 'on'], 'devices-2': ['--devices', '2']}   # Train.py's, beside NETWORK_FLAGS
WORKERS = 2                                 # processes of the workers-2 cluster
INPUT_BATCHES_PER_STEP = 3                  # the input-only run times this many batches per step
TARGET_RATIO = 0.9
TARGET_PEAK_RSS_GIB = 4.0


def run(work, quick=False):
    """Measure both modes, each in its own child process; returns a dict of numbers."""
    steps = QUICK_STEPS if quick else STEPS
    warmup = QUICK_WARMUP_STEPS if quick else WARMUP_STEPS
    records = work.records()
    result = {'batch_size': BATCH_SIZE, 'steps': steps, 'warmup_steps': warmup}
    for mode in (mode for mode in MODES if mode != 'bfloat16' or cpu_has_bfloat16()):
        measured, child = _run_mode(work, mode, records, steps, warmup)
        step_times = child['step_times_s']
        if mode == 'input':
            result.update({'input_only_slices_per_s': BATCH_SIZE * len(step_times) / sum(step_times),
                           'input_only_batches': len(step_times),
                           'input_only_process_cpu_s': measured['cpu_s'],
                           'input_only_process_wall_s': measured['wall_s']})
            continue
        result.update({
            mode + '_slices_per_s': BATCH_SIZE * len(step_times) / sum(step_times),
            mode + '_median_step_s': median(step_times),
            mode + '_step_times_s': step_times,
            mode + '_warmup_times_s': child['warmup_times_s'],
            mode + '_graph_build_s': child['graph_build_s'],
            mode + '_process_wall_s': measured['wall_s'],
            mode + '_peak_rss_gib': measured['peak_rss_mib'] / 1024.0,
        })
        result['network'] = child['network']
        result['augment'] = child['augment']
    for mode in ('devices-2', 'workers-2'):
        result['ratio_{}_to_pipeline'.format(mode)] = result[mode + '_slices_per_s'] / result['pipeline_slices_per_s']
    result['ratio_pipeline_to_constant'] = result['pipeline_slices_per_s'] / result['constant_slices_per_s']
    if 'bfloat16_slices_per_s' in result:
        result['speedup_bfloat16'] = result['bfloat16_slices_per_s'] / result['pipeline_slices_per_s']
    return result


def _run_mode(work, mode, records, steps, warmup):
    """(measurement, report) of the child process of `mode`; for workers-2, of the chief, with the
    other workers running beside it."""
    args = ['--child', mode, '--records', records, '--steps', str(steps), '--warmup', str(warmup),
            '--ckpt-dir', work.folder('training', mode)]
    log = work.path('logs', 'training', mode)
    if mode != 'workers-2':
        return run_child('training', args, log)
    chief, *others = localhost_tf_configs(WORKERS)
    with contextlib.ExitStack() as workers:
        for index, tf_config in enumerate(others, 1):
            workers.enter_context(background_child('training', args, '{}-worker{}'.format(log, index),
                                                   {'TF_CONFIG': tf_config}))
        return run_child('training', args, log, env={'TF_CONFIG': chief})


def rows(result):
    """Table rows of a result of `run`."""
    ratio, peak = result['ratio_pipeline_to_constant'], result['pipeline_peak_rss_gib']
    timed = 'crop {}, {} steps after {} warm-up'.format(result['augment']['crop_size'], result['steps'],
                                                        result['warmup_steps'])
    table = [
        row('Train.py, real pipeline ({})'.format(timed), result['pipeline_slices_per_s'], 'slices/s'),
        row('same graph, constant batch ({})'.format(timed), result['constant_slices_per_s'], 'slices/s'),
        row('ratio pipeline / constant', ratio, '', '>= {}'.format(TARGET_RATIO), ratio >= TARGET_RATIO),
        row('peak RSS, real-pipeline process (batch {})'.format(result['batch_size']), peak, 'GiB',
            '<= {}'.format(TARGET_PEAK_RSS_GIB), peak <= TARGET_PEAK_RSS_GIB),
        row('first warm-up step, real pipeline (fills the shuffle buffer)',
            result['pipeline_warmup_times_s'][0], 's', digits=1),
        row('input pipeline alone, no network ({} batches)'.format(result['input_only_batches']),
            result['input_only_slices_per_s'], 'slices/s', digits=1),
    ]
    table += [row('Train.py --devices 2 (2 logical CPU devices), real pipeline ({})'.format(timed),
                  result['devices-2_slices_per_s'], 'slices/s'),
              row('{} local workers (TF_CONFIG, localhost), real pipeline ({})'.format(WORKERS, timed),
                  result['workers-2_slices_per_s'], 'slices/s'),
              row('ratio --devices 2 / one device (the cost of MirroredStrategy here)',
                  result['ratio_devices-2_to_pipeline'], ''),
              row('ratio {} workers / one (the cost of MultiWorkerMirroredStrategy here)'.format(WORKERS),
                  result['ratio_workers-2_to_pipeline'], '')]
    if 'speedup_bfloat16' in result:
        table += [row('Train.py --bfloat16 on, real pipeline ({})'.format(timed), result['bfloat16_slices_per_s'],
                      'slices/s'),
                  row('speed-up bfloat16 / float32, real pipeline', result['speedup_bfloat16'], 'x')]
    else:
        table.append(row('Train.py --bfloat16 on, real pipeline', 'not measured: this CPU has no native bfloat16'))
    return table


# ---------------------------------------------------------------------------------------------
# The child process: python -m bench.training --child MODE ...

def _measure(settings, mode, steps, warmup, report):
    """Time `steps` training steps after `warmup` of the graph model.training_graph.build makes of
    Train.py's settings: on the pipeline's batches, or on one constant batch of it."""
    import numpy as np
    import tensorflow.compat.v1 as tf
    from model import training_graph
    from model.predict import session_config

    def pipeline_batch():
        return training_graph.training_batch(settings.shard_paths, settings.sidecar, settings.batch_size,
                                             settings.augment, settings.seed)[0]

    if mode == 'input':
        _time_input(pipeline_batch, session_config(settings.gpu_memory_fraction), settings.sidecar, report)
        return
    constant = None
    if mode == 'constant':
        with tf.Graph().as_default(), tf.Session(config=session_config(settings.gpu_memory_fraction)) as session:
            images, labels = session.run(pipeline_batch())
    started = time.perf_counter()
    with tf.Graph().as_default(), tf.device(settings.distribution.worker_device):
        if mode == 'constant':
            constant = (tf.constant(images), tf.constant(labels))
        graph, input_initializer = training_graph.build(settings, constant)
        fetches = {name: graph[name] for name in ('train_op', 'global_step', 'batch_dice')}
        fetches['loss'] = graph['loss']['total']
        with training_graph.training_session(settings.distribution, settings.gpu_memory_fraction,
                                             settings.bfloat16) as session:
            session.run(tf.global_variables_initializer())
            if input_initializer is not None:
                session.run(input_initializer)
            report['graph_build_s'] = time.perf_counter() - started
            times, losses = [], []
            for _ in range(warmup + steps):
                began = time.perf_counter()
                values = session.run(fetches)
                times.append(time.perf_counter() - began)
                losses.append(float(values['loss']))
    if not np.all(np.isfinite(losses)):
        raise RuntimeError('non-finite loss while benchmarking: {}'.format(losses))
    report.update({'warmup_times_s': times[:warmup], 'step_times_s': times[warmup:],
                   'losses': losses, 'global_step': int(values['global_step']),
                   'network': settings.network.to_dict(), 'augment': vars(settings.augment),
                   'batch_size': settings.batch_size, 'slices_in_records': settings.sidecar['num_examples'],
                   'distribution': settings.distribution.describe()})


def _time_input(pipeline_batch, config, sidecar, report):
    import tensorflow.compat.v1 as tf
    batches = INPUT_BATCHES_PER_STEP * report['steps']
    with tf.Graph().as_default():
        batch = pipeline_batch()
        with tf.Session(config=config) as session:
            times = []
            for _ in range(report['warmup'] + batches):
                began = time.perf_counter()
                session.run(batch)
                times.append(time.perf_counter() - began)
    report.update({'warmup_times_s': times[:report['warmup']], 'step_times_s': times[report['warmup']:],
                   'slices_in_records': sidecar['num_examples']})


def child_main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument('--child', choices=MODES, required=True)
    parser.add_argument('--records', required=True)
    parser.add_argument('--steps', type=int, required=True)
    parser.add_argument('--warmup', type=int, required=True)
    parser.add_argument('--ckpt-dir', required=True)
    parser.add_argument('--result', required=True)
    args = parser.parse_args(argv)
    import Train
    report = {'mode': args.child, 'steps': args.steps, 'warmup': args.warmup}
    settings, _ = Train.settings_from_flags(['--train-records', args.records, '--val-list', '', '--ckpt-dir',
                                             args.ckpt_dir, '--num-steps', str(args.warmup + args.steps)]
                                            + NETWORK_FLAGS + MODE_FLAGS.get(args.child, []))
    _measure(settings, args.child, args.steps, args.warmup, report)
    with open(args.result, 'w') as stream:
        json.dump(report, stream)
    return 0


if __name__ == '__main__':
    sys.exit(child_main(sys.argv[1:]))
