"""Patients to sharded TFRecords, in parallel worker processes, written atomically.

Patients are dealt round-robin into shards; each shard is written by one worker under a
temporary name and renamed when complete, so a reader never sees a partial shard. A
histogram normalisation is learned from the patients first, in a pass of its own. The JSON
sidecar is written last; shards of an earlier run that the new run does not produce are
removed after it.
"""
import datetime
import glob
import json
import multiprocessing
import os

import tensorflow.compat.v1 as tf
from tqdm import tqdm

from model import records
from model.atomic import atomic_output, partial_glob
from model.brats import load_patient
from model.errors import InputError
from model.normalization import (METHODS, ZSCORE, brain_mask, check_normalization, intensity_stats, landmarks,
                                 learn_histogram, standardize)


def encode_patient(patient, keep_empty_slices, normalization=ZSCORE):
    """Serialised examples of every axial slice of a labelled patient.

    Args:
      patient: a labelled Patient.
      keep_empty_slices: keep slices with no brain voxel (dropped otherwise).
      normalization: the records' intensity normalisation (model.normalization).
    Returns:
      (list of serialised examples, number of them that hold tumour).
    """
    image, label, _ = load_patient(patient)
    image = standardize(image, normalization)
    mean, std = intensity_stats(image)
    has_brain = brain_mask(image).any(axis=(1, 2))
    examples, tumour = [], 0
    for index in range(image.shape[0]):
        if not keep_empty_slices and not has_brain[index]:
            continue
        examples.append(records.encode_slice(image[index], label[index], patient.name, index, mean, std))
        tumour += int(label[index].any())
    return examples, tumour


def write_shard(task):
    """Write one shard; a worker's unit of work. Returns the shard's sidecar entry."""
    path, patients, keep_empty_slices, normalization = task
    options = tf.io.TFRecordOptions(compression_type=records.COMPRESSION,
                                    compression_level=records.COMPRESSION_LEVEL)
    count = tumour = 0
    with atomic_output(path) as temporary:
        with tf.io.TFRecordWriter(temporary, options) as writer:
            for patient in patients:
                examples, patient_tumour = encode_patient(patient, keep_empty_slices, normalization)
                for example in examples:
                    writer.write(example)
                count += len(examples)
                tumour += patient_tumour
    return {'file': os.path.basename(path), 'patients': [p.name for p in patients],
            'examples': count, 'tumour_examples': tumour}


def plan_shards(patients, output_dir, list_name, num_shards):
    """Deal patients round-robin into `num_shards` shard tasks (0: one shard per patient)."""
    count = min(num_shards or len(patients), len(patients))
    return [(os.path.join(output_dir, records.shard_name(list_name, k, count)), patients[k::count])
            for k in range(count)]


def _remove_matching(pattern, keep=()):
    for path in glob.glob(pattern):
        if os.path.basename(path) not in keep:
            os.remove(path)


def _check_labelled(patients, list_path):
    unlabelled = [patient.name for patient in patients if not patient.label]
    if unlabelled:
        raise InputError('{}: patient {} has no label file; TFRecords are for training '
                         '(Inference.py reads volumes directly)'.format(list_path, unlabelled[0]))


def patient_landmarks(patient):
    """The histogram landmarks of a patient's volume; a worker's unit of work."""
    return landmarks(load_patient(patient, with_label=False)[0])


def learn_normalization(method, patients, workers):
    """The intensity normalisation `method` ('zscore' or 'histogram') learned from `patients`."""
    if method not in METHODS:
        raise InputError('{}: no such intensity normalisation (choose from {})'.format(method, ', '.join(METHODS)))
    if method == 'zscore':
        return ZSCORE
    with _pool(workers) as pool:   # in list order, so a rerun learns the same scale to the last bit
        progress = tqdm(pool.imap(patient_landmarks, patients), total=len(patients),
                        desc='histogram landmarks', unit='patient', disable=None)
        return check_normalization(learn_histogram(list(progress)), 'histogram learned from {} patients'.format(
            len(patients)))


def convert(patients, list_path, output_dir, workers, num_shards=0, keep_empty_slices=False,
            normalization='zscore'):
    """Convert labelled patients into `<list-name>-<k>-of-<n>.tfrecord` shards and a sidecar.

    Args:
      patients: labelled Patients (from the list at list_path).
      list_path: the source list; its base name without extension names the outputs.
      output_dir: where the shards and sidecar go (created if needed).
      workers: worker processes (1 converts in this process).
      num_shards: number of shards, 0 for one per patient.
      keep_empty_slices: keep slices without brain.
      normalization: 'zscore' (records hold raw intensities) or 'histogram' (standardised on
        a scale learned from these patients; see model.normalization).
    Returns:
      The sidecar dict, also written to `<output_dir>/<list-name>.json`.
    """
    _check_labelled(patients, list_path)
    list_name = os.path.splitext(os.path.basename(list_path))[0]
    normalization = learn_normalization(normalization, patients, workers)
    os.makedirs(output_dir, exist_ok=True)
    tasks = [(path, members, keep_empty_slices, normalization)
             for path, members in plan_shards(patients, output_dir, list_name, num_shards)]
    shard_pattern = os.path.join(output_dir, records.shard_glob(list_name))
    sidecar_file = records.sidecar_path(output_dir, list_name)
    if os.path.exists(sidecar_file):
        os.remove(sidecar_file)
    try:
        shards = _write_shards(tasks, workers, list_name)
    except BaseException:
        # Leave no shard behind on failure: those completed before it would be orphans
        # (the sidecar is already gone).
        _remove_matching(shard_pattern)
        raise
    finally:
        _remove_matching(partial_glob(shard_pattern))
    sidecar = {
        'schema_version': records.SCHEMA_VERSION,
        'source_list': list_path,
        'list_name': list_name,
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'compression': records.COMPRESSION,
        'keep_empty_slices': keep_empty_slices,
        'normalization': normalization,
        'num_patients': len(patients),
        'num_examples': sum(shard['examples'] for shard in shards),
        'num_tumour_examples': sum(shard['tumour_examples'] for shard in shards),
        'shards': shards,
    }
    with atomic_output(sidecar_file) as temporary:
        with open(temporary, 'w') as stream:
            json.dump(sidecar, stream, indent=1)
    _remove_matching(shard_pattern, keep={shard['file'] for shard in shards})
    return sidecar


def _write_shards(tasks, workers, list_name):
    shards = []
    # disable=None: no bar unless stderr is a terminal, so logs and captured stderr hold
    # only the one-line error on bad input.
    progress = tqdm(total=len(tasks), desc='{} shards'.format(list_name), unit='shard',
                    disable=None)
    with progress, _pool(workers) as pool:
        for shard in pool.imap_unordered(write_shard, tasks):
            shards.append(shard)
            progress.update()
    return sorted(shards, key=lambda shard: shard['file'])


class _InProcess:
    """A stand-in for a Pool when one worker is asked for: runs tasks in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    @staticmethod
    def imap(function, tasks):
        return map(function, tasks)

    imap_unordered = imap


def _pool(workers):
    if workers <= 1:
        return _InProcess()
    context = multiprocessing.get_context('fork' if 'fork' in multiprocessing.get_all_start_methods() else 'spawn')
    return context.Pool(workers)
