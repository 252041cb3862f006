"""Benchmark 4: Inference.py on a patient's own scans (`--t1c --flair --t1 --t2`), at real sizes.

A real BraTS 2018 case is made into clinical scans (bench/clinical.py: T1c a DICOM series at
0.9 x 0.9 x 2 mm, FLAIR in 5 mm slices, T1 sagittal, T2 at 0.7 x 0.7 x 3 mm, each in its own pose),
untimed. The network is the full-width checkpoint of a 1-step Train.py run (its weights do not
matter for speed). Every child process is pinned to 2 CPUs.

- Phases: a child calls Inference.main with the same flags, repeatedly, timing its phases: reading
  the scans, preparing them (skull checks, T1c onto the 1 mm grid, three rigid registrations,
  resampling; model.own_scans.prepare), the prediction (Predictor.predict, with the graph built for
  each window shape) and writing the outputs.
- Whole command: `python Inference.py --t1c ... --output-dir OUT --overwrite` with the defaults, as
  a child process; its wall time includes interpreter start-up, the TensorFlow import, graph build
  and restore, preparation, prediction and every output. Again with `--tta none`, since the
  network's forward passes are most of the time.
"""
import collections
import functools
import json
import os
import sys
import time

from bench.common import PYTHON, child_arguments, median, row, run_child, run_measured, usable_cpus
from bench.training import NETWORK_FLAGS

CORES = 2
CASE = 'Brats18_2013_2_1'
REPEATS, QUICK_REPEATS = 3, 1
TARGET_SECONDS_PER_PATIENT = 30.0   # the whole command, defaults, 2 cores (issue #41)


def _scan_flags(paths):
    return [flag for sequence in ('t1c', 'flair', 't1', 't2') for flag in ('--' + sequence, paths[sequence])]


def run(work, quick=False):
    """Measure the phases and the whole own-scans command; returns a dict of numbers."""
    from bench import clinical
    repeats = QUICK_REPEATS if quick else REPEATS
    cpus = usable_cpus()[:CORES]
    case = clinical.make_clinical_case(os.path.join(work.data_dir, 'brats2018_sample', CASE),
                                       work.folder('own_scans', 'clinical'))
    ckpt = work.checkpoint(NETWORK_FLAGS)
    flags = _scan_flags(case['paths']) + ['--ckpt-dir', ckpt, '--overwrite']
    _, child = run_child('own_scans', ['--child', '--repeats', str(repeats), '--output-dir',
                                       work.folder('own_scans', 'in_process')] + flags,
                         work.path('logs', 'own_scans', 'phases'), cpus)
    scripts, one_pass = ([run_measured([PYTHON, 'Inference.py'] + flags + extra + ['--output-dir', work.folder(
        'own_scans', 'script' + name)], work.path('logs', 'own_scans', 'script{}_{}'.format(name, repeat)), cpus)
        for repeat in range(repeats)] for name, extra in (('', []), ('_tta_none', ['--tta', 'none'])))
    import Inference
    return {
        'cores': len(cpus),
        'case': CASE,
        'defaults': {'tta': Inference.TTA, 'bfloat16': Inference.uses_bfloat16(Inference.BFLOAT16)},
        'scan_sizes': child['scan_sizes'],
        'reference_size': child['reference_size'],
        'repeats': repeats,
        'phase_times_s': child['phase_times_s'],
        'phase_s_per_patient': {phase: median(times) for phase, times in child['phase_times_s'].items()},
        'script_wall_s': median([script['wall_s'] for script in scripts]),
        'script_wall_s_all': [script['wall_s'] for script in scripts],
        'script_peak_rss_mib': max(script['peak_rss_mib'] for script in scripts),
        'script_tta_none_wall_s': median([script['wall_s'] for script in one_pass]),
    }


PHASES = (('read', 'reading the four scans'),
          ('prepare', 'preparation (T1c onto the 1 mm grid, 3 rigid registrations, resampling)'),
          ('predict', 'prediction (graph built per window shape, --tta {tta}, bfloat16 {bfloat16})'),
          ('write', 'writing the outputs (labels, volumes, PNG, transforms)'),
          ('main', 'Inference.main in-process, all of the above'))


def rows(result):
    """Table rows of a result of `run`."""
    seconds = result['script_wall_s']
    defaults = dict(result['defaults'], bfloat16='on' if result['defaults']['bfloat16'] else 'off')
    table = [row('clinical scans of {} (T1c DICOM, FLAIR, T1 sagittal, T2; {} cores)'.format(
        result['case'], result['cores']),
        ', '.join('{} {}'.format(sequence, 'x'.join(map(str, size))) for sequence, size in result['scan_sizes'].items()))]
    table += [row('{}, per patient (median of {})'.format(text.format(**defaults), result['repeats']),
                  result['phase_s_per_patient'][phase], 's') for phase, text in PHASES]
    return table + [
        row('python Inference.py --t1c --flair --t1 --t2, whole process wall, defaults (median of {})'.format(
            result['repeats']), seconds, 's', '<= {}'.format(TARGET_SECONDS_PER_PATIENT),
            seconds <= TARGET_SECONDS_PER_PATIENT, digits=1),
        row('same with --tta none (one forward pass)', result['script_tta_none_wall_s'], 's', digits=1),
        row('peak RSS, own-scans Inference.py process', result['script_peak_rss_mib'], 'MiB', digits=0),
    ]


# ---------------------------------------------------------------------------------------------
# The child process: python -m bench.own_scans --child ...

def _timed(function, times):
    """`function`, appending the seconds of each call to `times`."""
    @functools.wraps(function)
    def timed(*args, **kwargs):
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - began)
    return timed


def child_main(argv):
    args, inference_argv = child_arguments(argv)
    import Inference
    from model import own_scans, predict
    times = collections.defaultdict(list)
    report = {}

    def prepare(scans):
        prepared = own_scans_prepare(scans)
        report.update(scan_sizes={sequence: list(scan.image.GetSize()) for sequence, scan in scans.items()},
                      reference_size=list(prepared.reference.GetSize()))
        return prepared

    own_scans_prepare = own_scans.prepare
    own_scans.read_scans = _timed(own_scans.read_scans, times['read'])
    own_scans.prepare = _timed(prepare, times['prepare'])
    predict.Predictor.predict = _timed(predict.Predictor.predict, times['predict'])
    own_scans.write_results = _timed(own_scans.write_results, times['write'])
    main = _timed(Inference.main, times['main'])
    for _ in range(args.repeats):
        code = main(inference_argv)
        if code:
            return code
    report['phase_times_s'] = dict(times)
    with open(args.result, 'w') as stream:
        json.dump(report, stream)
    return 0


if __name__ == '__main__':
    sys.exit(child_main(sys.argv[1:]))
