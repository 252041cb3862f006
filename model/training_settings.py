"""What one training run needs, as settings objects: the schedule, the validation, and the
TrainingSettings that Train.py hands to model.training.train and the bench to the graph builder."""
import dataclasses

from model.decoding import Decoding
from model.errors import InputError
from model.labels import REGION_NAMES
from model.recipes import MEASURED

SELECTION_SCORES = ('mean',) + tuple(REGION_NAMES)

# The validation settings of runs made before they were recorded in CKPT/best/best.json: how a
# best.json that lacks one was scored (argmax decoding, one pass, the mean Dice).
LEGACY_SCORING = {'tta': 'none', 'decoding': 'argmax', 'tumour_threshold': 0.5, 'min_component_size': 0,
                  'min_component_fraction': 0.0, 'select_on': 'mean'}


@dataclasses.dataclass(kw_only=True)
class Schedule:
    """Optimiser and bookkeeping settings of a run (learning rate and decay default to the
    measured recipe's; the bookkeeping is Train.py's to choose)."""
    num_steps: int
    learning_rate: float = MEASURED.learning_rate
    lr_decay: str = MEASURED.lr_decay
    save_every_steps: int
    save_every_minutes: float
    keep_checkpoints: int
    summary_every_steps: int
    validate_every_steps: int
    time_budget_minutes: float

    @property
    def time_budget_seconds(self):
        """The training-time budget in seconds; 0 when there is none."""
        return 60.0 * self.time_budget_minutes


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """Whole-volume validation during training: on whom, decoded how (a model.decoding.Decoding,
    as model.predict.Predictor takes it), and which Dice picks the checkpoint kept in CKPT/best/
    ('mean' of WT/TC/ET or one region)."""
    patients: tuple
    decoding: Decoding
    select_on: str

    def __post_init__(self):
        if self.select_on not in SELECTION_SCORES:
            raise InputError('validation selects on one of {}, not {!r}'.format(
                ', '.join(SELECTION_SCORES), self.select_on))

    def scoring(self):
        """What makes two validation scores comparable: every setting but the patients (the keys
        of LEGACY_SCORING)."""
        decoding = self.decoding.to_dict()
        decoding['decoding'] = decoding.pop('method')
        return dict(decoding, select_on=self.select_on)


@dataclasses.dataclass
class TrainingSettings:
    """Everything model.training.train needs for one run (Train.py holds the defaults).

    Attributes:
      shard_paths, sidecar: the training records (model.records.resolve_records).
      network, augment, loss, schedule: NetworkConfig, AugmentConfig, LossConfig, Schedule.
      batch_size: the global batch, split over the distribution's replicas.
      ckpt_dir, log_dir: checkpoints and config.json; TensorBoard events.
      validation: a ValidationConfig (no patients: no validation).
      gpu_memory_fraction: 0 lets GPU memory grow (model.predict.session_config).
      bfloat16: bfloat16 convolutions on the CPU (model.predict.session_config).
      seed: a non-negative int fixing the initial weights and the slice stream (model.training_graph.run_seed).
      distribution: a model.distribute.Distribution.
      sync_batch_norm: batch statistics over the global batch (model.layers.training_replica).
      mixed_precision: float16 on GPUs with dynamic loss scaling (TensorFlow's graph rewrite).
      init_from: a checkpoint whose network weights a new run starts from ('' for none).
    """
    shard_paths: list
    sidecar: dict
    network: object
    augment: object
    loss: object
    schedule: Schedule
    batch_size: int
    ckpt_dir: str
    log_dir: str
    validation: ValidationConfig
    gpu_memory_fraction: float
    bfloat16: bool
    seed: int
    distribution: object
    sync_batch_norm: bool
    mixed_precision: bool
    init_from: str
