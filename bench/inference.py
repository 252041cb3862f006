"""Benchmark 3: Inference.py on one real BRATS2015 patient against the pure forward pass.

A full-width checkpoint comes from a 1-step Train.py run on the benchmark's records (its
weights do not matter for speed). Every child process here is pinned to 2 CPUs.

- Whole script: `python Inference.py --list <that patient> ...` as a child process; its wall
  time includes interpreter start-up, the TensorFlow import, graph build and restore.
- In-process: a child parses the same flags and opens the predictor with Inference.py's own
  functions, then calls Inference.segment (read the volume, predict every brain slice, write the
  prediction) on the list's first patient: the first call is warm-up, the following are timed.
  Graph build and restore are thus excluded.
- Variants: the in-process measurement again for each other --tta, and with --bfloat16 off
  when Inference.py's default runs bfloat16 here, to show what each costs or saves.
- Pure forward: in that same session, session.run of the Predictor's labels op (window_ops) over the same
  brain slices, cut to the same window, in batches of the same size, already in memory as
  float32. Timed repetitions alternate with the in-process ones.
"""
import json
import os
import sys
import time

from bench.common import PYTHON, child_arguments, median, row, run_child, run_measured, usable_cpus
from bench.training import NETWORK_FLAGS
from model.cpu import vector_extensions

CORES = 2
REPEATS, QUICK_REPEATS = 5, 2
SCRIPT_REPEATS, QUICK_SCRIPT_REPEATS = 3, 1
TARGET_RATIO = 1.15
TARGET_SECONDS_PER_VOLUME = 10.0   # on 2 AVX-512 cores (issue #26)


def _inference_flags(list_path, ckpt, output):
    return ['--list', list_path, '--ckpt-dir', ckpt, '--output-dir', output, '--overwrite']


def variants():
    """(name, extra Inference.py flags) of the variants timed beside the defaults: every other --tta,
    and float32 when the default runs bfloat16 on this CPU."""
    import Inference
    named = [('--tta ' + tta, ['--tta', tta]) for tta in ('none', 'flip', 'zooms') if tta != Inference.DECODING.tta]
    if Inference.uses_bfloat16(Inference.BFLOAT16):
        named.append(('--bfloat16 off', ['--bfloat16', 'off']))
    return named


def run(work, quick=False):
    """Measure Inference.py, its variants and the pure forward pass; returns a dict of numbers."""
    import Inference
    repeats = QUICK_REPEATS if quick else REPEATS
    script_repeats = QUICK_SCRIPT_REPEATS if quick else SCRIPT_REPEATS
    cpus = usable_cpus()[:CORES]
    list_path = work.test_list()
    ckpt = work.checkpoint(NETWORK_FLAGS)
    measured, child = run_child(
        'inference', ['--child', '--repeats', str(repeats)]
        + _inference_flags(list_path, ckpt, work.folder('inference', 'in_process')),
        work.path('logs', 'inference', 'in_process'), cpus)
    inference_s = median(child['segment_times_s'])
    forward_s = median(child['forward_times_s'])
    variant_seconds = {}
    for index, (name, flags) in enumerate(variants()):
        _, variant_child = run_child(
            'inference', ['--child', '--repeats', str(repeats)]
            + _inference_flags(list_path, ckpt, work.folder('inference', 'variant{}'.format(index))) + flags,
            work.path('logs', 'inference', 'variant{}'.format(index)), cpus)
        variant_seconds[name] = median(variant_child['segment_times_s'])
    scripts = [run_measured([PYTHON, 'Inference.py'] + _inference_flags(
                   list_path, ckpt, work.folder('inference', 'script')),
                   work.path('logs', 'inference', 'script_{}'.format(repeat)), cpus)
               for repeat in range(script_repeats)]
    return {
        'cores': len(cpus),
        'cpu_vector_extensions': vector_extensions(),
        'defaults': {'tta': Inference.DECODING.tta, 'bfloat16': Inference.uses_bfloat16(Inference.BFLOAT16)},
        'patient': child['patient'],
        'volume_shape': child['volume_shape'],
        'slices_predicted': child['slices'],
        'window': child['window'],
        'batch_size': child['batch_size'],
        'repeats': repeats,
        'inference_s_per_volume': inference_s,
        'inference_times_s': child['segment_times_s'],
        'forward_s_per_volume': forward_s,
        'forward_times_s': child['forward_times_s'],
        'forward_slices_per_s': child['slices'] / forward_s,
        'ratio_inference_to_forward': inference_s / forward_s,
        'first_segment_call_s': child['first_call_s'],
        'build_and_restore_s': child['build_restore_s'],
        'script_repeats': script_repeats,
        'script_wall_s': median([script['wall_s'] for script in scripts]),
        'script_wall_s_all': [script['wall_s'] for script in scripts],
        'script_peak_rss_mib': max(script['peak_rss_mib'] for script in scripts),
        'checkpoint_train_1_step_wall_s': work.prepared['train_1_step']['wall_s'],
        'variant_inference_s_per_volume': variant_seconds,
    }


def rows(result):
    """Table rows of a result of `run`."""
    seconds, ratio = result['inference_s_per_volume'], result['ratio_inference_to_forward']
    defaults = result['defaults']
    avx512 = 'avx512f' in result['cpu_vector_extensions']
    table = [
        row('patient, slices predicted, window, batch ({} cores)'.format(result['cores']),
            '{}, {} slices, {}, batch {}'.format(result['patient'], result['slices_predicted'],
                                                 result['window'], result['batch_size'])),
        row('CPU vector extensions', ' '.join(result['cpu_vector_extensions']) or 'none of AVX2/AVX-512'),
        row('Inference.py defaults (--tta {}, bfloat16 {}) in-process, per volume (median of {}, excl. '
            'build/restore)'.format(defaults['tta'], 'on' if defaults['bfloat16'] else 'off', result['repeats']),
            seconds, 's', '<= {} (AVX-512)'.format(TARGET_SECONDS_PER_VOLUME) if avx512 else '',
            seconds <= TARGET_SECONDS_PER_VOLUME if avx512 else None),
    ]
    for name, variant_seconds in result['variant_inference_s_per_volume'].items():
        table.append(row('same with {}'.format(name), variant_seconds, 's'))
    return table + [
        row('pure forward of the same slices, per volume', result['forward_s_per_volume'], 's'),
        row('pure forward rate', result['forward_slices_per_s'], 'slices/s', digits=1),
        row('ratio inference / forward', ratio, '', '<= {}'.format(TARGET_RATIO), ratio <= TARGET_RATIO),
        row('python Inference.py, whole process wall (median of {})'.format(result['script_repeats']),
            result['script_wall_s'], 's', digits=1),
        row('Inference.py start to first patient (args, list, graph build, restore)',
            result['build_and_restore_s'], 's', digits=1),
        row('peak RSS, Inference.py process', result['script_peak_rss_mib'], 'MiB', digits=0),
    ]


# ---------------------------------------------------------------------------------------------
# The child process: python -m bench.inference --child ...

def _time_segments(session, predictor, patient, output_path, inference_args, repeats, report):
    """Time Inference.segment on `patient`: one warm-up call, then timed calls alternating with the
    pure forward passes of the same windows."""
    import numpy as np
    import Inference
    from model.brats import load_patient
    from model.predict import cut_window

    began = time.perf_counter()
    Inference.segment(session, predictor, patient, output_path, inference_args)
    report['first_call_s'] = time.perf_counter() - began

    image, mean, std, plan = predictor.plan(load_patient(patient, with_label=False)[0])
    batches = []
    for indices, window in plan:
        raw_input, mean_input, std_input, _, labels_op = predictor.window_ops(session.graph, window.height, window.width)
        batches.append((labels_op, {raw_input: cut_window(image[indices], window).astype(np.float32),
                                    mean_input: mean, std_input: std}))
    slices = sum(len(indices) for indices, _ in plan)
    pixels = sum(len(indices) * window.height * window.width for indices, window in plan)
    segment_times, forward_times = [], []
    for _ in range(repeats):
        began = time.perf_counter()
        Inference.segment(session, predictor, patient, output_path, inference_args)
        segment_times.append(time.perf_counter() - began)
        began = time.perf_counter()
        for labels_op, feed in batches:
            session.run(labels_op, feed)
        forward_times.append(time.perf_counter() - began)
    report.update({'patient': patient.name, 'volume_shape': list(image.shape), 'slices': int(slices),
                   'window': 'per batch, mean {:.0f} px per slice'.format(pixels / slices),
                   'batch_size': predictor.batch_size, 'segment_times_s': segment_times,
                   'forward_times_s': forward_times})


def child_main(argv):
    """Inference.py's own functions on the first patient of its flags' lists, timed (no stand-in)."""
    args, inference_argv = child_arguments(argv)
    import Inference
    from model import cli
    started = time.perf_counter()
    inference_args = Inference.parse_args(inference_argv)
    decoding = Inference.decoding_of(inference_args)
    cli.graph_mode()
    patient = Inference.patients_to_segment(inference_args.lists)[0]
    report = {}
    with Inference.opened_predictor(inference_args, decoding) as (session, predictor, _):
        Inference.check_output_dir(inference_args.output_dir, [patient])
        report['build_restore_s'] = time.perf_counter() - started
        output_path = os.path.join(inference_args.output_dir, patient.prediction_name(inference_args.run_name))
        _time_segments(session, predictor, patient, output_path, inference_args, args.repeats, report)
    with open(args.result, 'w') as stream:
        json.dump(report, stream)
    return 0


if __name__ == '__main__':
    sys.exit(child_main(sys.argv[1:]))
