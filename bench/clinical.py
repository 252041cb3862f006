"""Clinical-looking scans made from a labelled BraTS case, for tests and benchmarks of the own-scans
path: each sequence on its own grid (voxel size, axes, field of view) and in its own rigid head
pose, with its own intensity gain, and T1c written as a DICOM series of MR Image Storage slices.

A sequence's scan is the BraTS volume seen through a known rigid transform T (its head pose):
scan(p) = brats(T(p)) at the physical points p of its grid, so the ground truth on any scan's grid
is the BraTS label volume resampled through that scan's T (`truth_on`).
"""
import dataclasses
import itertools
import os
import time

import numpy as np
import SimpleITK as sitk

from model.atomic import atomic_output

MR_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.4'
UID_ROOT = '1.2.826.0.1.3680043.8.498.'   # pydicom's root for example UIDs


@dataclasses.dataclass(frozen=True)
class Acquisition:
    """How one sequence is acquired: voxel size (x, y, z in mm), slice axes (the grid's direction
    columns, before the pose), head pose (rotations about x, y, z in degrees, translation in mm) and
    an intensity gain."""
    spacing: tuple
    axes: tuple = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    rotation_deg: tuple = (0.0, 0.0, 0.0)
    translation_mm: tuple = (0.0, 0.0, 0.0)
    gain: float = 1.0


AXIAL = (1, 0, 0, 0, 1, 0, 0, 0, 1)
SAGITTAL = (0, 0, -1, 1, 0, 0, 0, -1, 0)   # rows along y (anterior-posterior), columns along -z, slices along x
# The example: T1c 0.9 x 0.9 x 2 mm, FLAIR in 5 mm slices, T1 a sagittal 3-D acquisition.
ACQUISITIONS = {
    't1c': Acquisition((0.9, 0.9, 2.0), AXIAL, (4.0, -3.0, 6.0), (5.0, -8.0, 6.0), 1.0),
    'flair': Acquisition((0.9, 0.9, 5.0), AXIAL, (-6.0, 2.0, -5.0), (-7.0, 4.0, -9.0), 3.7),
    't1': Acquisition((1.0, 1.0, 1.2), SAGITTAL, (3.0, 5.0, -4.0), (6.0, 9.0, -4.0), 0.6),
    't2': Acquisition((0.7, 0.7, 3.0), AXIAL, (-2.0, -6.0, 3.0), (-3.0, -6.0, 10.0), 0.01),
}


def pose(acquisition, centre):
    """The rigid transform T of an acquisition's head pose, about `centre` (the head's centre)."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter([float(c) for c in centre])
    transform.SetRotation(*[float(np.radians(angle)) for angle in acquisition.rotation_deg])
    transform.SetTranslation([float(t) for t in acquisition.translation_mm])
    return transform


def centre_of(image):
    """Physical centre of an image's grid."""
    return np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in image.GetSize()]))


def grid_for(source, acquisition, transform):
    """An empty image of the acquisition's voxel size and axes, rotated with the head pose, that holds
    the whole of `source` as seen through `transform` (so no brain is cut off)."""
    rotation = np.array(transform.GetMatrix()).reshape(3, 3)
    direction = rotation.T @ np.array(acquisition.axes, float).reshape(3, 3)   # scan axes move with the head
    inverse = transform.GetInverse()
    corners = np.array([inverse.TransformPoint(source.TransformContinuousIndexToPhysicalPoint(
        [float(c) for c in corner])) for corner in itertools.product(*[(-0.5, n - 0.5) for n in source.GetSize()])])
    in_axes = corners @ direction   # coordinates along the scan's axes
    low, high = in_axes.min(axis=0), in_axes.max(axis=0)
    spacing = np.array(acquisition.spacing, float)
    size = np.ceil((high - low) / spacing).astype(int)
    origin = direction @ (low + spacing / 2.0)
    grid = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    grid.SetSpacing(spacing.tolist())
    grid.SetOrigin(origin.tolist())
    grid.SetDirection(direction.ravel().tolist())
    return grid


def acquire(volume, acquisition, centre, interpolator=sitk.sitkLinear):
    """(scan, its grid's transform T): `volume` through the acquisition's pose, grid and gain."""
    transform = pose(acquisition, centre)
    grid = grid_for(volume, acquisition, transform)
    scan = sitk.Resample(sitk.Cast(volume, sitk.sitkFloat32), grid, transform, interpolator, 0.0) * acquisition.gain
    return scan, transform


def truth_on(labels, grid, transform):
    """The BraTS label volume on `grid` (nearest neighbour) through a scan's transform T."""
    return sitk.Resample(labels, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def _uid(kind, index=0):
    return '{}{}.{}.{}'.format(UID_ROOT, int(time.time() * 1000) % 10 ** 12, kind, index)


def write_dicom_series(image, folder, patient_id, series_description='T1c'):
    """Write a 3-D image as an MR DICOM series, one int16 file per slice (atomic: the folder appears
    complete). Returns the folder."""
    image = sitk.Cast(sitk.Round(image), sitk.sitkInt16)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    shared = {
        '0008|0016': MR_IMAGE_STORAGE, '0008|0060': 'MR', '0008|0008': 'ORIGINAL\\PRIMARY\\AXIAL',
        '0008|0020': '20261208', '0008|0030': '010000', '0008|0050': '1', '0008|0090': '',
        '0008|0070': 'clinical scans for tests', '0008|103e': series_description,
        '0010|0010': 'Test^{}'.format(patient_id), '0010|0020': patient_id, '0010|0030': '', '0010|0040': 'O',
        '0020|000d': _uid(1), '0020|000e': _uid(2), '0020|0052': _uid(3), '0020|0010': '1', '0020|0011': '1',
        '0018|0050': '{:g}'.format(image.GetSpacing()[2]), '0028|1052': '0', '0028|1053': '1',
        '0020|0037': '\\'.join('{:.6f}'.format(v) for v in np.concatenate([direction[:, 0], direction[:, 1]])),
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    with atomic_output(folder) as temporary:
        os.makedirs(temporary)
        for index in range(image.GetDepth()):
            plane = image[:, :, index]
            for tag, value in shared.items():
                plane.SetMetaData(tag, value)
            position = image.TransformIndexToPhysicalPoint((0, 0, index))
            plane.SetMetaData('0020|0032', '\\'.join('{:.6f}'.format(v) for v in position))
            plane.SetMetaData('0020|0013', str(index + 1))
            plane.SetMetaData('0008|0018', _uid(4, index + 1))
            writer.SetFileName(os.path.join(temporary, 'slice{:04d}.dcm'.format(index)))
            writer.Execute(plane)
    return folder


SUFFIXES = {'flair': '.nrrd', 't1': '.nii.gz', 't2': '.mha'}


def make_clinical_case(case_dir, output_dir, acquisitions=None, patient_id='PATIENT41'):
    """Write clinical versions of a BraTS 2018 case's four sequences into output_dir: T1c as a
    DICOM series folder `t1c/`, the others as `flair.nrrd`, `t1.nii.gz` and `t2.mha`.

    Returns:
      {'paths': {sequence: path}, 'truth': the label volume on the T1c scan's grid (sitk.Image)}.
    """
    acquisitions = dict(ACQUISITIONS, **(acquisitions or {}))
    case = os.path.basename(os.path.normpath(case_dir))
    read = lambda kind: sitk.ReadImage(os.path.join(case_dir, '{}_{}.nii.gz'.format(case, kind)))  # noqa: E731
    os.makedirs(output_dir, exist_ok=True)
    paths, truth = {}, None
    for sequence, kind in (('t1c', 't1ce'), ('flair', 'flair'), ('t1', 't1'), ('t2', 't2')):
        volume = read(kind)
        scan, transform = acquire(volume, acquisitions[sequence], centre_of(volume))
        if sequence == 't1c':
            paths[sequence] = write_dicom_series(scan, os.path.join(output_dir, 't1c'), patient_id)
            truth = truth_on(read('seg'), scan, transform)
            continue
        paths[sequence] = os.path.join(output_dir, sequence + SUFFIXES[sequence])
        with atomic_output(paths[sequence]) as temporary:
            sitk.WriteImage(scan, temporary, True)
    return {'paths': paths, 'truth': truth}
