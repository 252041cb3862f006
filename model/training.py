"""The training graph and loop behind Train.py.

Graph: records -> model.input pipeline -> DCR network (is_training=True) -> loss -> Adam,
with the batch-norm moving-average updates as dependencies of the train op. A second copy of
the network (is_training=False, shared variables) serves validation through model.predict.

Loop: resumes from the latest checkpoint, saves every K steps, every few minutes and at the
end (also on SIGINT/SIGTERM), writes TensorBoard summaries, validates on whole volumes and
keeps the best checkpoint in CKPT/best/, and stops on a non-finite loss without saving it.
"""
import contextlib
import dataclasses
import json
import math
import os
import signal
import time

import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from model import checkpoints, layers
from model.atomic import atomic_output
from model.brats import load_patient
from model.dcr import build_network
from model.distribute import Distribution, WorkerSync, all_reduced_sum
from model.errors import InputError
from model.input import training_dataset
from model.labels import REGION_NAMES, region_mask
from model.losses import segmentation_loss
from model.metrics import dice
from model.postprocess import check_component_limits
from model.predict import Predictor, check_decoding, check_tta, session_config

BEST_SCORE_FILE = 'best.json'


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN)."""


class TrainingStopped(Exception):
    """A SIGINT/SIGTERM stopped training before its schedule ended; the step reached is saved."""

    def __init__(self, signal_number, step):
        super().__init__('{} received: saved step {} and stopped; rerun to resume'.format(
            signal.Signals(signal_number).name, step))
        self.signal_number, self.step = signal_number, step


@dataclasses.dataclass
class Schedule:
    """Optimiser and bookkeeping settings of a run."""
    num_steps: int
    learning_rate: float = 1e-4
    lr_decay: str = 'none'
    save_every_steps: int = 1000
    save_every_minutes: float = 10.0
    keep_checkpoints: int = 5
    summary_every_steps: int = 100
    validate_every_steps: int = 1000
    time_budget_minutes: float = 0.0

    @property
    def time_budget_seconds(self):
        """The training-time budget in seconds; 0 when there is none."""
        return 60.0 * self.time_budget_minutes


SELECTION_SCORES = ('mean',) + tuple(REGION_NAMES)


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """Whole-volume validation during training: on whom, decoded how (as model.predict.Predictor
    takes it), and which Dice picks the checkpoint kept in CKPT/best/ ('mean' of WT/TC/ET or one
    region). The defaults are Predictor's and those of runs made before the decoding could be
    chosen; Train.py's are Inference.py's defaults."""
    patients: tuple = ()
    tta: str = 'none'
    decoding: str = 'argmax'
    tumour_threshold: float = 0.5
    min_component_fraction: float = 0.0
    select_on: str = 'mean'

    def __post_init__(self):
        check_tta(self.tta)
        check_decoding(self.decoding, self.tumour_threshold)
        check_component_limits(0, self.min_component_fraction)
        if self.select_on not in SELECTION_SCORES:
            raise InputError('validation selects on one of {}, not {!r}'.format(
                ', '.join(SELECTION_SCORES), self.select_on))

    def scoring(self):
        """What makes two validation scores comparable: every setting but the patients."""
        return {name: value for name, value in dataclasses.asdict(self).items() if name != 'patients'}


def learning_rate(schedule, progress):
    """The learning-rate tensor for training progress in [0, 1]: constant, or cosine or
    polynomial (power 0.9) decay to 0 at the end of the run."""
    if schedule.lr_decay == 'cosine':
        return schedule.learning_rate * 0.5 * (1.0 + tf.cos(math.pi * progress))
    if schedule.lr_decay == 'poly':
        return schedule.learning_rate * tf.pow(1.0 - progress, 0.9)
    return tf.constant(schedule.learning_rate)


def progress(step, seconds, schedule):
    """Share of the run done: by steps, or by the time budget when that is further along."""
    done = step / float(schedule.num_steps)
    if schedule.time_budget_seconds > 0:
        done = max(done, seconds / schedule.time_budget_seconds)
    return min(done, 1.0)


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


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps."""

    def __init__(self):
        self.signal_number = None
        self._previous = {}

    def __enter__(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False

    def _handle(self, number, frame):
        self.signal_number = number


def validate(session, predictor, patients):
    """Mean Dice per region (and their mean as 'mean') over validation patients."""
    scores = {region: [] for region in REGION_NAMES}
    for patient in tqdm(patients, desc='validation', unit='patient', leave=False):
        image, label, _ = load_patient(patient)
        prediction = predictor.predict(session, image)
        for region in REGION_NAMES:
            scores[region].append(dice(region_mask(prediction, region), region_mask(label, region)))
    means = {region: float(np.mean(values)) for region, values in scores.items()}
    means['mean'] = float(np.mean([means[region] for region in REGION_NAMES]))
    return means


class BestCheckpoint:
    """Keeps the checkpoint with the best validation Dice in CKPT/best/, and in CKPT/best/best.json
    its scores, its step and the validation settings that scored it.

    A resumed run goes on comparing with the kept score only when that was scored with the same
    settings (a best.json without them: ValidationConfig's defaults) and belongs to the checkpoint
    in CKPT/best/ (a kill between the two writes can part them); otherwise selection starts again.
    """

    def __init__(self, ckpt_dir, validation, log=print):
        self.directory = os.path.join(ckpt_dir, checkpoints.BEST_DIR)
        self.saver = tf.train.Saver(max_to_keep=1, name='best_saver', save_relative_paths=True)
        self.scoring = validation.scoring()
        self.score = -math.inf
        path = os.path.join(self.directory, BEST_SCORE_FILE)
        if not os.path.exists(path):
            return
        with open(path) as stream:
            kept = json.load(stream)
        kept_scoring = {name: kept.get(name, unstated) for name, unstated in ValidationConfig().scoring().items()}
        latest = tf.train.latest_checkpoint(self.directory)
        if kept_scoring != self.scoring:
            log('{}: scored with other validation settings ({}); selection starts again'.format(path, kept_scoring))
        elif latest is None or checkpoints.step_of(latest) != kept['step']:
            log('{}: not the scores of the checkpoint kept beside it; selection starts again'.format(path))
        else:
            self.score = kept[self.scoring['select_on']]

    def offer(self, session, scores, step):
        """Save when the selected score beats the best so far; returns True when saved."""
        score = scores[self.scoring['select_on']]
        if score <= self.score:
            return False
        os.makedirs(self.directory, exist_ok=True)
        self.saver.save(session, os.path.join(self.directory, checkpoints.CHECKPOINT_PREFIX),
                        global_step=step)
        with atomic_output(os.path.join(self.directory, BEST_SCORE_FILE)) as partial:
            with open(partial, 'w') as stream:
                json.dump(dict(scores, step=step, **self.scoring), stream)
        self.score = score
        return True


class _NoSummaries:
    """The FileWriter of a worker that is not the chief: writes nothing."""

    def add_summary(self, summary, step):
        """Drop `summary`."""

    def add_graph(self, graph):
        """Drop `graph`."""

    def flush(self):
        """Nothing to flush."""


class Trainer:
    """Runs the training loop of one run directory.

    Only the chief (the one process without TF_CONFIG, or worker 0) reads and writes checkpoints,
    summaries and validation; every worker starts from the chief's variables and step (WorkerSync),
    and with several workers a stop signal to any of them stops all of them after the same step.
    """

    def __init__(self, ckpt_dir, log_dir, graph, schedule, predictor, validation, distribution=None,
                 input_initializer=None):
        self.ckpt_dir = ckpt_dir
        self.graph = graph
        self.schedule = schedule
        self.predictor = predictor
        distribution = distribution or Distribution()
        self.is_chief = distribution.is_chief
        self.collective_stop = distribution.num_workers > 1
        self.input_initializer = input_initializer
        self.val_patients = list(validation.patients) if self.is_chief else []
        # Relative paths in CKPT/checkpoint keep a moved or copied run folder resumable.
        self.saver = tf.train.Saver(max_to_keep=schedule.keep_checkpoints, save_relative_paths=True)
        self.log = tqdm.write
        self.best = BestCheckpoint(ckpt_dir, validation, self.log) if self.val_patients else None
        self.writer = tf.summary.FileWriter(log_dir) if self.is_chief else _NoSummaries()
        self.workers = WorkerSync(distribution, tf.global_variables())

    def restore_or_initialize(self, session):
        """Resume from CKPT's latest checkpoint, or initialise; returns the global step."""
        session.run(tf.global_variables_initializer())
        if self.input_initializer is not None:
            session.run(self.input_initializer)
        latest = tf.train.latest_checkpoint(self.ckpt_dir) if self.is_chief else None
        if latest:
            checkpoints.restore(session, latest, tf.global_variables())
            state = tf.train.get_checkpoint_state(self.ckpt_dir)
            self.saver.recover_last_checkpoints(state.all_model_checkpoint_paths)
            self.log('resumed from {}'.format(latest))
        self.workers.start(session, self.log)
        self._seconds_before = float(session.run(self.graph['train_seconds']))
        self._run_started = time.time()
        return int(session.run(self.graph['global_step']))

    def elapsed_seconds(self):
        """Training time of this run folder so far, across resumes."""
        return self._seconds_before + time.time() - self._run_started

    def save(self, session, step):
        """Save CKPT/model.ckpt-<step> (with the training time so far); the chief only."""
        self._saved_step, self._saved_time = step, time.time()
        if not self.is_chief:
            return
        assign, seconds = self.graph['set_train_seconds']
        session.run(assign, {seconds: self.elapsed_seconds()})
        self.saver.save(session, os.path.join(self.ckpt_dir, checkpoints.CHECKPOINT_PREFIX),
                        global_step=step)

    def _validate(self, session, step):
        scores = validate(session, self.predictor, self.val_patients)
        summary = tf.Summary(value=[tf.Summary.Value(tag='validation/dice_' + name, simple_value=value)
                                    for name, value in scores.items()])
        self.writer.add_summary(summary, step)
        saved = self.best.offer(session, scores, step)
        self._validated_step = step
        self.log('step {}: validation Dice {}{}'.format(step, ', '.join(
            '{} {:.3f}'.format(name, value) for name, value in scores.items()),
            ' (best so far, saved)' if saved else ''))

    @staticmethod
    def _is_due(step, every):
        return every > 0 and step % every == 0

    def _train_step(self, session, step_before, batch_size, bar, stop_vote):
        """One optimiser step (with summaries when due); returns the new global step and the
        number of workers that voted to stop at it."""
        fetches = {'train_op': self.graph['train_op'], 'step': self.graph['trained_step'],
                   'loss': self.graph['loss']['total'], 'stop_votes': self.graph['stop_votes']}
        if self.is_chief and self._is_due(step_before + 1, self.schedule.summary_every_steps):
            fetches['summaries'] = self.graph['summaries']
        started = time.time()
        with self.workers.watch(step_before + 1, self._saved_step):
            values = session.run(fetches, {self.graph['progress']: progress(
                step_before, self.elapsed_seconds(), self.schedule), self.graph['stop_vote']: float(stop_vote)})
        step = int(values['step'])
        if not np.isfinite(values['loss']):
            raise TrainingError('loss is {} at step {}; stopped without saving it (last good '
                                'checkpoint: step {})'.format(values['loss'], step, self._saved_step))
        if 'summaries' in values:
            self.writer.add_summary(values['summaries'], step)
        bar.update(self._bar_position(step) - bar.n)
        bar.set_postfix(step=step, loss='{:.4f}'.format(values['loss']),
                        slices_per_s='{:.1f}'.format(batch_size / (time.time() - started)))
        return step, values['stop_votes']

    def _bar_position(self, step):
        """Where the progress bar stands: seconds of the time budget, or steps without one."""
        if self.schedule.time_budget_seconds > 0:
            return min(int(self.elapsed_seconds()), int(self.schedule.time_budget_seconds))
        return step

    def _progress_bar(self, step):
        """A tqdm bar over the time budget when one is set, else over the steps."""
        if self.schedule.time_budget_seconds > 0:
            return tqdm(total=int(self.schedule.time_budget_seconds), initial=self._bar_position(step),
                        unit='s', desc='training (time budget)', mininterval=1.0)
        return tqdm(total=self.schedule.num_steps, initial=step, unit='step', desc='training', mininterval=1.0)

    def _save_if_due(self, session, step):
        minutes = (time.time() - self._saved_time) / 60.0
        if self._is_due(step, self.schedule.save_every_steps) or minutes >= self.schedule.save_every_minutes:
            self.save(session, step)

    def run(self, session, batch_size):
        """Train until the schedule's num_steps or time budget; returns the final step. A stop
        signal saves the step reached and raises TrainingStopped."""
        step = first_step = self.restore_or_initialize(session)
        self._saved_step, self._saved_time, self._validated_step = step, time.time(), None
        self.writer.add_graph(session.graph)
        budget = self.schedule.time_budget_seconds or math.inf
        stopped_by_vote = False
        with StopRequest() as stop, self._progress_bar(step) as bar:
            while (step < self.schedule.num_steps and not stopped_by_vote
                   and (self.collective_stop or stop.signal_number is None) and self.elapsed_seconds() < budget):
                step, votes = self._train_step(session, step, batch_size, bar, stop.signal_number is not None)
                stopped_by_vote = votes > 0
                self._save_if_due(session, step)
                if self.best and self._is_due(step, self.schedule.validate_every_steps):
                    self._validate(session, step)
        if step > first_step:   # again at the end: the checkpoint keeps the final training time
            self.save(session, step)
        if self.best and step > first_step and self._validated_step != step and not stopped_by_vote \
                and stop.signal_number is None:
            self._validate(session, step)
        self.writer.flush()
        self.workers.report(session, step, self.log)
        if stop.signal_number is not None or stopped_by_vote:
            raise TrainingStopped(stop.signal_number or signal.SIGTERM, step)
        if step < self.schedule.num_steps:
            self.log('time budget of {:g} minutes used: saved step {} and stopped'.format(
                self.schedule.time_budget_minutes, step))
        return step


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


def train(shard_paths, sidecar, network_config, augment_config, loss_config, schedule,
          batch_size, ckpt_dir, log_dir, validation=None, gpu_memory_fraction=0.0, bfloat16=False, seed=0,
          distribution=None, sync_batch_norm=False, mixed_precision=False):
    """Build the graph and run training to schedule.num_steps; returns the final step.

    validation: a ValidationConfig (None: no validation); its patients are predicted every
      schedule.validate_every_steps and at the end, and the best checkpoint is kept.
    bfloat16: mixed-precision convolutions on the CPU (see model.predict.session_config).
    seed: a non-negative int fixing the initial weights and the slice stream (see run_seed).
    distribution: a model.distribute.Distribution (None: one device); batch_size is the global batch.
    sync_batch_norm: batch statistics over the global batch (see model.layers.training_replica).
    mixed_precision: float16 on GPUs with dynamic loss scaling (TensorFlow's graph rewrite).
    """
    stream_seed = run_seed(seed, ckpt_dir)
    validation = validation or ValidationConfig()
    distribution = distribution or Distribution()
    with tf.Graph().as_default(), tf.device(distribution.worker_device):
        tf.set_random_seed(stream_seed)
        batch, input_initializer = training_batch(shard_paths, sidecar, batch_size, augment_config, stream_seed,
                                                  distribution)
        graph = build_training_graph(batch, network_config, loss_config, schedule, distribution, sync_batch_norm,
                                     mixed_precision)
        predictor = Predictor(network_config, batch_size=batch_size, tta=validation.tta,
                              decoding=validation.decoding, tumour_threshold=validation.tumour_threshold,
                              min_component_fraction=validation.min_component_fraction,
                              normalization=sidecar['normalization'])
        trainer = Trainer(ckpt_dir, log_dir, graph, schedule, predictor, validation, distribution,
                          input_initializer)
        with training_session(distribution, gpu_memory_fraction, bfloat16) as session:
            return trainer.run(session, batch_size)
