"""Patients and volumes of the BRATS datasets, in both supported layouts.

BRATS2015 (.mha)::

    BRATS2015_Training/{HGG,LGG}/<patient>/VSD.Brain.XX.O.MR_<Flair|T1|T1c|T2>.<id>/<same>.mha
    BRATS2015_Training/{HGG,LGG}/<patient>/VSD.Brain_3more.XX.O.OT.<id>/<same>.mha   (truth)
    Testing/HGG_LGG/<patient>/...                                                    (no truth)

BraTS 2017-2021 (NIfTI)::

    <case>/<case>_{flair,t1,t1ce,t2}.nii.gz  and  <case>/<case>_seg.nii.gz when labelled

Every patient is identified by its folder name. Volumes are read with SimpleITK, which gives
arrays indexed (z, y, x) and the same orientation for both layouts.
"""
import dataclasses
import os
import re

import numpy as np
import SimpleITK as sitk

from model.atomic import atomic_output
from model.errors import InputError
from model.labels import check_labels

MODALITIES = ('flair', 't1', 't1c', 't2')
LAYOUT_MHA = 'brats2015'
LAYOUT_NIFTI = 'nifti'

_MHA_NAME = re.compile(
    r'^VSD\.Brain(?:_3more)?\.XX\.O\.(?P<kind>MR_Flair|MR_T1c|MR_T1|MR_T2|OT)\.(?P<id>\d+)\.mha$')
_MHA_KINDS = {'MR_Flair': 'flair', 'MR_T1': 't1', 'MR_T1c': 't1c', 'MR_T2': 't2', 'OT': 'label'}
_NIFTI_NAME = re.compile(r'^(?P<case>.+)_(?P<kind>flair|t1ce|t1|t2|seg)\.nii(?:\.gz)?$')
_NIFTI_KINDS = {'flair': 'flair', 't1': 't1', 't1ce': 't1c', 't2': 't2', 'seg': 'label'}
_GRADES = ('HGG', 'LGG')
_INT16 = np.iinfo(np.int16)
_MAX_HEADER_BYTES = 1 << 20
# ITK prints its own warnings about unreadable files straight to stderr; read_volume reports
# every problem in one line instead.
sitk.ProcessObject.SetGlobalWarningDisplay(False)


class DataError(InputError):
    """Bad input data. The message is one line that names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Physical grid of a volume, in SimpleITK's (x, y, z) order."""
    size: tuple
    spacing: tuple
    origin: tuple
    direction: tuple

    def matches(self, other, tolerance=1e-4):
        """True when both grids have the same size and (within tolerance) the same placement."""
        return (self.size == other.size
                and np.allclose(self.spacing, other.spacing, atol=tolerance)
                and np.allclose(self.origin, other.origin, atol=tolerance)
                and np.allclose(self.direction, other.direction, atol=tolerance))


@dataclasses.dataclass(frozen=True)
class Patient:
    """One patient: four modality paths, an optional label path, and naming facts."""
    name: str
    layout: str
    flair: str
    t1: str
    t1c: str
    t2: str
    label: str = None
    grade: str = None

    @property
    def modality_paths(self):
        """The four modality paths in channel order (flair, t1, t1c, t2)."""
        return tuple(getattr(self, modality) for modality in MODALITIES)

    @property
    def edition(self):
        """Label convention of this patient's files: 'brats2015' or 'brats2017'."""
        return 'brats2015' if self.layout == LAYOUT_MHA else 'brats2017'

    @property
    def flair_id(self):
        """Numeric id of the Flair image (BRATS2015 layout only), used in prediction names."""
        match = _MHA_NAME.match(os.path.basename(self.flair))
        return int(match.group('id')) if match else None

    def prediction_name(self, run_name):
        """File name of this patient's prediction: `VSD.<run>.<FlairID>.mha` or `<case>.nii.gz`."""
        if self.layout == LAYOUT_MHA:
            return 'VSD.{}.{}.mha'.format(run_name, self.flair_id)
        return '{}.nii.gz'.format(self.name)


def find_prediction(patient, pred_dir, run_name=None):
    """Path of a patient's prediction in pred_dir, by the naming rule of Inference.py.

    For BRATS2015 patients any `VSD.<run>.<FlairID>.mha` matches when run_name is None.
    Raises DataError when there is none, or several.
    """
    if patient.layout == LAYOUT_NIFTI or run_name:
        candidates = [os.path.join(pred_dir, patient.prediction_name(run_name))]
        candidates = [path for path in candidates if os.path.isfile(path)]
    else:
        suffix = '.{}.mha'.format(patient.flair_id)
        candidates = sorted(os.path.join(pred_dir, name) for name in os.listdir(pred_dir)
                            if name.startswith('VSD.') and name.endswith(suffix))
    if not candidates:
        raise DataError('{}: no prediction for patient {} (expected {})'.format(
            pred_dir, patient.name, patient.prediction_name(run_name or '<run>')))
    if len(candidates) > 1:
        raise DataError('{}: several predictions for patient {} ({}); pass --run-name'.format(
            pred_dir, patient.name, ', '.join(os.path.basename(path) for path in candidates)))
    return candidates[0]


def layout_of(path):
    """Layout of one image file from its name; raises DataError for an unknown name."""
    name = os.path.basename(path)
    if _MHA_NAME.match(name):
        return LAYOUT_MHA
    if _NIFTI_NAME.match(name):
        return LAYOUT_NIFTI
    raise DataError('{}: not a BRATS image name (expected VSD.Brain.XX.O.MR_<modality>.<id>.mha '
                    'or <case>_<flair|t1|t1ce|t2|seg>.nii.gz)'.format(path))


def _classify(directory, filename):
    """(patient folder, kind) for a BRATS image file, or None for any other file."""
    match = _MHA_NAME.match(filename)
    if match:
        kind = _MHA_KINDS[match.group('kind')]
        stem = filename[:-len('.mha')]
        patient_dir = os.path.dirname(directory) if os.path.basename(directory) == stem else directory
        return patient_dir, kind, LAYOUT_MHA
    match = _NIFTI_NAME.match(filename)
    if match:
        return directory, _NIFTI_KINDS[match.group('kind')], LAYOUT_NIFTI
    return None


def _grade_of(patient_dir):
    parts = os.path.normpath(patient_dir).split(os.sep)
    return next((part for part in reversed(parts) if part in _GRADES), None)


def _collect_files(root):
    """Map patient folder -> {kind: path} for every BRATS image file under root."""
    found = {}
    for directory, subdirs, filenames in os.walk(root):
        subdirs.sort()
        for filename in sorted(filenames):
            classified = _classify(directory, filename)
            if classified is None:
                continue
            patient_dir, kind, layout = classified
            files = found.setdefault(patient_dir, {'layout': layout})
            path = os.path.join(directory, filename)
            if files['layout'] != layout:
                raise DataError('{}: mixes .mha and NIfTI files'.format(patient_dir))
            if kind in files:
                raise DataError('{}: two {} images ({} and {})'.format(
                    patient_dir, kind, os.path.basename(files[kind]), filename))
            files[kind] = path
    return found


def _make_patient(patient_dir, files, on_incomplete):
    missing = [modality for modality in MODALITIES if modality not in files]
    if missing:
        message = '{}: missing the {} modality'.format(patient_dir, ', '.join(missing))
        if on_incomplete is None:
            raise DataError(message)
        on_incomplete(message)
        return None
    return Patient(name=os.path.basename(os.path.normpath(patient_dir)), layout=files['layout'],
                   flair=files['flair'], t1=files['t1'], t1c=files['t1c'], t2=files['t2'],
                   label=files.get('label'), grade=_grade_of(patient_dir))


def find_patients(roots, on_incomplete=None):
    """Every patient under the given roots, searched recursively, sorted by name.

    Args:
      roots: folders to search; each may hold either layout, at any depth.
      on_incomplete: called with a message for each patient missing a modality, which is
        then skipped; when None, such a patient is an error.
    Returns:
      A list of Patient.
    Raises:
      DataError: a root that is missing or holds no patient, a patient missing a modality,
        or two patients with the same name.
    """
    patients = {}
    for root in roots:
        if not os.path.isdir(root):
            raise DataError('{}: data folder does not exist'.format(root))
        found = _collect_files(root)
        if not found:
            raise DataError('{}: no BRATS patient found (no .mha or .nii.gz image with a BRATS '
                            'name)'.format(root))
        for patient_dir in sorted(found):
            patient = _make_patient(patient_dir, found[patient_dir], on_incomplete)
            if patient is None:
                continue
            if patient.name in patients:
                raise DataError('{}: duplicate patient id {} (also at {})'.format(
                    patient_dir, patient.name, os.path.dirname(patients[patient.name].flair)))
            patients[patient.name] = patient
    if not patients:
        raise DataError('{}: every patient found is incomplete'.format(', '.join(roots)))
    return [patients[name] for name in sorted(patients)]


def geometry_of(image):
    """The Geometry (size, spacing, origin, direction) of a SimpleITK image."""
    return Geometry(size=tuple(image.GetSize()), spacing=tuple(image.GetSpacing()),
                    origin=tuple(image.GetOrigin()), direction=tuple(image.GetDirection()))


def read_volume(path):
    """Read a 3-D volume as a (z, y, x) array and its Geometry.

    Raises:
      DataError: missing, empty, unreadable or corrupt file, a volume that is not 3-D or has
        several components, or floating-point voxels that are NaN or infinite.
    """
    if not os.path.isfile(path):
        raise DataError('{}: file does not exist'.format(path))
    if os.path.getsize(path) == 0:
        raise DataError('{}: file is empty'.format(path))
    try:
        image = sitk.ReadImage(path)
        array = sitk.GetArrayFromImage(image)
    except RuntimeError as error:
        raise DataError('{}: cannot be read as an image, corrupt or truncated ({})'.format(
            path, _itk_reason(error))) from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError('{}: expected a 3-D single-channel volume, got {}-D with {} '
                        'component(s)'.format(path, image.GetDimension(),
                                              image.GetNumberOfComponentsPerPixel()))
    if path.endswith('.gz'):
        _check_gzip_length(path, array.nbytes)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise DataError('{}: holds NaN or infinite voxels'.format(path))
    return array, geometry_of(image)


def _check_gzip_length(path, voxel_bytes):
    """Raise DataError when a gzip file is truncated: ITK reads a truncated .nii.gz without
    complaint, filling the missing voxels with garbage.

    A gzip file ends with the uncompressed length modulo 2**32. A complete image file holds
    the voxels plus a header of at most _MAX_HEADER_BYTES; the last four bytes of a truncated
    file are compressed data, which match that window with a chance of about 1 in 4000.
    Checking them costs nothing, unlike decompressing the file a second time.
    """
    with open(path, 'rb') as stream:
        magic = stream.read(2)
        stream.seek(-4, os.SEEK_END)
        stored_length = int.from_bytes(stream.read(4), 'little')
    header_bytes = (stored_length - voxel_bytes) % (1 << 32)
    if magic != b'\x1f\x8b' or header_bytes > _MAX_HEADER_BYTES:
        raise DataError('{}: corrupt or truncated gzip file (it does not hold the {} bytes of '
                        'voxels its header announces)'.format(path, voxel_bytes))


def _itk_reason(error):
    """The informative line of a SimpleITK error, without ITK's prefixes or its trailing
    'Reason: <errno text>' line, which is stale (e.g. 'No such file or directory' for a
    truncated file that exists)."""
    lines = [line.strip() for line in str(error).splitlines()
             if line.strip() and not line.strip().startswith('Reason:')]
    if not lines:
        return 'unknown reason'
    return re.sub(r'^(?:ITK ERROR: \w+\(0x[0-9a-fA-F]+\)|sitk::ERROR): ', '', lines[-1])


def to_int16(array, path):
    """Intensities as int16, losslessly for integer data within int16's range.

    Floating-point or wider integer volumes are scaled so their largest magnitude becomes
    32000, then rounded. Every later step z-scores each volume, which this scaling leaves
    unchanged. Raises DataError for an all-zero volume.
    """
    if not np.any(array):
        raise DataError('{}: modality is all zero'.format(path))
    if np.issubdtype(array.dtype, np.integer) and array.min() >= _INT16.min and array.max() <= _INT16.max:
        return array.astype(np.int16)
    scale = 32000.0 / float(np.max(np.abs(array)))
    return np.round(array.astype(np.float64) * scale).astype(np.int16)


def load_patient(patient, with_label=True):
    """Read a patient's four modalities (and label) onto one checked grid.

    Returns:
      image: int16 array (z, y, x, 4), channels in MODALITIES order.
      label: uint8 array (z, y, x), or None when unlabelled or with_label is False.
      geometry: the Geometry shared by all files.
    Raises:
      DataError: unreadable files, grids that differ, all-zero modalities, invalid labels.
    """
    channels = []
    geometry = None
    for path in patient.modality_paths:
        array, grid = read_volume(path)
        geometry = _check_grid(geometry, grid, path, patient.flair)
        channels.append(to_int16(array, path))
    label = None
    if with_label and patient.label:
        array, grid = read_volume(patient.label)
        _check_grid(geometry, grid, patient.label, patient.flair)
        label = check_labels(array, patient.edition, patient.label)
    return np.stack(channels, axis=-1), label, geometry


def _check_grid(reference, grid, path, reference_path):
    if reference is not None and not reference.matches(grid):
        raise DataError('{}: grid {} differs from {} of {}'.format(
            path, _describe(grid), _describe(reference), os.path.basename(reference_path)))
    return grid if reference is None else reference


def _describe(geometry):
    return 'size {} spacing {} origin {}'.format(
        'x'.join(map(str, geometry.size)), tuple(round(s, 4) for s in geometry.spacing),
        tuple(round(o, 4) for o in geometry.origin))


def write_volume(array, geometry, path):
    """Write a (z, y, x) array with the given Geometry, compressed, atomically.

    Creates the parent folder when needed.
    """
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    with atomic_output(path) as temporary:
        sitk.WriteImage(image, temporary, True)
