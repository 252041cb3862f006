"""Benchmark 1: create_pascal_tf_record.py on the 12 real BraTS 2018 cases.

The script runs as a child process, so interpreter start-up, the TensorFlow import and the
worker pool count in its wall time; patients/s is simply patients / that wall time. Runs with
1 and 2 workers alternate, each into an emptied output folder, and the median is reported.
The on-disk size is the sum of the shard files of the 2-worker run, per patient, in MB
(10^6 bytes). The start-up of `python -c "import tensorflow"` is measured too, for context
only.
"""
import csv
import json
import os
import shutil

from bench.common import PYTHON, median, row, run_measured

WORKER_COUNTS = (1, 2)
REPEATS, QUICK_REPEATS = 3, 1
TARGET_PATIENTS_PER_S = 1.5          # with 2 workers
TARGET_MB_PER_PATIENT = 12.0
# Size of one patient in the original (released) code's format, as given in the brief.
# A reference constant, NOT measured by this benchmark.
REFERENCE_ORIGINAL_MB_PER_PATIENT = 89.0


def _count_patients(list_path):
    with open(list_path, newline='') as stream:
        return sum(1 for record in csv.DictReader(stream) if record['patient'].strip())


def _shard_bytes(output_dir):
    with open(os.path.join(output_dir, 'train.json')) as stream:
        sidecar = json.load(stream)
    total = sum(os.path.getsize(os.path.join(output_dir, shard['file'])) for shard in sidecar['shards'])
    return total, sidecar


def run(work, quick=False):
    """Measure the conversion; returns a dict of numbers (and hands its records to `work`)."""
    repeats = QUICK_REPEATS if quick else REPEATS
    list_path = work.train_list()
    patients = _count_patients(list_path)
    walls = {workers: [] for workers in WORKER_COUNTS}
    cpu = {workers: [] for workers in WORKER_COUNTS}
    rss = {workers: [] for workers in WORKER_COUNTS}
    imports = []
    for repeat in range(repeats):
        imports.append(run_measured([PYTHON, '-c', 'import tensorflow'],
                                    work.path('logs', 'conversion', 'import_tf_{}'.format(repeat)))['wall_s'])
        for workers in WORKER_COUNTS:
            output = os.path.join(work.root, 'records', 'workers_{}'.format(workers))
            shutil.rmtree(output, ignore_errors=True)
            measured = run_measured(
                [PYTHON, 'create_pascal_tf_record.py', '--list', list_path, '--output-dir', output,
                 '--workers', str(workers)],
                work.path('logs', 'conversion', 'workers_{}_{}'.format(workers, repeat)))
            walls[workers].append(measured['wall_s'])
            cpu[workers].append(measured['cpu_s'])
            rss[workers].append(measured['peak_rss_mib'])
    result = {'patients': patients, 'repeats': repeats,
              'python_import_tensorflow_s': median(imports)}
    sizes = {}
    for workers in WORKER_COUNTS:
        output = os.path.join(work.root, 'records', 'workers_{}'.format(workers))
        sizes[workers], sidecar = _shard_bytes(output)
        wall = median(walls[workers])
        result.update({
            'workers_{}_wall_s'.format(workers): wall,
            'workers_{}_wall_s_all'.format(workers): walls[workers],
            'workers_{}_patients_per_s'.format(workers): patients / wall,
            'workers_{}_cpu_s'.format(workers): median(cpu[workers]),
            'workers_{}_peak_rss_mib'.format(workers): max(rss[workers]),
        })
    last = max(WORKER_COUNTS)
    total_bytes, sidecar = _shard_bytes(os.path.join(work.root, 'records', 'workers_{}'.format(last)))
    result.update({
        'slices': sidecar['num_examples'],
        'tumour_slices': sidecar['num_tumour_examples'],
        'shards': len(sidecar['shards']),
        'shard_bytes_total': total_bytes,
        # Not byte-identical between runs: protobuf serialises the feature map in no fixed order.
        'shard_bytes_by_workers': {str(workers): size for workers, size in sizes.items()},
        'mb_per_patient': total_bytes / 1e6 / patients,
        'reference_original_mb_per_patient': REFERENCE_ORIGINAL_MB_PER_PATIENT,
        'speedup_2_vs_1_workers': median(walls[1]) / median(walls[2]),
    })
    work.records_glob = os.path.join(work.root, 'records', 'workers_{}'.format(last), 'train-*')
    return result


def rows(result):
    """Table rows of a result of `run`."""
    rate2 = result['workers_2_patients_per_s']
    table = [row('patients converted', result['patients']),
             row('slices written ({} with tumour), shards'.format(result['tumour_slices']),
                 '{} slices, {} shards'.format(result['slices'], result['shards']))]
    for workers in WORKER_COUNTS:
        table.append(row('wall time, --workers {} (median of {})'.format(workers, result['repeats']),
                         result['workers_{}_wall_s'.format(workers)], 's', digits=1))
    table += [
        row('patients/s, --workers 1', result['workers_1_patients_per_s'], 'patients/s'),
        row('patients/s, --workers 2', rate2, 'patients/s',
            '>= {}'.format(TARGET_PATIENTS_PER_S), rate2 >= TARGET_PATIENTS_PER_S),
        row('speed-up 2 vs 1 workers', result['speedup_2_vs_1_workers'], 'x'),
        row('start-up of python -c "import tensorflow" (in the above)',
            result['python_import_tensorflow_s'], 's', digits=1),
        row('peak RSS of one process, --workers 2', result['workers_2_peak_rss_mib'], 'MiB', digits=0),
        row('size on disk per patient', result['mb_per_patient'], 'MB',
            '<= {}'.format(TARGET_MB_PER_PATIENT), result['mb_per_patient'] <= TARGET_MB_PER_PATIENT),
        row('original format per patient (given constant, NOT measured)',
            result['reference_original_mb_per_patient'], 'MB', kind='reference', digits=0),
    ]
    return table
