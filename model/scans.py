"""A patient's own scans as a clinic hands them over: one image file (NIfTI, MetaImage, NRRD) or
a folder holding one DICOM series per sequence, in any orientation, voxel size and position.

`read_scan` reads one and checks it is a usable 3-D volume; `check_same_patient` refuses DICOM
series of different patients; `default_name` names a patient's outputs.
"""
import dataclasses
import os
import re

import numpy as np
import SimpleITK as sitk

from model.brats import DataError, _itk_reason

FILE_SUFFIXES = ('.nii.gz', '.nii', '.mha', '.mhd', '.nrrd', '.nhdr')
MIN_SLICES = 8   # fewer voxels than this along an axis: not a volume (a 2-D image or a thin stack)


@dataclasses.dataclass
class Scan:
    """One sequence: its image (float32, physical geometry kept), where it came from and, for a
    DICOM series, the files in slice order (SimpleITK's) and the patient's id."""
    sequence: str
    path: str
    image: sitk.Image
    dicom_files: tuple = ()
    patient_id: str = None


def _series_files(folder, series_uids):
    """The files of the folder's one DICOM series (or of the one of `series_uids` it holds), in slice
    order."""
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    if not uids:
        raise DataError('{}: folder holds no DICOM series'.format(folder))
    chosen = [uid for uid in uids if uid in series_uids]
    if len(uids) > 1 and len(chosen) != 1:
        raise DataError('{}: holds {} DICOM series ({}); keep one per folder or pass --series-uid'.format(
            folder, len(uids), ', '.join(uids)))
    return tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, (chosen or uids)[0]))


def _patient_id(path):
    import pydicom
    return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=['PatientID']).get('PatientID', ''))


def _read(path, series_uids):
    """(image, DICOM files) of a file or a DICOM series folder."""
    if os.path.isdir(path):
        files = _series_files(path, series_uids)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        return reader.Execute(), files
    if not os.path.isfile(path):
        raise DataError('{}: scan does not exist'.format(path))
    if not path.lower().endswith(FILE_SUFFIXES):
        raise DataError('{}: not a scan file (expected {}, or a DICOM series folder)'.format(
            path, ', '.join(FILE_SUFFIXES)))
    if os.path.getsize(path) == 0:
        raise DataError('{}: file is empty'.format(path))
    return sitk.ReadImage(path), ()


def read_scan(sequence, path, series_uids=()):
    """Read one sequence's scan as a float32 Scan.

    Raises:
      DataError: a missing, empty or unreadable file or folder, a folder without a DICOM series or
        with several (unless one of `series_uids` picks one), an image that is not a single-channel 3-D
        volume of at least MIN_SLICES voxels along each axis, NaN voxels or an all-constant image.
    """
    try:
        image, files = _read(path, series_uids)
    except RuntimeError as error:
        raise DataError('{}: cannot be read as an image, corrupt or truncated ({})'.format(
            path, _itk_reason(error))) from None
    size = image.GetSize()
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1 or min(size) < MIN_SLICES:
        raise DataError('{}: expected a 3-D single-channel volume, got size {} with {} component(s)'.format(
            path, 'x'.join(map(str, size)), image.GetNumberOfComponentsPerPixel()))
    image = sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(array)):
        raise DataError('{}: holds NaN or infinite voxels'.format(path))
    if array.min() == array.max():
        raise DataError('{}: every voxel has the same value'.format(path))
    return Scan(sequence, path, image, files, _patient_id(files[0]) if files else None)


def check_same_patient(scans):
    """Raise DataError when DICOM scans carry different PatientIDs."""
    dicom = [scan for scan in scans if scan.dicom_files]
    for scan in dicom[1:]:
        if scan.patient_id != dicom[0].patient_id:
            raise DataError('{}: PatientID {!r} differs from {!r} of the {} scan {}; scans of two patients'.format(
                scan.path, scan.patient_id, dicom[0].patient_id, dicom[0].sequence, dicom[0].path))


def default_name(scan):
    """Output name of a patient: the DICOM PatientID, else the scan file's name without its suffix;
    characters other than letters, digits, '.', '-' and '_' become '_'."""
    if scan.dicom_files and scan.patient_id:
        name = scan.patient_id
    else:
        name = os.path.basename(os.path.normpath(scan.path))
        name = next((name[:-len(suffix)] for suffix in FILE_SUFFIXES if name.lower().endswith(suffix)), name)
    return re.sub(r'[^\w.-]', '_', name).strip('.') or 'patient'
