"""Training on several devices and machines with TensorFlow's own engine (tf.distribute).

One machine: `tf.compat.v1.distribute.MirroredStrategy` over N GPUs, or over N logical CPU
devices where there is no GPU (so the same graph runs in tests and CI). Several machines: the
standard `TF_CONFIG` environment variable (cluster and task JSON) selects
`MultiWorkerMirroredStrategy`; in graph mode each worker starts its own `tf.distribute.Server`
and its sessions connect to it with the strategy's session configuration.

A Distribution says which of these applies; model.training builds the same compat.v1 training
graph under its strategy, one copy per replica, with the gradients all-reduced.
"""
import dataclasses
import json
import os
import socket

import tensorflow.compat.v1 as tf

from model.errors import InputError

TF_CONFIG = 'TF_CONFIG'


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
