"""Benchmark 4: Inference.py on a patient's own scans (`--t1c --flair --t1 --t2`), at real sizes.

A real BraTS 2018 case is made into clinical scans (model/clinical.py: T1c a DICOM series at
0.9 x 0.9 x 2 mm, FLAIR in 5 mm slices, T1 sagittal, T2 at 0.7 x 0.7 x 3 mm, each in its own pose),
untimed. The network is the full-width checkpoint of a 1-step Train.py run (its weights do not
matter for speed). Every child process is pinned to 2 CPUs.

- Preparation: a child reads the four scans and prepares them (skull checks, T1c onto the 1 mm
  grid, three rigid registrations, resampling; model.own_scans.prepare), timed per patient.
- Whole command: `python Inference.py --t1c ... --output-dir OUT --overwrite` with the defaults, as
  a child process; its wall time includes interpreter start-up, the TensorFlow import, graph build
  and restore, preparation, prediction and every output.
"""
import argparse
import json
import os
import sys
import time

from bench.common import PYTHON, median, row, run_child, run_measured, usable_cpus
from bench.training import NETWORK_FLAGS

CORES = 2
CASE = 'Brats18_2013_2_1'
REPEATS, QUICK_REPEATS = 3, 1
TARGET_SECONDS_PER_PATIENT = 30.0   # the whole command, defaults, 2 cores (issue #41)


def _scan_flags(paths):
    return [flag for sequence in ('t1c', 'flair', 't1', 't2') for flag in ('--' + sequence, paths[sequence])]


def run(work, quick=False):
    """Measure the preparation and the whole own-scans command; returns a dict of numbers."""
    from model import clinical
    repeats = QUICK_REPEATS if quick else REPEATS
    cpus = usable_cpus()[:CORES]
    case = clinical.make_clinical_case(os.path.join(work.data_dir, 'brats2018_sample', CASE),
                                       work.folder('own_scans', 'clinical'))
    ckpt = work.checkpoint(NETWORK_FLAGS)
    _, child = run_child('own_scans', ['--child', '--repeats', str(repeats), '--scans', json.dumps(case['paths'])],
                         work.path('logs', 'own_scans', 'prepare'), cpus)
    output = work.folder('own_scans', 'output')
    scripts = [run_measured([PYTHON, 'Inference.py'] + _scan_flags(case['paths'])
                            + ['--ckpt-dir', ckpt, '--output-dir', output, '--overwrite'],
                            work.path('logs', 'own_scans', 'script_{}'.format(repeat)), cpus)
               for repeat in range(repeats)]
    return {
        'cores': len(cpus),
        'case': CASE,
        'scan_sizes': child['scan_sizes'],
        'reference_size': child['reference_size'],
        'repeats': repeats,
        'prepare_s_per_patient': median(child['prepare_times_s']),
        'prepare_times_s': child['prepare_times_s'],
        'read_s_per_patient': median(child['read_times_s']),
        'script_wall_s': median([script['wall_s'] for script in scripts]),
        'script_wall_s_all': [script['wall_s'] for script in scripts],
        'script_peak_rss_mib': max(script['peak_rss_mib'] for script in scripts),
    }


def rows(result):
    """Table rows of a result of `run`."""
    seconds = result['script_wall_s']
    return [
        row('clinical scans of {} (T1c DICOM, FLAIR, T1 sagittal, T2; {} cores)'.format(
            result['case'], result['cores']),
            ', '.join('{} {}'.format(sequence, 'x'.join(map(str, size)))
                      for sequence, size in result['scan_sizes'].items())),
        row('reading the four scans, per patient (median of {})'.format(result['repeats']),
            result['read_s_per_patient'], 's'),
        row('preparation (T1c onto the 1 mm grid, 3 rigid registrations, resampling), per patient',
            result['prepare_s_per_patient'], 's'),
        row('python Inference.py --t1c --flair --t1 --t2, whole process wall, defaults (median of {})'.format(
            result['repeats']), seconds, 's', '<= {}'.format(TARGET_SECONDS_PER_PATIENT),
            seconds <= TARGET_SECONDS_PER_PATIENT, digits=1),
        row('peak RSS, own-scans Inference.py process', result['script_peak_rss_mib'], 'MiB', digits=0),
    ]


# ---------------------------------------------------------------------------------------------
# The child process: python -m bench.own_scans --child ...

def child_main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument('--child', action='store_true', required=True)
    parser.add_argument('--repeats', type=int, required=True)
    parser.add_argument('--scans', required=True, help='JSON {sequence: path}')
    parser.add_argument('--result', required=True)
    args = parser.parse_args(argv)
    from model import own_scans
    paths = json.loads(args.scans)
    read_times, prepare_times = [], []
    for _ in range(args.repeats):
        began = time.perf_counter()
        scans = own_scans.read_scans(paths)
        read = time.perf_counter()
        prepared = own_scans.prepare(scans)
        prepare_times.append(time.perf_counter() - read)
        read_times.append(read - began)
    report = {'read_times_s': read_times, 'prepare_times_s': prepare_times,
              'scan_sizes': {sequence: list(scan.image.GetSize()) for sequence, scan in scans.items()},
              'reference_size': list(prepared.reference.GetSize())}
    with open(args.result, 'w') as stream:
        json.dump(report, stream)
    return 0


if __name__ == '__main__':
    sys.exit(child_main(sys.argv[1:]))
