"""Inference.py on a patient's own four scans (`--t1c --flair --t1 --t2`): read, check, bring onto
the training grid, segment, and write the results on the T1c input's own grid.

Preparation (`prepare`): each scan must be skull-stripped (model.skull); T1c is reoriented and
resampled to 1 mm (model.alignment.reference_grid) and its brain must lie within its field of view;
FLAIR, T1 and T2 are registered rigidly onto it and must cover most of its brain; all four are
resampled onto it and converted as the BRATS volumes are (model.brats.to_int16); voxels outside the
T1c brain are background in every channel. The predictor then normalises them as training does.

Outputs in OUT (`write_results`): NAME.nii.gz (labels, nearest neighbour onto the T1c input's
exact grid), NAME_volumes.csv, NAME.png (T1c and FLAIR overlays), NAME_<sequence>.tfm (the rigid
transforms, T1c grid -> scan), with --save-probabilities NAME_prob_<WT|TC|ET>.nii.gz, and with
--dicom-seg (T1c a DICOM series) NAME_seg.dcm. Everything is computed before the first file is
written, and each file is written under a temporary name.
"""
import dataclasses
import os

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from model import alignment
from model.atomic import atomic_output, remove_stale_partials
from model.brats import MODALITIES, DataError, geometry_of, to_int16, write_volume
from model.errors import InputError
from model.figures import save_sequences_montage
from model.labels import REGION_NAMES, REGIONS
from model.scans import check_same_patient, default_name, read_scan
from model.skull import check_skull_stripped
from model.tumour_volumes import volumes_ml, write_volumes_csv

SEQUENCES = ('t1c', 'flair', 't1', 't2')   # T1c first: the others are registered onto it
MIN_COVERAGE = 0.6        # share of the T1c brain each other scan must cover (one BraTS 2018 FLAIR: 0.66)
MAX_BRAIN_ON_EDGE_MM2 = 6000.0   # brain on a face of T1c's field of view (BraTS: at most 3700 mm2)


def requested(args):
    """Whether Inference.py was given any of the four scans."""
    return any(getattr(args, sequence) for sequence in SEQUENCES)


def check_request(args):
    """Raise InputError for a missing sequence, --list beside the scans, a --name with folders, or
    --dicom-seg without a DICOM T1c."""
    missing = [sequence for sequence in SEQUENCES if not getattr(args, sequence)]
    if missing:
        raise InputError('--{}: scan not given; all four sequences (--t1c --flair --t1 --t2) are needed for '
                         'now'.format(' --'.join(missing)))
    if args.lists:
        raise InputError('--list: segments listed BRATS patients; it cannot go with --t1c/--flair/--t1/--t2')
    if args.name is not None and (not args.name.strip('.') or os.sep in args.name):
        raise InputError('--name {!r}: must be a file name, without folders'.format(args.name))
    if args.dicom_seg and not os.path.isdir(args.t1c):
        raise InputError('{}: --dicom-seg needs T1c as a DICOM series folder'.format(args.t1c))


@dataclasses.dataclass
class Prepared:
    """Four scans on the training grid: `image` int16 (z, y, x, 4) in MODALITIES order on the grid of
    `reference` (T1c, 1 mm), and the rigid transform of each other sequence (reference -> scan)."""
    scans: dict
    reference: sitk.Image
    transforms: dict
    image: np.ndarray


def read_scans(paths, series_uids=()):
    """{sequence: Scan} of {sequence: path}, checked to be of one patient."""
    scans = {sequence: read_scan(sequence, paths[sequence], series_uids) for sequence in SEQUENCES}
    check_same_patient(scans.values())
    return scans


def check_field_of_view(reference, path):
    """Raise DataError when T1c's field of view cuts the brain off (much brain on one of its faces)."""
    brain = sitk.GetArrayViewFromImage(reference) != 0
    faces = [brain[0], brain[-1], brain[:, 0], brain[:, -1], brain[:, :, 0], brain[:, :, -1]]
    on_edge = max(np.count_nonzero(face) for face in faces) * alignment.SPACING_MM ** 2
    if on_edge > MAX_BRAIN_ON_EDGE_MM2:
        raise DataError('{}: the field of view does not cover the brain ({:.0f} mm2 of brain on its edge, at '
                        'most {:.0f})'.format(path, on_edge, MAX_BRAIN_ON_EDGE_MM2))


def prepare(scans):
    """Prepared scans of {sequence: Scan}; raises DataError for unusable scans (see the module)."""
    for scan in scans.values():
        check_skull_stripped(scan.image, scan.path)
    t1c = scans['t1c']
    reference = alignment.reference_grid(t1c.image)
    check_field_of_view(reference, t1c.path)
    transforms, channels = {}, {'t1c': reference}
    for sequence in tqdm(SEQUENCES[1:], desc='registering onto T1c', unit='scan', leave=False):
        scan = scans[sequence]
        transforms[sequence], covered = alignment.register(reference, scan.image, scan.path)
        if covered < MIN_COVERAGE:
            raise DataError('{}: the field of view does not cover the brain (only {:.0%} of the T1c brain, at '
                            'least {:.0%} needed)'.format(scan.path, covered, MIN_COVERAGE))
        channels[sequence] = alignment.resampled(scan.image, reference, transforms[sequence])
    image = np.stack([to_int16(sitk.GetArrayFromImage(channels[modality]), scans[modality].path)
                      for modality in MODALITIES], axis=-1)
    image[image[..., MODALITIES.index('t1c')] == 0] = 0
    return Prepared(scans, reference, transforms, image)


def _on_reference(array, reference):
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def onto_input_grid(array, prepared, interpolator=sitk.sitkNearestNeighbor):
    """A (z, y, x) array on the reference grid, resampled onto the T1c input's exact grid."""
    image = sitk.Resample(_on_reference(array, prepared.reference), prepared.scans['t1c'].image,
                          sitk.Transform(), interpolator, 0.0)
    return sitk.GetArrayFromImage(image)


def region_probability_maps(probabilities):
    """{region: P(region)} (z, y, x) float32 of class probabilities (z, y, x, 5)."""
    return {region: probabilities[..., list(REGIONS[region])].sum(axis=-1) for region in REGION_NAMES}


def output_paths(output_dir, name, probabilities=False, dicom=False):
    """{kind: path} of every file a patient's results take in output_dir."""
    paths = {'labels': '{}.nii.gz', 'volumes': '{}_volumes.csv', 'png': '{}.png'}
    paths.update({'tfm_' + sequence: '{}_' + sequence + '.tfm' for sequence in SEQUENCES[1:]})
    if probabilities:
        paths.update({'prob_' + region: '{}_prob_' + region + '.nii.gz' for region in REGION_NAMES})
    if dicom:
        paths['dicom_seg'] = '{}_seg.dcm'
    return {kind: os.path.join(output_dir, pattern.format(name)) for kind, pattern in paths.items()}


def write_results(prepared, labels, probabilities, name, output_dir, dicom=False):
    """Write every output of one patient (see the module); returns {kind: path}.

    Args:
      prepared: the Prepared scans.
      labels: uint8 (z, y, x) labels on the reference grid.
      probabilities: class probabilities (z, y, x, 5) on the reference grid, or None.
      dicom: also write the DICOM Segmentation (T1c must be a DICOM series).
    """
    t1c = prepared.scans['t1c']
    paths = output_paths(output_dir, name, probabilities is not None, dicom)
    on_input = onto_input_grid(labels, prepared)
    volumes = volumes_ml(on_input, t1c.image.GetSpacing())
    maps = {} if probabilities is None else {
        region: onto_input_grid(values, prepared, sitk.sitkLinear).astype(np.float32)
        for region, values in region_probability_maps(probabilities).items()}
    if dicom:
        from model import dicom_seg   # highdicom takes a second to import; only --dicom-seg needs it
        segmentation = dicom_seg.segmentation(t1c.dicom_files, on_input)
    geometry = geometry_of(t1c.image)
    write_volume(on_input, geometry, paths['labels'])
    write_volumes_csv(name, volumes, paths['volumes'])
    channel = {modality: prepared.image[..., MODALITIES.index(modality)] for modality in ('t1c', 'flair')}
    save_sequences_montage({'T1c': channel['t1c'], 'FLAIR': channel['flair']}, labels, paths['png'])
    for sequence, transform in prepared.transforms.items():
        with atomic_output(paths['tfm_' + sequence]) as temporary:
            sitk.WriteTransform(transform, temporary)
    for region, values in maps.items():
        write_volume(values, geometry, paths['prob_' + region])
    if dicom:
        dicom_seg.write_segmentation(segmentation, paths['dicom_seg'])
    return paths


def _check_outputs(paths, scans, overwrite):
    inputs = {os.path.realpath(scan.path) for scan in scans.values()}
    for path in paths.values():
        if os.path.realpath(path) in inputs:
            raise InputError('{}: output would replace an input scan; choose another --output-dir or --name'.format(
                path))
        if os.path.exists(path) and not overwrite:
            raise InputError('{}: exists; pass --overwrite or another --name'.format(path))


def run(args, opened_predictor):
    """Inference.py's own-scans mode; `opened_predictor(args)` gives (session, predictor, sources)."""
    check_request(args)
    scans = read_scans({sequence: getattr(args, sequence) for sequence in SEQUENCES}, args.series_uid or ())
    name = args.name or default_name(scans['t1c'])
    paths = output_paths(args.output_dir, name, args.save_probabilities, args.dicom_seg)
    _check_outputs(paths, scans, args.overwrite)
    prepared = prepare(scans)
    with opened_predictor(args) as (session, predictor, sources):
        print('segmenting {} with {}'.format(name, ', '.join(sources)))
        brain_slices = int(prepared.image.any(axis=(1, 2, 3)).sum())
        with tqdm(total=brain_slices * (2 if args.save_probabilities else 1), desc=name, unit='slice',
                  leave=False) as bar:
            labels = predictor.predict(session, prepared.image, progress=bar.update)
            probabilities = predictor.probabilities(session, prepared.image, progress=bar.update) \
                if args.save_probabilities else None
    os.makedirs(args.output_dir, exist_ok=True)
    remove_stale_partials(args.output_dir)
    write_results(prepared, labels, probabilities, name, args.output_dir, args.dicom_seg)
    print('wrote {} to {}'.format(', '.join(os.path.basename(path) for path in paths.values()), args.output_dir))
    return 0
