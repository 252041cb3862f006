"""Train.py on several devices and workers (model/distribute.py), on the CPU: 2 logical devices
against one, a 2-worker TF_CONFIG cluster on localhost, sharding of the shards, and refusals.

Each run is its own Train.py process: logical devices and servers must be set up before
TensorFlow's runtime starts, which it has in this test process. The network is the tiny U-Net:
model/distribute.py does not depend on the network, and the U-Net's graph builds and first runs
about 4 times faster than ResNet-50's under 2 replicas (bench/training.py times the DCR network there)."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from model.distribute import Cluster, lost_workers, localhost_tf_configs, parse_tf_config
from model.errors import InputError

pytestmark = pytest.mark.slow   # runs the scripts end to end (make test-fast leaves it out)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = ['--val-list=', '--batch-size', '8', '--crop-size', '64', '--shuffle-buffer', '16', '--summary-every-steps', '1',
       '--architecture', 'unet', '--width', '0.125', '--seed', '3']
# Measured on the tiny U-Net (3 steps, batch 8, Adam at 3e-3): with --sync-batch-norm the first step's
# loss equals one device's to 2e-6 and the next to 5e-5, the weights differ by 1.0% of their norm, because
# float32 sums in another order flip Adam's first, sign-like steps of near-zero gradients. Per-replica
# batch norm differs by 0.2% at the first step already.
FIRST_STEP_TOLERANCE = 1e-4
LATER_STEPS_TOLERANCE = 0.02
WEIGHTS_TOLERANCE = 0.02


def train_process(data, ckpt_dir, *flags, env=None, timeout=600):
    """Run Train.py in a child process; returns the CompletedProcess."""
    return subprocess.run([sys.executable, 'Train.py', '--train-records', data['records'], '--ckpt-dir', str(ckpt_dir)]
                          + RUN + list(flags), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def logged_losses(ckpt_dir):
    """{step: total loss} from the run's TensorBoard events."""
    losses = {}
    for path in glob.glob(os.path.join(str(ckpt_dir), 'logs', 'events.*')):
        for event in tf.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == 'loss/total':
                    losses[event.step] = value.simple_value
    return losses


def kernels(ckpt_dir):
    """The trained conv kernels of the run's latest checkpoint, as one vector."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(ckpt_dir)))
    names = sorted(name for name in reader.get_variable_to_shape_map() if name.endswith('weights') and 'Adam' not in name)
    return np.concatenate([reader.get_tensor(name).ravel() for name in names])


@pytest.fixture(scope='module')
def three_step_runs(data, tmp_path_factory):
    """3 steps of one device, of 2 logical devices with sync batch norm, and of 2 with their own."""
    root = tmp_path_factory.mktemp('devices')
    runs = {'one': [], 'sync': ['--devices', '2', '--sync-batch-norm', 'on'], 'own': ['--devices', '2']}
    for name, flags in runs.items():
        finished = train_process(data, root / name, '--num-steps', '3', *flags)
        assert finished.returncode == 0, finished.stderr[-2000:]
    return {name: root / name for name in runs}


def test_two_devices_with_sync_batch_norm_train_as_one_device(three_step_runs):
    one, sync = logged_losses(three_step_runs['one']), logged_losses(three_step_runs['sync'])
    assert sorted(one) == sorted(sync) == [1, 2, 3]
    assert sync[1] == pytest.approx(one[1], rel=FIRST_STEP_TOLERANCE)
    for step in (2, 3):
        assert sync[step] == pytest.approx(one[step], rel=LATER_STEPS_TOLERANCE)
    one_kernels, sync_kernels = kernels(three_step_runs['one']), kernels(three_step_runs['sync'])
    assert np.linalg.norm(sync_kernels - one_kernels) <= WEIGHTS_TOLERANCE * np.linalg.norm(one_kernels)


def test_per_replica_batch_norm_differs_from_the_first_step(three_step_runs):
    one, own, sync = (logged_losses(three_step_runs[name]) for name in ('one', 'own', 'sync'))
    assert abs(own[1] - one[1]) > 10 * abs(sync[1] - one[1])
    assert own[1] == pytest.approx(one[1], rel=0.1)


def test_the_devices_are_recorded_and_a_checkpoint_moves_to_one_device(data, three_step_runs):
    with open(os.path.join(str(three_step_runs['sync']), 'config.json')) as stream:
        assert json.load(stream)['training']['devices'] == 2
    resumed = train_process(data, three_step_runs['sync'], '--num-steps', '4')
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert tf.train.latest_checkpoint(str(three_step_runs['sync'])).endswith('model.ckpt-4')


def start_cluster(data, ckpt_dirs, steps, *flags):
    """Train.py as the workers of a TF_CONFIG cluster on localhost, worker i with --ckpt-dir
    ckpt_dirs[i] (as on machines without a shared file system), with the C++ log level a user's
    shell would leave to Train.py (this process has set one); returns their Popen objects."""
    env = {name: value for name, value in os.environ.items() if name != 'TF_CPP_MIN_LOG_LEVEL'}
    return [subprocess.Popen([sys.executable, 'Train.py', '--train-records', data['records'],
                              '--ckpt-dir', str(ckpt_dir), '--num-steps', str(steps)] + RUN + list(flags), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(env, TF_CONFIG=tf_config))
            for ckpt_dir, tf_config in zip(ckpt_dirs, localhost_tf_configs(len(ckpt_dirs)))]


def run_cluster(data, ckpt_dirs, steps):
    """Run a cluster of start_cluster to its end; returns each worker's (exit code, stdout, stderr)."""
    processes = start_cluster(data, ckpt_dirs, steps)
    outputs = [process.communicate(timeout=600) for process in processes]
    return [(process.returncode, out, err) for process, (out, err) in zip(processes, outputs)]


def weights_checksums(outputs, step):
    """Each worker's logged weights checksum at `step`."""
    return [re.search(r'worker {} at step {}: weights checksum (\w+)'.format(index, step), out + err).group(1)
            for index, (_, out, err) in enumerate(outputs)]


def test_two_workers_without_shared_storage_resume_from_the_chiefs_checkpoint(data, tmp_path):
    chief, other = tmp_path / 'chief', tmp_path / 'other'    # each worker its own folder
    first = run_cluster(data, [chief, other], 5)
    for code, out, err in first:
        assert code == 0, err[-2000:]
        assert 'reached step 5' in out
    assert len(set(weights_checksums(first, 5))) == 1
    assert tf.train.latest_checkpoint(str(chief)).endswith('model.ckpt-5')
    assert len(glob.glob(str(chief / 'logs' / 'events.*'))) == 1       # the chief's only
    assert sorted(logged_losses(chief)) == [1, 2, 3, 4, 5]
    assert not glob.glob(str(other / '*'))
    resumed = run_cluster(data, [chief, other], 6)
    for index, (code, out, err) in enumerate(resumed):
        assert code == 0, err[-2000:]
        assert "worker {} of 2 starts from the chief's step 5".format(index) in out + err
        assert 'reached step 6' in out
    assert len(set(weights_checksums(resumed, 6))) == 1
    assert weights_checksums(resumed, 6) != weights_checksums(first, 5)
    assert tf.train.latest_checkpoint(str(chief)).endswith('model.ckpt-6')
    assert not glob.glob(str(other / '*'))


@pytest.mark.parametrize('victim', [1, 0])
def test_a_killed_worker_stops_the_other_with_one_line(data, tmp_path, victim):
    folders = [tmp_path / 'chief', tmp_path / 'other']
    workers = start_cluster(data, folders, 10000, '--save-every-steps', '3')
    try:
        deadline = time.time() + 600
        while not os.path.exists(str(folders[0] / 'model.ckpt-6.index')):
            assert all(worker.poll() is None for worker in workers), workers[0].communicate()[1][-2000:]
            assert time.time() < deadline, 'the cluster never reached step 6'
            time.sleep(0.1)
        workers[victim].send_signal(signal.SIGKILL)
        survivor = workers[1 - victim]
        _, err = survivor.communicate(timeout=120)
    finally:
        for worker in workers:
            worker.kill()
            worker.communicate()
    assert survivor.returncode == 1
    assert 'Traceback' not in err and 'GRPC' not in err     # no Python trace, nor gRPC's error log
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r'Train\.py: error: worker {} lost worker {} \(localhost:\d+\) at step \d+: it ended, was '
                        r'killed or cannot be reached \(\w+\); .+'.format(1 - victim, victim), last), last
    if victim == 1:     # the chief's last checkpoint is whole
        latest = tf.train.latest_checkpoint(str(folders[0]))
        assert 'its checkpoint of step {} is intact'.format(latest.rsplit('-', 1)[1]) in last
        reader = tf.train.load_checkpoint(latest)
        assert all(reader.get_tensor(name) is not None for name in reader.get_variable_to_shape_map())


@pytest.mark.parametrize('flags, env, problem', [
    (['--mixed-precision', 'on'], {}, '--mixed-precision on needs a GPU'),
    (['--devices', '3'], {}, '--batch-size 8 does not split over 3 replicas'),
    (['--devices', '0', '--time-budget-minutes', '1'],
     {'TF_CONFIG': json.dumps({'cluster': {'worker': ['localhost:1']}, 'task': {'type': 'worker', 'index': 0}})},
     '--time-budget-minutes with TF_CONFIG'),
    (['--devices', '2'],
     {'TF_CONFIG': json.dumps({'cluster': {'worker': ['localhost:1']}, 'task': {'type': 'worker', 'index': 0}})},
     'several devices per worker need GPUs'),
    ([], {'TF_CONFIG': '{"cluster": '}, 'TF_CONFIG: not JSON'),
])
def test_impossible_distributions_are_refused_in_one_line(data, tmp_path, flags, env, problem):
    finished = train_process(data, tmp_path / 'refused', '--num-steps', '1', *flags, env=env)
    assert finished.returncode != 0
    assert problem in finished.stderr.strip().splitlines()[-1]
    assert not glob.glob(str(tmp_path / 'refused' / 'model.ckpt-*'))


def test_tf_config_is_parsed_and_checked():
    text = json.dumps({'cluster': {'worker': ['a:1', 'b:2', 'c:3']}, 'task': {'type': 'worker', 'index': 2}})
    assert parse_tf_config(text) == Cluster(('a:1', 'b:2', 'c:3'), 2)
    assert not parse_tf_config(text).is_chief and parse_tf_config(text).num_workers == 3
    for bad in ('[]', json.dumps({'cluster': {'worker': ['a:1']}, 'task': {'type': 'worker', 'index': 1}}),
                json.dumps({'cluster': {'worker': ['a:1'], 'ps': ['b:2']}, 'task': {'type': 'worker', 'index': 0}}),
                json.dumps({'cluster': {'worker': []}, 'task': {'type': 'worker', 'index': 0}})):
        with pytest.raises(InputError, match='TF_CONFIG'):
            parse_tf_config(bad)


def test_a_lost_worker_is_named_by_the_error_or_else_every_other_worker_is():
    cluster = Cluster(('a:1', 'b:2', 'c:3'), 1)
    error = tf.errors.UnavailableError(None, None, 'From /job:worker/replica:0/task:1:\nCollective ops is aborted '
                                       'by: Socket closed\nfrom remote target /job:worker/replica:0/task:2')
    assert lost_workers(error, cluster) == 'worker 2 (c:3)'
    assert lost_workers(tf.errors.UnavailableError(None, None, 'Socket closed'), cluster) == \
        'worker 0 (a:1), worker 2 (c:3)'


def test_a_localhost_cluster_gives_each_worker_its_index_and_distinct_ports():
    clusters = [parse_tf_config(text) for text in localhost_tf_configs(3)]
    assert [cluster.task_index for cluster in clusters] == [0, 1, 2]
    assert len({cluster.workers for cluster in clusters}) == 1 and len(set(clusters[0].workers)) == 3
    assert [cluster.is_chief for cluster in clusters] == [True, False, False]


def shard_slices(data, worker, num_workers, paths=None):
    """The serialised slices of one pass over the shards that a worker reads."""
    from model import input as pipeline, records
    paths = paths or records.resolve_records(data['records'])[0]
    with tf.Graph().as_default():
        slices = pipeline._slices(paths, 0, worker, num_workers).take(10000)
        next_slice = tf.data.make_one_shot_iterator(slices).get_next()
        seen = []
        with tf.Session() as session:
            while len(seen) < 400:
                seen.append(session.run(next_slice))
    return seen


@pytest.mark.parametrize('num_workers, by_file', [(2, True), (8, False)])
def test_workers_read_disjoint_shares_that_cover_the_records(data, num_workers, by_file):
    everything = set(shard_slices(data, 0, 1))
    shares = [set(shard_slices(data, worker, num_workers)) for worker in range(num_workers)]
    assert set.union(*shares) == everything
    assert sum(len(share) for share in shares) == len(everything)
    from model import records
    paths = records.resolve_records(data['records'])[0]
    assert (len(paths) >= num_workers) == by_file
