"""Tumour volumes in millilitres from a label volume and its voxel size: the scored regions (whole
tumour, tumour core, enhancing tumour) and each label, one CSV row per patient."""
import csv

import numpy as np

from model.atomic import atomic_output
from model.figures import LABEL_NAMES
from model.labels import REGION_NAMES, REGIONS

COLUMNS = ('patient',) + tuple('{}_ml'.format(region) for region in REGION_NAMES) + tuple(
    '{}_ml'.format(name.replace('-', '_')) for name in LABEL_NAMES[1:])


def volumes_ml(labels, spacing_mm):
    """{column: volume in mL} of a (z, y, x) label array whose voxels measure `spacing_mm` (any order)."""
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=len(LABEL_NAMES))
    volumes = {'{}_ml'.format(region): float(counts[list(REGIONS[region])].sum()) * voxel_ml for region in REGION_NAMES}
    volumes.update({'{}_ml'.format(name.replace('-', '_')): float(counts[label]) * voxel_ml
                    for label, name in enumerate(LABEL_NAMES) if label})
    return volumes


def write_volumes_csv(patient, volumes, path):
    """Write the header and one row (`patient`, then `volumes` rounded to 0.001 mL), atomically."""
    with atomic_output(path) as temporary, open(temporary, 'w', newline='') as stream:
        writer = csv.writer(stream)
        writer.writerow(COLUMNS)
        writer.writerow([patient] + ['{:.3f}'.format(volumes[column]) for column in COLUMNS[1:]])
