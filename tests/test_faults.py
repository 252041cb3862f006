"""Faults: SIGKILL of the conversion, of Train.py and of Inference.py at an arbitrary moment,
then a rerun, with real subprocesses. Nothing half-written may ever be read, and the reruns
must finish the work without redoing what was complete."""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

from model import phantom, records  # noqa: E402
from model.brats import find_patients  # noqa: E402
from model.errors import InputError  # noqa: E402
from model.lists import write_patient_list  # noqa: E402

pytestmark = pytest.mark.slow   # runs the scripts end to end (make test-fast leaves it out)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_NETWORK = ['--width', '0.125', '--refine-filters', '8', '--batch-size', '2', '--crop-size', '64',
                '--shuffle-buffer', '16', '--summary-every-steps', '0']
TIMEOUT = 180


def script(name, *argv, **kwargs):
    """Start one of the project's scripts as a real subprocess."""
    return subprocess.Popen([sys.executable, os.path.join(ROOT, name)] + [str(a) for a in argv],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def finish(process):
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, output
    return output


def kill_when(process, condition):
    """SIGKILL the process as soon as condition() holds; fail if it ends first."""
    deadline = time.time() + TIMEOUT
    while not condition():
        assert process.poll() is None, 'ended before the kill: ' + process.communicate()[0]
        assert time.time() < deadline, 'condition never held'
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('faults')
    phantom.generate_dataset(str(root / 'phantom'), num_hgg=6, num_lgg=2, num_test=0,
                             shape=(48, 160, 160), progress=False)
    patients = find_patients([str(root / 'phantom')])
    write_patient_list(patients, str(root / 'train.txt'))
    return root, patients


def examples_of(paths):
    """(patient, slice) of every example in the shards, reading each file to its end."""
    found = []
    with tf.Graph().as_default(), tf.Session() as session:
        dataset = tf.data.TFRecordDataset(paths, compression_type=records.COMPRESSION).map(records.parse_example)
        element = tf.data.make_one_shot_iterator(dataset).get_next()
        while True:
            try:
                value = session.run({'patient': element['patient'], 'slice': element['slice']})
            except tf.errors.OutOfRangeError:
                return sorted(found)
            found.append((value['patient'].decode(), int(value['slice'])))


def test_killed_conversion_leaves_nothing_readable_and_a_rerun_completes(dataset):
    root, _ = dataset
    output = root / 'records-killed'
    process = script('create_pascal_tf_record.py', '--list', root / 'train.txt', '--output-dir', output,
                     '--workers', '2')
    kill_when(process, lambda: glob.glob(str(output / 'train-*')))
    # No sidecar yet: readers refuse the folder instead of reading a partial set.
    assert not os.path.exists(records.sidecar_path(str(output), 'train'))
    with pytest.raises(InputError):
        records.resolve_records(str(output / 'train-*'))
    # What carries a shard name is complete: every such file reads to its end.
    examples_of(sorted(glob.glob(str(output / 'train-*'))))
    finish(script('create_pascal_tf_record.py', '--list', root / 'train.txt', '--output-dir', output,
                  '--workers', '2'))
    paths, sidecar = records.resolve_records(str(output / 'train-*'))
    assert not glob.glob(str(output / '.partial-*'))
    clean = root / 'records-clean'
    finish(script('create_pascal_tf_record.py', '--list', root / 'train.txt', '--output-dir', clean,
                  '--workers', '1'))
    expected = examples_of(records.resolve_records(str(clean / 'train-*'))[0])
    assert examples_of(paths) == expected and sidecar['num_examples'] == len(expected)


def checkpoint_steps(ckpt_dir):
    state = tf.train.get_checkpoint_state(str(ckpt_dir))
    return [] if state is None else [int(path.rsplit('-', 1)[1]) for path in state.all_model_checkpoint_paths]


def test_killed_training_resumes_from_an_intact_checkpoint(dataset):
    root, _ = dataset
    records_dir = root / 'records-train'
    finish(script('create_pascal_tf_record.py', '--list', root / 'train.txt', '--output-dir', records_dir))
    ckpt = root / 'ckpt'
    argv = ['--train-records', records_dir / 'train-*', '--ckpt-dir', ckpt, '--val-list', '',
            '--save-every-steps', '2'] + TINY_NETWORK
    process = script('Train.py', '--num-steps', 100000, *argv)
    kill_when(process, lambda: len(checkpoint_steps(ckpt)) >= 3)
    steps = checkpoint_steps(ckpt)
    for step in steps:   # every checkpoint the state file names is whole and consistent
        reader = tf.train.load_checkpoint(str(ckpt / 'model.ckpt-{}'.format(step)))
        assert reader.get_tensor('global_step') == step
        assert reader.get_tensor('beta1_power') == pytest.approx(0.9 ** (step + 1), rel=1e-5)
    last = steps[-1]
    output = finish(script('Train.py', '--num-steps', last + 2, *argv))
    assert 'resumed from' in output and 'model.ckpt-{}'.format(last) in output
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(ckpt)))
    assert reader.get_tensor('global_step') == last + 2
    # Adam's state came back too: its power accumulators continued, not restarted.
    assert reader.get_tensor('beta1_power') == pytest.approx(0.9 ** (last + 3), rel=1e-5)


def test_killed_inference_resumes_without_redoing_finished_patients(dataset):
    root, patients = dataset
    ckpt = root / 'ckpt-inference'
    finish(script('create_pascal_tf_record.py', '--list', root / 'train.txt', '--output-dir',
                  root / 'records-inference'))
    finish(script('Train.py', '--train-records', root / 'records-inference' / 'train-*', '--ckpt-dir', ckpt,
                  '--val-list', '', '--num-steps', 1, *TINY_NETWORK))
    predictions = root / 'predictions'
    argv = ['--list', root / 'train.txt', '--ckpt-dir', ckpt, '--output-dir', predictions]
    names = [patient.prediction_name('dcr') for patient in patients]
    process = script('Inference.py', *argv)
    kill_when(process, lambda: any(os.path.exists(predictions / name) for name in names))
    finished = [name for name in names if os.path.exists(predictions / name)]
    assert 0 < len(finished) < len(names)
    for name in finished:    # a final name always holds a whole volume
        assert sitk.ReadImage(str(predictions / name)).GetSize() == (160, 160, 48)
    stamps = {name: os.stat(predictions / name).st_mtime_ns for name in finished}
    output = finish(script('Inference.py', *argv))
    assert re.search(r'\({} already there, skipped\)'.format(len(finished)), output), output
    assert all(os.stat(predictions / name).st_mtime_ns == stamp for name, stamp in stamps.items())
    for name in names:
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(predictions / name)))
        assert labels.shape == (48, 160, 160) and np.isin(labels, [0, 1, 2, 3, 4]).all()
    assert not glob.glob(str(predictions / '.partial-*'))   # left-overs of the kill are gone


def test_sigterm_saves_and_exits_cleanly(dataset):
    root, _ = dataset
    records_dir = root / 'records-sigterm'
    finish(script('create_pascal_tf_record.py', '--list', root / 'train.txt', '--output-dir', records_dir))
    ckpt = root / 'ckpt-sigterm'
    process = script('Train.py', '--train-records', records_dir / 'train-*', '--ckpt-dir', ckpt,
                     '--val-list', '', '--num-steps', 100000, '--save-every-steps', 1, *TINY_NETWORK)
    deadline = time.time() + TIMEOUT
    while not checkpoint_steps(ckpt):          # the loop runs, so the handler is installed
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 128 + signal.SIGTERM, output   # unfinished: callers must not go on
    assert 'SIGTERM received: saved step' in output
    step = int(re.search(r'SIGTERM received: saved step (\d+)', output).group(1))
    assert checkpoint_steps(ckpt)[-1] == step
