"""Optional clean-up of predicted label volumes."""
import numpy as np
from scipy import ndimage


def remove_small_components(labels, min_size):
    """Set to background every 3-D tumour component (labels > 0, 26-connected) smaller than
    `min_size` voxels; returns a new array."""
    components, count = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return labels.copy()
    sizes = np.bincount(components.ravel())
    small = sizes < min_size
    small[0] = False
    cleaned = labels.copy()
    cleaned[small[components]] = 0
    return cleaned
