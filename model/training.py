"""The training loop behind Train.py (its graph: model.training_graph).

Resumes from the latest checkpoint, saves every K steps, every few minutes and at the end
(also on SIGINT/SIGTERM), writes TensorBoard summaries, validates on whole volumes with a
second copy of the network (is_training=False, shared variables, through model.predict) and
keeps the best checkpoint in CKPT/best/, and stops on a non-finite loss without saving it.
"""
import json
import math
import os
import signal
import time

import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from model import checkpoints, training_graph
from model.atomic import atomic_output
from model.brats import load_patient
from model.distribute import Distribution, WorkerSync
from model.labels import REGION_NAMES, region_mask
from model.metrics import dice
from model.predict import Predictor
from model.training_settings import LEGACY_SCORING

BEST_SCORE_FILE = 'best.json'


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN)."""


class TrainingStopped(Exception):
    """A SIGINT/SIGTERM stopped training before its schedule ended; the step reached is saved."""

    def __init__(self, signal_number, step):
        super().__init__('{} received: saved step {} and stopped; rerun to resume'.format(
            signal.Signals(signal_number).name, step))
        self.signal_number, self.step = signal_number, step


def progress(step, seconds, schedule):
    """Share of the run done: by steps, or by the time budget when that is further along."""
    done = step / float(schedule.num_steps)
    if schedule.time_budget_seconds > 0:
        done = max(done, seconds / schedule.time_budget_seconds)
    return min(done, 1.0)


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
    settings (a best.json without them: model.training_settings.LEGACY_SCORING) and belongs to the checkpoint
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
        kept_scoring = {name: kept.get(name, unstated) for name, unstated in LEGACY_SCORING.items()}
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
                 input_initializer=None, init_from=''):
        self.ckpt_dir = ckpt_dir
        self.init_from = init_from
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
        """Resume from CKPT's latest checkpoint, or start from the network of `init_from` (a
        checkpoint path; the optimiser and step start afresh), or initialise; returns the global step."""
        session.run(tf.global_variables_initializer())
        if self.input_initializer is not None:
            session.run(self.input_initializer)
        latest = tf.train.latest_checkpoint(self.ckpt_dir) if self.is_chief else None
        if latest:
            checkpoints.restore(session, latest, tf.global_variables())
            state = tf.train.get_checkpoint_state(self.ckpt_dir)
            self.saver.recover_last_checkpoints(state.all_model_checkpoint_paths)
            self.log('resumed from {}'.format(latest))
        elif self.init_from and self.is_chief:
            checkpoints.restore(session, self.init_from, checkpoints.network_variables(tf.global_variables()))
            self.log('started from the network of {}'.format(self.init_from))
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


def train(settings):
    """Build the graph of a model.training_settings.TrainingSettings and train to its
    schedule's num_steps (or time budget); returns the final step. The validation's patients are
    predicted every schedule.validate_every_steps and at the end, and the best checkpoint is kept."""
    distribution = settings.distribution
    with tf.Graph().as_default(), tf.device(distribution.worker_device):
        graph, input_initializer = training_graph.build(settings)
        predictor = Predictor(settings.network, settings.validation.decoding, settings.batch_size,
                              settings.sidecar['normalization'])
        trainer = Trainer(settings.ckpt_dir, settings.log_dir, graph, settings.schedule, predictor,
                          settings.validation, distribution, input_initializer, settings.init_from)
        with training_graph.training_session(distribution, settings.gpu_memory_fraction,
                                             settings.bfloat16) as session:
            return trainer.run(session, settings.batch_size)
