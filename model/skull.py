"""Refusing scans that still hold the skull and scalp: the network has only seen skull-stripped
brains, whose voxels outside the brain are all one background value (zero).

A scan is taken for a whole head when too few of its voxels hold its lowest value (the noisy air
around an unstripped head), or when the rest, its foreground, is larger than any brain.
"""
import numpy as np
import SimpleITK as sitk

from model.brats import DataError

MIN_BACKGROUND_SHARE = 0.25   # skull-stripped BraTS volumes: 0.82-0.86 of the voxels are zero
MAX_BRAIN_ML = 2500.0         # BraTS brains: 1.27-1.65 L; a head with skull and scalp: 3 L or more


def foreground_stats(image):
    """(share of voxels at the image's lowest value, volume in mL of the other voxels)."""
    array = sitk.GetArrayViewFromImage(image)
    background = np.count_nonzero(array == array.min())
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    return background / array.size, (array.size - background) * voxel_ml


def check_skull_stripped(image, path):
    """Raise DataError naming `path` when the scan looks like a head with skull and scalp."""
    share, volume_ml = foreground_stats(image)
    if share < MIN_BACKGROUND_SHARE:
        reason = 'only {:.0%} of its voxels are background, at least {:.0%} expected'.format(
            share, MIN_BACKGROUND_SHARE)
    elif volume_ml > MAX_BRAIN_ML:
        reason = 'its foreground is {:.0f} mL, more than a brain ({:.0f} mL at most)'.format(volume_ml, MAX_BRAIN_ML)
    else:
        return
    raise DataError('{}: looks like a head with skull and scalp ({}); the network has only seen '
                    'skull-stripped brains: strip the skull first and pass the stripped scan'.format(path, reason))
