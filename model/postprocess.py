"""Clean-up of predicted label volumes: removal of small 3-D tumour components."""
import numpy as np
from scipy import ndimage

from model.errors import InputError


def check_component_limits(min_size, min_fraction):
    """Raise InputError unless min_size is a non-negative number of voxels and min_fraction lies
    in [0, 1]."""
    if min_size < 0:
        raise InputError('minimum component size must be at least 0 voxels, not {}'.format(min_size))
    if not 0.0 <= min_fraction <= 1.0:
        raise InputError('minimum component fraction must be between 0 and 1, not {}'.format(min_fraction))


def remove_small_components(labels, min_size=0, min_fraction=0.0):
    """Set to background every 3-D tumour component (labels > 0, 26-connected) smaller than
    `min_size` voxels or smaller than `min_fraction` times the largest component; returns a new
    array. min_fraction 1 keeps the largest component alone (and any of the same size)."""
    components, count = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return labels.copy()
    sizes = np.bincount(components.ravel())
    small = sizes < max(min_size, min_fraction * sizes[1:].max())
    small[0] = False
    cleaned = labels.copy()
    cleaned[small[components]] = 0
    return cleaned
