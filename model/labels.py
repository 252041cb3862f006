"""Label conventions of the BRATS editions and the scored tumour regions.

BRATS2015 ground truth holds 0 background, 1 necrosis, 2 oedema, 3 non-enhancing tumour and
4 enhancing tumour. BraTS 2017-2021 merge 1 and 3 into 1, so their files hold 0, 1, 2 and 4.
The network always predicts the five 2015 classes.
"""
import numpy as np

from model.errors import InputError

NUM_CLASSES = 5
VALID_LABELS = {
    'brats2015': frozenset({0, 1, 2, 3, 4}),
    'brats2017': frozenset({0, 1, 2, 4}),
}
REGIONS = {
    'WT': (1, 2, 3, 4),
    'TC': (1, 3, 4),
    'ET': (4,),
}
REGION_NAMES = tuple(REGIONS)


class LabelError(InputError):
    """A label volume holds a value its edition does not define."""


def check_labels(labels, edition, path):
    """Raise LabelError naming `path` unless every value of `labels` is valid for `edition`.

    Args:
      labels: integer or floating array of label values.
      edition: 'brats2015' or 'brats2017'.
      path: the file the labels came from, for the message.
    Returns:
      The labels as a uint8 array.
    Raises:
      LabelError: non-integer values, or values outside the edition's set.
    """
    values = np.unique(labels)
    if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
        bad = next(v for v in values if not np.isfinite(v) or v != np.round(v))
        raise LabelError('{}: label value {} is not an integer'.format(path, bad))
    invalid = sorted(int(v) for v in values if int(v) not in VALID_LABELS[edition])
    if invalid:
        raise LabelError('{}: label value {} is not a {} label (allowed: {})'.format(
            path, invalid[0], edition.upper(), ', '.join(map(str, sorted(VALID_LABELS[edition])))))
    return labels.astype(np.uint8)


def region_probabilities(probabilities, region):
    """Probability of `region`: the sum of its classes' probabilities ([..., 5] array or tensor)."""
    return sum(probabilities[..., label] for label in REGIONS[region])


def region_mask(labels, region):
    """Boolean mask of `region` ('WT', 'TC' or 'ET') in a label array."""
    return np.isin(labels, REGIONS[region])
