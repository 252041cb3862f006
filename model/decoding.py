"""How the network's class probabilities become labels: the one settings object (Decoding) that
Inference.py, Train.py's validation and predictions from an export all use, and the decodings.

The scored regions are nested (ET in TC in WT). 'argmax' labels each voxel with its likeliest
class (the paper's); 'regions' decides WT, then TC within it, then ET within that, each by its
own summed probability. Test-time augmentation ('tta') names the variants of each slice whose
probabilities are averaged before decoding. Small tumour components can be removed afterwards
(model.postprocess).
"""
import collections
import dataclasses

import tensorflow.compat.v1 as tf

from model.errors import InputError
from model.labels import region_probabilities
from model.postprocess import check_component_limits

DECODINGS = ('argmax', 'regions')
# What argmax implies: tumour where P(WT) > P(background), the regions decoding at this threshold.
ARGMAX_TUMOUR_THRESHOLD = 0.5

TestTime = collections.namedtuple('TestTime', 'flip scales')
# The test-time variants of each window, predicted and averaged. 'none' is one forward pass (the
# paper's); 'flip' adds the left-right mirror image, in the same batch (2 passes); 'zooms' also
# zooms each window by 0.8 to 1.2 (10 passes). docs/accuracy.md, "Defaults", measures them.
TEST_TIME_AUGMENTATIONS = collections.OrderedDict((
    ('none', TestTime(False, (1.0,))),
    ('flip', TestTime(True, (1.0,))),
    ('zooms', TestTime(True, (0.8, 0.9, 1.0, 1.1, 1.2))),
))


def check_tta(tta):
    """Raise InputError unless `tta` names one of TEST_TIME_AUGMENTATIONS."""
    if tta not in TEST_TIME_AUGMENTATIONS:
        raise InputError('test-time augmentation must be one of {}, not {!r}'.format(
            ', '.join(TEST_TIME_AUGMENTATIONS), tta))


def check_decoding(method, tumour_threshold):
    """Raise InputError unless the decoding is known and the threshold is one it can use."""
    if method not in DECODINGS:
        raise InputError('decoding must be one of {}, not {!r}'.format(', '.join(DECODINGS), method))
    if not 0.0 < tumour_threshold < 1.0:
        raise InputError('tumour threshold must be between 0 and 1, not {}'.format(tumour_threshold))
    if tumour_threshold != ARGMAX_TUMOUR_THRESHOLD and method != 'regions':
        raise InputError('a tumour threshold other than {} needs regions decoding'.format(ARGMAX_TUMOUR_THRESHOLD))


@dataclasses.dataclass(frozen=True)
class Decoding:
    """Test-time augmentation and decoding of a prediction (the recipes in model.recipes hold the
    values; this class holds none).

    Attributes:
      tta: a key of TEST_TIME_AUGMENTATIONS.
      method: 'argmax' or 'regions' (DECODINGS).
      tumour_threshold: regions decoding: tumour where P(WT) exceeds it; argmax implies 0.5.
      min_component_size: tumour components smaller than this many voxels are removed (0: off).
      min_component_fraction: ... or smaller than this fraction of the patient's largest (0: off).
    """
    tta: str
    method: str
    tumour_threshold: float
    min_component_size: int
    min_component_fraction: float

    def __post_init__(self):
        check_tta(self.tta)
        check_decoding(self.method, self.tumour_threshold)
        check_component_limits(self.min_component_size, self.min_component_fraction)

    def overridden(self, tta=None, method=None, tumour_threshold=None, min_component_size=None,
                   min_component_fraction=None):
        """This decoding with the given settings replaced (None keeps one). A method changed
        without a threshold takes its own: this one's for regions, the implied 0.5 for argmax."""
        method = self.method if method is None else method
        if tumour_threshold is None:
            tumour_threshold = self.tumour_threshold if method == 'regions' else ARGMAX_TUMOUR_THRESHOLD
        changes = dict(tta=tta, min_component_size=min_component_size, min_component_fraction=min_component_fraction)
        return dataclasses.replace(self, method=method, tumour_threshold=tumour_threshold,
                                   **{name: value for name, value in changes.items() if value is not None})

    def to_dict(self):
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)


def region_labels(probabilities, tumour_threshold):
    """uint8 labels of [..., 5] class probabilities, decided region by region.

    Each region is decided by its own summed probability: tumour where
    P(WT) / (P(WT) + P(background)) > tumour_threshold (at 0.5, exactly where P(WT) > P(background),
    however the probabilities are rounded); core, among tumour, where P(TC) > P(oedema); enhancing,
    within the core, where P(ET) > P(necrosis) + P(non-enhancing); the rest of the core is
    whichever of necrosis and non-enhancing is likelier. Plain argmax instead lets background win
    wherever the tumour probability is split across classes.
    """
    whole, core, enhancing = (region_probabilities(probabilities, region) for region in ('WT', 'TC', 'ET'))
    is_whole = (1.0 - tumour_threshold) * whole > tumour_threshold * probabilities[..., 0]
    is_core = tf.logical_and(is_whole, core > whole - core)
    is_enhancing = tf.logical_and(is_core, enhancing > core - enhancing)
    rest_of_core = tf.where_v2(probabilities[..., 3] > probabilities[..., 1], 3, 1)
    labels = tf.where_v2(is_enhancing, 4, tf.where_v2(is_core, rest_of_core, tf.where_v2(is_whole, 2, 0)))
    return tf.cast(labels, tf.uint8)


def decode(probabilities, decoding):
    """uint8 labels of [..., 5] class probabilities by the Decoding's method."""
    if decoding.method == 'regions':
        return region_labels(probabilities, decoding.tumour_threshold)
    return tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8)
