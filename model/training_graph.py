"""The training graph behind Train.py: records -> model.input pipeline -> network
(is_training=True) -> loss -> Adam, with the batch-norm moving-average updates as dependencies of
the train op, built on one device or under a tf.distribute strategy. model.training runs it;
bench/training.py times it.
"""
import contextlib
import math
import os

import numpy as np
import tensorflow.compat.v1 as tf

from model import checkpoints, layers
from model.dcr import build_network
from model.distribute import all_reduced_sum
from model.input import training_dataset
from model.losses import segmentation_loss
from model.predict import session_config


def learning_rate(schedule, progress):
    """The learning-rate tensor for training progress in [0, 1]: constant, or cosine or
    polynomial (power 0.9) decay to 0 at the end of the run."""
    if schedule.lr_decay == 'cosine':
        return schedule.learning_rate * 0.5 * (1.0 + tf.cos(math.pi * progress))
    if schedule.lr_decay == 'poly':
        return schedule.learning_rate * tf.pow(1.0 - progress, 0.9)
    return tf.constant(schedule.learning_rate)


def _image_summaries(images, labels, logits):
    """FLAIR, truth and prediction of the first slice of the batch, as grey levels."""
    flair = images[:1, ..., :1]
    flair = (flair - tf.reduce_min(flair)) / (tf.reduce_max(flair) - tf.reduce_min(flair) + 1e-6)
    def as_grey(label_map):
        return tf.cast(label_map[:1, ..., tf.newaxis], tf.float32) / 4.0
    return [tf.summary.image('flair', flair), tf.summary.image('truth', as_grey(labels)),
            tf.summary.image('prediction', as_grey(tf.argmax(logits, axis=-1)))]


def batch_wt_dice(labels, logits):
    """Hard whole-tumour Dice of the batch (1 when both are empty)."""
    truth = labels > 0
    predicted = tf.argmax(logits, axis=-1) > 0
    overlap = tf.reduce_sum(tf.cast(tf.logical_and(truth, predicted), tf.float32))
    total = tf.reduce_sum(tf.cast(truth, tf.float32)) + tf.reduce_sum(tf.cast(predicted, tf.float32))
    return tf.where(total > 0, 2.0 * overlap / tf.maximum(total, 1.0), 1.0)


def _replica_training(images, labels, network_config, loss_config, optimizer, global_step, num_replicas,
                      sync_batch_norm):
    """One replica's network, loss and train op (which depends on its batch-norm updates).

    Returns (train_op, loss parts, batch WT Dice, logits). The optimiser minimises the loss over
    `num_replicas`: a strategy sums the replicas' gradients, so that is the gradient of the mean.
    """
    with layers.training_replica(sync_batch_norm) as batch_norm_updates:
        logits = build_network(images, network_config, is_training=True)
    loss = segmentation_loss(logits, labels, loss_config)
    with tf.control_dependencies(batch_norm_updates):
        train_op = optimizer.minimize(loss['total'] / num_replicas, global_step=global_step)
    return train_op, loss, batch_wt_dice(labels, logits), logits


def _local_mean(strategy, per_replica):
    """Mean of a per-replica scalar over the replicas of this worker."""
    values = strategy.experimental_local_results(per_replica)
    return tf.add_n(list(values)) / len(values)


def build_training_graph(batch, network_config, loss_config, schedule, distribution=None, sync_batch_norm=False,
                         mixed_precision=False):
    """Network, loss, optimiser and summaries for a batch (images, labels).

    distribution: a model.distribute.Distribution with a strategy, or None for one device; with a
      strategy, `batch` holds the per-replica batches of its distributed iterator, one network copy
      is built per replica (sharing the variables) and the gradients are all-reduced.
    sync_batch_norm: with a strategy, batch norm uses the statistics of the global batch.
    mixed_precision: TensorFlow's float16 graph rewrite with dynamic loss scaling (GPUs only).

    Returns:
      A dict of tensors and ops: 'train_op', 'global_step', 'trained_step' (the global step
      read after the train op), 'learning_rate', 'loss' (the dict of loss parts, mean over
      this worker's replicas), 'batch_dice', 'summaries', 'progress' (the placeholder that drives the
      learning-rate schedule), 'train_seconds' (training time so far, saved with the
      checkpoints), 'set_train_seconds' (its assign op and placeholder), and 'stop_votes'
      (the replicas that were fed 'stop_vote' = 1 at this step: a stop signal on any worker
      stops them all at the same step).
    """
    strategy = distribution.strategy if distribution else None
    with strategy.scope() if strategy else contextlib.nullcontext():
        global_step = tf.train.get_or_create_global_step()
        train_seconds = tf.get_variable('train_seconds', [], tf.float64, tf.zeros_initializer(),
                                        trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        seconds_input = tf.placeholder(tf.float64, [], name='train_seconds_input')
        progress_input = tf.placeholder_with_default(tf.constant(0.0), [], name='progress')
        stop_vote = tf.placeholder_with_default(tf.constant(0.0), [], name='stop_vote')
        rate = learning_rate(schedule, progress_input)
        optimizer = tf.train.AdamOptimizer(rate)
        if mixed_precision:
            optimizer = tf.train.experimental.enable_mixed_precision_graph_rewrite(optimizer, 'dynamic')
        if strategy is None:
            images, labels = batch
            train_op, loss, wt_dice, logits = _replica_training(images, labels, network_config, loss_config,
                                                                optimizer, global_step, 1, False)
            stop_votes = stop_vote
        else:
            def replica_step(images, labels):
                outputs = _replica_training(images, labels, network_config, loss_config, optimizer, global_step,
                                            strategy.num_replicas_in_sync, sync_batch_norm)
                votes = all_reduced_sum([tf.identity(stop_vote)])[0]
                return outputs + (votes,)

            train_ops, losses, dices, logits, votes = strategy.run(replica_step, args=tuple(batch))
            train_op = strategy.group(train_ops)
            # Means over this worker's replicas, not collectives: only the chief fetches summaries.
            loss = {name: _local_mean(strategy, value) for name, value in losses.items()}
            wt_dice = _local_mean(strategy, dices)
            stop_votes = strategy.experimental_local_results(votes)[0]
            images, labels, logits = (strategy.experimental_local_results(value)[0] for value in
                                      (batch[0], batch[1], logits))
    with tf.control_dependencies([train_op]):
        trained_step = tf.identity(global_step.read_value())
    scalars = [tf.summary.scalar('loss/' + name, value) for name, value in sorted(loss.items())]
    scalars += [tf.summary.scalar('learning_rate', rate), tf.summary.scalar('batch_wt_dice', wt_dice)]
    return {'train_op': train_op, 'global_step': global_step, 'trained_step': trained_step, 'learning_rate': rate,
            'loss': loss, 'batch_dice': wt_dice, 'progress': progress_input, 'train_seconds': train_seconds,
            'set_train_seconds': (tf.assign(train_seconds, seconds_input), seconds_input),
            'stop_vote': stop_vote, 'stop_votes': stop_votes,
            'summaries': tf.summary.merge(scalars + _image_summaries(images, labels, logits))}


def run_seed(seed, ckpt_dir):
    """The seed of this run's graph and slice stream: `seed` mixed with the step CKPT resumes
    from, so that a resumed run does not replay the slices and augmentations it has seen."""
    latest = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
    start_step = checkpoints.step_of(latest) if latest else 0
    return int(np.random.SeedSequence([seed, start_step]).generate_state(1)[0])


def training_batch(shard_paths, sidecar, batch_size, augment_config, seed, distribution=None):
    """(batch, initializer): the next global batch of the training pipeline, and the op that
    starts its iterator (None for one device). Under a strategy, `batch` holds one batch of
    batch_size / replicas slices per replica; each worker reads its own share of the shards."""
    if distribution is None or distribution.strategy is None:
        dataset = training_dataset(shard_paths, sidecar, batch_size, augment_config, seed)
        return tf.data.make_one_shot_iterator(dataset).get_next(), None
    replica_batch_size = distribution.replica_batch_size(batch_size)

    def worker_dataset(context):
        return training_dataset(shard_paths, sidecar, replica_batch_size, augment_config, seed,
                                context.input_pipeline_id, context.num_input_pipelines)

    iterator = distribution.strategy.make_input_fn_iterator(worker_dataset)
    return iterator.get_next(), iterator.initializer


def training_session(distribution, gpu_memory_fraction=0.0, bfloat16=False):
    """A Session for a training graph: model.predict.session_config with what `distribution`
    needs of it, connected to the distribution's server (in-process without one)."""
    config = distribution.session_config(session_config(gpu_memory_fraction, bfloat16))
    return tf.Session(distribution.session_target, config=config)


def build(settings, batch=None):
    """(graph dict of build_training_graph, input initializer or None) for a TrainingSettings, in
    the default graph: its records' pipeline (training_batch) or the given (images, labels) batch,
    seeded by run_seed."""
    stream_seed = run_seed(settings.seed, settings.ckpt_dir)
    tf.set_random_seed(stream_seed)
    input_initializer = None
    if batch is None:
        batch, input_initializer = training_batch(settings.shard_paths, settings.sidecar, settings.batch_size,
                                                  settings.augment, stream_seed, settings.distribution)
    graph = build_training_graph(batch, settings.network, settings.loss, settings.schedule, settings.distribution,
                                 settings.sync_batch_norm, settings.mixed_precision)
    return graph, input_initializer
