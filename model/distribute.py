"""Training on several devices and machines with TensorFlow's own engine (tf.distribute).

One machine: `tf.compat.v1.distribute.MirroredStrategy` over N GPUs, or over N logical CPU
devices where there is no GPU (so the same graph runs in tests and CI). Several machines: the
standard `TF_CONFIG` environment variable (cluster and task JSON) selects
`MultiWorkerMirroredStrategy`; in graph mode each worker starts its own `tf.distribute.Server`
and its sessions connect to it with the strategy's session configuration.

Workers need not share a file system: only the chief reads and writes the checkpoints, and
WorkerSync hands its restored variables and step to every worker before the first step, then
turns a lost worker into one line instead of a gRPC trace.

A Distribution says which of these applies; model.training builds the same compat.v1 training
graph under its strategy, one copy per replica, with the gradients all-reduced.
"""
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import socket

import tensorflow.compat.v1 as tf

from model.errors import InputError

TF_CONFIG = 'TF_CONFIG'
# What a collective op raises when a peer ends, is killed or cannot be reached.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
               tf.errors.DeadlineExceededError)
TASK_PATTERN = re.compile(r'/job:worker/replica:\d+/task:(\d+)')


class WorkerLost(RuntimeError):
    """Another worker of the cluster ended or became unreachable, so training cannot go on."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The workers of a TF_CONFIG and this process's place among them."""
    workers: tuple
    task_index: int

    @property
    def num_workers(self):
        """How many worker processes train together."""
        return len(self.workers)

    @property
    def is_chief(self):
        """Worker 0 writes checkpoints, config.json, summaries and validation; the others only train."""
        return self.task_index == 0


def parse_tf_config(text):
    """The Cluster of a TF_CONFIG value ({"cluster": {"worker": [...]}, "task": {"type": "worker",
    "index": i}}), or an InputError that says what is wrong with it."""
    try:
        config = json.loads(text)
    except ValueError as error:
        raise InputError('{}: not JSON ({})'.format(TF_CONFIG, error)) from None
    if not isinstance(config, dict):
        raise InputError('{}: a JSON object with "cluster" and "task" is needed'.format(TF_CONFIG))
    cluster, task = config.get('cluster'), config.get('task')
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise InputError('{}: a JSON object with "cluster" and "task" is needed'.format(TF_CONFIG))
    if set(cluster) - {'worker'}:
        raise InputError('{}: only "worker" jobs are supported (every worker trains; worker 0 is the chief), '
                         'not {}'.format(TF_CONFIG, ', '.join(sorted(set(cluster) - {'worker'}))))
    workers = cluster.get('worker')
    if not isinstance(workers, list) or not workers or not all(isinstance(address, str) for address in workers):
        raise InputError('{}: "cluster": {{"worker": [...]}} must list "host:port" addresses'.format(TF_CONFIG))
    index = task.get('index')
    if task.get('type') != 'worker' or not isinstance(index, int) or not 0 <= index < len(workers):
        raise InputError('{}: "task" must be {{"type": "worker", "index": i}} with 0 <= i < {}, not {}'.format(
            TF_CONFIG, len(workers), json.dumps(task)))
    return Cluster(tuple(workers), index)


def localhost_tf_configs(num_workers):
    """TF_CONFIG values of a cluster of `num_workers` workers on this machine, one per worker index,
    on ports that were free a moment ago (to try a cluster, or measure its overhead, on one machine)."""
    sockets = [socket.socket() for _ in range(num_workers)]
    for held in sockets:
        held.bind(('localhost', 0))
    workers = ['localhost:{}'.format(held.getsockname()[1]) for held in sockets]
    for held in sockets:
        held.close()
    return [json.dumps({'cluster': {'worker': workers}, 'task': {'type': 'worker', 'index': index}})
            for index in range(num_workers)]


def cluster_from_environment():
    """The Cluster that TF_CONFIG describes, or None when it is not set."""
    text = os.environ.get(TF_CONFIG, '')
    return parse_tf_config(text) if text.strip() else None


def local_devices(count):
    """Names of `count` devices of this machine for the replicas: its first GPUs, or, without GPUs,
    `count` logical CPU devices (made here, so call before TensorFlow's runtime starts)."""
    gpus = tf.config.list_physical_devices('GPU')
    if gpus:
        if count > len(gpus):
            raise InputError('--devices {}: this machine has {} GPUs'.format(count, len(gpus)))
        return ['/device:GPU:{}'.format(index) for index in range(count)]
    cpu = tf.config.list_physical_devices('CPU')[0]
    if count > 1:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    return ['/device:CPU:{}'.format(index) for index in range(count)]


def has_gpu():
    """Whether TensorFlow sees a GPU on this machine."""
    return bool(tf.config.list_physical_devices('GPU'))


def default_device_count():
    """Every GPU of this machine, else one CPU."""
    return max(1, len(tf.config.list_physical_devices('GPU')))


@tf.RegisterGradient('DcrReplicaSum')
def _replica_sum_gradient(op, gradient):
    """The gradient of a sum over replicas is the sum of the replicas' gradients."""
    return all_reduced_sum([gradient])[0]


def all_reduced_sum(values):
    """The sums over the replicas in sync of a list of tensors, without a gradient (the strategy's
    own ReplicaContext.all_reduce builds one that fails on graph-mode mirrored variables)."""
    def batch_sum(strategy, *per_replica):
        return strategy.extended.batch_reduce_to(tf.distribute.ReduceOp.SUM,
                                                 [(value, value) for value in per_replica])
    return tf.distribute.get_replica_context().merge_call(batch_sum, args=[tf.stop_gradient(v) for v in values])


def replica_sum(values):
    """The sums over the replicas in sync of a list of tensors; gradients are summed over the
    replicas too, so each replica receives what every replica's loss asks of its inputs."""
    sums = all_reduced_sum(values)
    with tf.get_default_graph().gradient_override_map({'Identity': 'DcrReplicaSum'}):
        return [tf.identity(value) + tf.stop_gradient(total - value) for value, total in zip(values, sums)]


class Distribution:
    """Where training runs: how many devices and workers, and the strategy that spans them.

    With one device and no cluster, `strategy` is None and training builds its ordinary
    single-device graph.
    """

    def __init__(self, devices=1, cluster=None):
        if devices < 1:
            raise InputError('--devices {}: at least one device is needed'.format(devices))
        self.cluster = cluster
        self.devices = devices
        self.server = None
        if cluster is not None:
            self.strategy = self._multi_worker_strategy(devices, cluster)
        elif devices > 1:
            self.strategy = tf.distribute.MirroredStrategy(devices=local_devices(devices))
        else:
            self.strategy = None

    def _multi_worker_strategy(self, devices, cluster):
        from tensorflow.python.distribute.cluster_resolver import SimpleClusterResolver
        spec = tf.train.ClusterSpec({'worker': list(cluster.workers)})
        if devices > 1 and not has_gpu():
            raise InputError('--devices {} with {}: several devices per worker need GPUs; on CPUs run one '
                             'worker per machine with --devices 1'.format(devices, TF_CONFIG))
        gpus = len(local_devices(devices)) if has_gpu() else 0
        resolver = SimpleClusterResolver(spec, task_type='worker', task_id=cluster.task_index,
                                         num_accelerators={'GPU': gpus} if gpus else None, rpc_layer='grpc')
        strategy = tf.distribute.experimental.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        config = strategy.update_config_proto(tf.ConfigProto(allow_soft_placement=True))
        self.server = tf.distribute.Server(spec, job_name='worker', task_index=cluster.task_index,
                                           config=config, start=True)
        return strategy

    @property
    def num_workers(self):
        """Worker processes training together (1 without TF_CONFIG)."""
        return self.cluster.num_workers if self.cluster else 1

    @property
    def worker_index(self):
        """This process's index among the workers (0 without TF_CONFIG)."""
        return self.cluster.task_index if self.cluster else 0

    @property
    def is_chief(self):
        """Whether this process writes checkpoints, config.json, summaries and validation."""
        return self.cluster is None or self.cluster.is_chief

    @property
    def num_replicas(self):
        """Replicas over which each global batch is split and the gradients are summed."""
        return self.strategy.num_replicas_in_sync if self.strategy else 1

    @property
    def worker_device(self):
        """The device of this worker's own ops (input, validation) in a cluster, else None."""
        return '/job:worker/task:{}'.format(self.cluster.task_index) if self.cluster else None

    @property
    def session_target(self):
        """What tf.Session connects to: this worker's server, or '' in-process."""
        return self.server.target if self.server else ''

    def session_config(self, config):
        """`config` with what the strategy needs of the session (collective ops, device filters,
        and the logical CPU devices of the replicas on a machine without GPUs)."""
        if self.strategy is None:
            return config
        if self.devices > 1 and not has_gpu():
            config.device_count['CPU'] = self.devices
        return self.strategy.update_config_proto(config)

    def replica_batch_size(self, global_batch_size):
        """Slices per replica and step; refuses a global batch that does not split evenly."""
        if global_batch_size % self.num_replicas:
            raise InputError('--batch-size {} does not split over {} replicas ({} devices x {} workers)'.format(
                global_batch_size, self.num_replicas, self.devices, self.num_workers))
        return global_batch_size // self.num_replicas

    def describe(self):
        """One line on where training runs."""
        if self.strategy is None:
            return 'one device'
        kind = type(self.strategy).__name__
        if self.cluster:
            return '{}: worker {} of {}, {} device(s) each, {} replicas'.format(
                kind, self.worker_index, self.num_workers, self.devices, self.num_replicas)
        return '{} over {} devices'.format(kind, self.devices)


def broadcast_from_chief(strategy, variables):
    """An op that sets `variables` on every worker to the chief's values: each is all-reduced as
    the chief's first replica's value plus zeros from every other replica, which is exact. One
    all-reduce per dtype, since the strategy packs each all-reduce's tensors into one."""
    dtypes = sorted({variable.dtype.base_dtype for variable in variables}, key=lambda dtype: dtype.name)
    groups = [[variable for variable in variables if variable.dtype.base_dtype == dtype] for dtype in dtypes]

    def chief_values():
        first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
        return [all_reduced_sum([tf.where_v2(first, variable.read_value(), tf.zeros_like(variable))
                                 for variable in group]) for group in groups]

    totals = strategy.run(chief_values)
    assigns = [component.assign(value)
               for group, group_totals in zip(groups, totals)
               for variable, total in zip(group, group_totals)
               for component, value in zip(strategy.experimental_local_results(variable),
                                           strategy.experimental_local_results(total))]
    return tf.group(assigns, name='broadcast_from_chief')


def lost_workers(error, cluster):
    """'worker I (ADDRESS)' of the other workers that a collective's error names, or of every
    other worker when it names none."""
    named = {int(index) for index in TASK_PATTERN.findall(error.message or '')} - {cluster.task_index}
    others = sorted(named & set(range(cluster.num_workers))) or \
        [index for index in range(cluster.num_workers) if index != cluster.task_index]
    return ', '.join('worker {} ({})'.format(index, cluster.workers[index]) for index in others)


class WorkerSync:
    """Keeps the workers of a TF_CONFIG cluster on the chief's weights, and reports a lost worker.

    Built after the whole training graph, on `variables` (every global variable: weights, batch-norm
    statistics, optimiser slots, the global step). Without a cluster every method does nothing.
    """

    def __init__(self, distribution, variables):
        self.cluster = distribution.cluster
        self.broadcast = None
        if self.cluster is not None and self.cluster.num_workers > 1:
            self.broadcast = broadcast_from_chief(distribution.strategy, list(variables))

    @contextlib.contextmanager
    def watch(self, step, last_checkpoint):
        """Turn a collective's failure inside the block into a WorkerLost naming the worker that went
        away and `step` (None: before the first step); `last_checkpoint` is the chief's last saved step."""
        try:
            yield
        except PEER_ERRORS as error:
            if self.broadcast is None:
                raise
            where = 'before the first step' if step is None else 'at step {}'.format(step)
            if self.cluster.is_chief and last_checkpoint:
                then = 'its checkpoint of step {} is intact: rerun every worker to resume from it'.format(
                    last_checkpoint)
            elif self.cluster.is_chief:
                then = 'no checkpoint was saved yet'
            else:
                then = "rerun every worker to resume from the chief's last checkpoint"
            raise WorkerLost('worker {} lost {} {}: it ended, was killed or cannot be reached ({}); {}'.format(
                self.cluster.task_index, lost_workers(error, self.cluster), where, type(error).__name__,
                then)) from None

    def start(self, session, log):
        """Give every worker the chief's variables, restored or initialised there."""
        if self.broadcast is None:
            return
        with self.watch(None, session.run(tf.train.get_global_step())):
            session.run(self.broadcast)
        log("worker {} of {} starts from the chief's step {} and weights".format(
            self.cluster.task_index, self.cluster.num_workers, session.run(tf.train.get_global_step())))

    def report(self, session, step, log):
        """Log a checksum of this worker's trainable weights at `step`: in a cluster every worker's is
        the same (the gradients are all-reduced, so weights that start equal stay equal)."""
        if self.broadcast is None:
            return
        digest = hashlib.sha256()
        for value in session.run(tf.trainable_variables()):
            digest.update(value.tobytes())
        log('worker {} at step {}: weights checksum {}'.format(self.cluster.task_index, step,
                                                               digest.hexdigest()[:16]))
