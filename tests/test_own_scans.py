"""Inference.py on a patient's own scans (--t1c --flair --t1 --t2): clinical-looking scans made from
a real BraTS 2018 case with known grids and poses (bench/clinical.py: T1c a DICOM series at
0.9 x 0.9 x 2 mm, FLAIR in 5 mm slices, T1 sagittal, each in its own pose and intensity gain) are
segmented by a tiny network trained here on that case, and compared with the same network on the
clean BraTS files; and every refusal."""
import csv
import os

import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

import create_pascal_tf_record  # noqa: E402  (after disable_v2_behavior)
import Inference  # noqa: E402
import Train  # noqa: E402
from conftest import BRATS2015_SAMPLE, BRATS2018_SAMPLE  # noqa: E402
from script_runs import error_line, run_main  # noqa: E402
from bench import clinical  # noqa: E402
from model import alignment, metrics, skull  # noqa: E402
from model.brats import find_patients  # noqa: E402
from model.labels import REGION_NAMES, region_mask  # noqa: E402
from model.lists import write_patient_list  # noqa: E402
from model.tumour_volumes import COLUMNS, volumes_ml  # noqa: E402

CASE = 'Brats18_2013_2_1'
TRAIN_STEPS = 600
TRAIN_FLAGS = ['--batch-size', '4', '--crop-size', '128', '--width', '0.125', '--refine-filters', '8',
               '--shuffle-buffer', '64', '--tumour-fraction', '0.5', '--save-every-steps', '100000',
               '--summary-every-steps', '100000', '--val-list', '']
DICE_TOLERANCE = 0.03
NAME = 'PATIENT41'


def run(argv):
    """Inference.main(argv) in-process; returns (exit code, stdout, stderr)."""
    return run_main(Inference, argv)


def scan_flags(paths):
    return [flag for sequence in ('t1c', 'flair', 't1', 't2') for flag in ('--' + sequence, paths[sequence])]


def read_series(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute(), reader.GetFileNames()


def case_dir():
    path = os.path.join(BRATS2018_SAMPLE, CASE)
    if not os.path.isdir(path):
        pytest.skip('real BRATS sample not found at {} (../shared/data is absent)'.format(path))
    return path


@pytest.fixture(scope='module')
def network(tmp_path_factory):
    """A tiny network trained on the real case (list, checkpoint folder)."""
    case_dir()
    root = tmp_path_factory.mktemp('own_scans_network')
    (patient,) = [p for p in find_patients([BRATS2018_SAMPLE]) if p.name == CASE]
    list_path = str(root / 'train.txt')
    write_patient_list([patient], list_path)
    assert create_pascal_tf_record.main(['--list', list_path, '--output-dir', str(root / 'records'),
                                         '--workers', '1']) == 0
    ckpt = str(root / 'ckpt')
    assert Train.main(['--train-records', str(root / 'records' / 'train-*'), '--ckpt-dir', ckpt,
                       '--num-steps', str(TRAIN_STEPS)] + TRAIN_FLAGS) == 0
    return {'list': list_path, 'ckpt': ckpt, 'patient': patient}


@pytest.fixture(scope='module')
def clinical_case(tmp_path_factory):
    """The real case made into clinical scans: {'paths': {sequence: path}, 'truth': labels on T1c's grid}."""
    return clinical.make_clinical_case(case_dir(), str(tmp_path_factory.mktemp('clinical')), patient_id=NAME)


@pytest.fixture(scope='module')
def own(network, clinical_case, tmp_path_factory):
    """Inference.py on the clinical scans with every output switched on."""
    output = tmp_path_factory.mktemp('own_out')
    code, out, err = run(scan_flags(clinical_case['paths']) + [
        '--ckpt-dir', network['ckpt'], '--output-dir', output, '--dicom-seg', '--save-probabilities'])
    assert code == 0, err
    return {'dir': output, 'stdout': out}


@pytest.mark.slow
def test_every_output_is_written(own):
    expected = {NAME + suffix for suffix in ('.nii.gz', '_volumes.csv', '.png', '_flair.tfm', '_t1.tfm', '_t2.tfm',
                                             '_prob_WT.nii.gz', '_prob_TC.nii.gz', '_prob_ET.nii.gz', '_seg.dcm')}
    assert set(os.listdir(own['dir'])) == expected
    assert 'model.ckpt-{}'.format(TRAIN_STEPS) in own['stdout']


@pytest.mark.slow
def test_labels_lie_exactly_on_the_t1c_input_grid(own, clinical_case):
    labels = sitk.ReadImage(str(own['dir'] / (NAME + '.nii.gz')))
    t1c, _ = read_series(clinical_case['paths']['t1c'])
    assert labels.GetSize() == t1c.GetSize()
    assert np.allclose(labels.GetSpacing(), t1c.GetSpacing(), atol=1e-6)
    assert np.allclose(labels.GetOrigin(), t1c.GetOrigin(), atol=1e-4)
    assert np.allclose(labels.GetDirection(), t1c.GetDirection(), atol=1e-6)
    assert labels.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) <= {0, 1, 2, 3, 4}


@pytest.mark.slow
def test_whole_tumour_dice_is_that_of_the_clean_files(network, own, clinical_case, tmp_path):
    code, _, err = run(['--list', network['list'], '--ckpt-dir', network['ckpt'], '--output-dir', tmp_path])
    assert code == 0, err
    clean = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / (CASE + '.nii.gz'))))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(network['patient'].label))
    clean_dice = metrics.dice(clean > 0, truth > 0)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(own['dir'] / (NAME + '.nii.gz'))))
    own_dice = metrics.dice(labels > 0, sitk.GetArrayFromImage(clinical_case['truth']) > 0)
    print('WT Dice: clean BraTS files {:.3f}, own scans {:.3f}'.format(clean_dice, own_dice))
    assert clean_dice > 0.6   # the network segments its training case, so the comparison means something
    assert abs(own_dice - clean_dice) <= DICE_TOLERANCE


@pytest.mark.slow
def test_volumes_csv_agrees_with_the_label_counts(own):
    labels = sitk.ReadImage(str(own['dir'] / (NAME + '.nii.gz')))
    array = sitk.GetArrayFromImage(labels)
    voxel_ml = np.prod(labels.GetSpacing()) / 1000.0
    with open(own['dir'] / (NAME + '_volumes.csv'), newline='') as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 1 and tuple(rows[0]) == COLUMNS and rows[0]['patient'] == NAME
    for region in REGION_NAMES:
        assert float(rows[0][region + '_ml']) == pytest.approx(region_mask(array, region).sum() * voxel_ml, abs=1e-3)
    assert float(rows[0]['WT_ml']) > 1.0
    assert float(rows[0]['enhancing_ml']) == float(rows[0]['ET_ml'])
    assert sum(float(rows[0][column]) for column in COLUMNS[4:]) == pytest.approx(float(rows[0]['WT_ml']), abs=1e-2)


def test_volumes_in_ml_follow_the_voxel_size():
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[0, 0, :3], labels[1, :2, 0], labels[2, 0, 0] = 1, 2, 4
    volumes = volumes_ml(labels, (0.5, 2.0, 3.0))   # 3 mm3 voxels
    assert volumes == pytest.approx({'WT_ml': 0.018, 'TC_ml': 0.012, 'ET_ml': 0.003, 'necrosis_ml': 0.009,
                                     'oedema_ml': 0.006, 'non_enhancing_ml': 0.0, 'enhancing_ml': 0.003})


def test_outputs_are_named_after_the_t1c_file_or_the_patient_id():
    from model.scans import Scan, default_name
    assert default_name(Scan('t1c', '/scans/case 7.T1c.nii.gz', None)) == 'case_7.T1c'
    assert default_name(Scan('t1c', '/scans/dicom', None, ('a.dcm',), 'PAT/01')) == 'PAT_01'


@pytest.mark.slow
def test_probability_maps_lie_on_the_t1c_grid_and_agree_with_the_labels(own):
    labels = sitk.ReadImage(str(own['dir'] / (NAME + '.nii.gz')))
    for region in REGION_NAMES:
        image = sitk.ReadImage(str(own['dir'] / '{}_prob_{}.nii.gz'.format(NAME, region)))
        assert image.GetSize() == labels.GetSize() and image.GetPixelID() == sitk.sitkFloat32
        assert np.allclose(image.GetOrigin(), labels.GetOrigin())
        assert np.allclose(image.GetDirection(), labels.GetDirection())
        values = sitk.GetArrayFromImage(image)
        assert values.min() >= 0.0 and values.max() <= 1.0 + 1e-5
    whole = sitk.GetArrayFromImage(sitk.ReadImage(str(own['dir'] / (NAME + '_prob_WT.nii.gz'))))
    tumour = sitk.GetArrayFromImage(labels) > 0
    assert metrics.dice(whole > 0.5, tumour) > 0.9


@pytest.mark.slow
def test_transforms_recover_the_known_poses(own, clinical_case):
    volume = sitk.ReadImage(network_case_file('t1ce'))
    centre = clinical.centre_of(volume)
    t1c_pose = clinical.pose(clinical.ACQUISITIONS['t1c'], centre)
    brain = np.argwhere(sitk.GetArrayFromImage(volume) > 0)[::5000][:, ::-1]
    for sequence in ('flair', 't1', 't2'):
        found = sitk.ReadTransform(str(own['dir'] / '{}_{}.tfm'.format(NAME, sequence)))
        true_inverse = clinical.pose(clinical.ACQUISITIONS[sequence], centre).GetInverse()
        errors = []
        for index in brain:   # brain points in the T1c scan's space, mapped both ways into the scan's
            point = t1c_pose.GetInverse().TransformPoint(volume.TransformIndexToPhysicalPoint(index.tolist()))
            expected = true_inverse.TransformPoint(t1c_pose.TransformPoint(point))
            errors.append(np.linalg.norm(np.subtract(found.TransformPoint(point), expected)))
        assert max(errors) < 2.0, (sequence, max(errors))


def network_case_file(kind):
    return os.path.join(case_dir(), '{}_{}.nii.gz'.format(CASE, kind))


@pytest.mark.slow
def test_dicom_seg_references_the_t1c_series_and_matches_the_labels(own, clinical_case):
    import highdicom
    import pydicom
    segmentation = highdicom.seg.segread(str(own['dir'] / (NAME + '_seg.dcm')))
    _, files = read_series(clinical_case['paths']['t1c'])
    sources = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    uids = [source.SOPInstanceUID for source in sources]
    assert segmentation.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert segmentation.StudyInstanceUID == sources[0].StudyInstanceUID
    assert segmentation.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert segmentation.PatientID == NAME
    referenced = {item.ReferencedSOPInstanceUID for series in segmentation.ReferencedSeriesSequence
                  for item in series.ReferencedInstanceSequence}
    assert referenced == set(uids)
    assert [segment.SegmentLabel for segment in segmentation.SegmentSequence] == [
        'Whole tumour', 'Tumour core', 'Enhancing tumour']
    masks = segmentation.get_pixels_by_source_instance(uids, segment_numbers=[1, 2, 3])
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(own['dir'] / (NAME + '.nii.gz'))))
    for number, region in enumerate(REGION_NAMES):
        assert np.array_equal(masks[..., number].astype(bool), region_mask(labels, region)), region
    assert masks[..., 0].any()


def test_the_brats_files_read_in_the_training_orientation():
    paths = [network_case_file('t1ce')]
    paths += [os.path.join(directory, name) for directory, _, names in os.walk(BRATS2015_SAMPLE)
              for name in names if name.endswith('.mha')][:1]
    for path in paths:
        image = sitk.ReadImage(path)
        assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
            image.GetDirection()) == alignment.TRAINING_ORIENTATION
        reference = alignment.reference_grid(image)   # already there: the same voxels, not resampled
        assert np.array_equal(sitk.GetArrayViewFromImage(reference), sitk.GetArrayViewFromImage(image))


def test_real_skull_stripped_cases_pass_and_a_head_with_skull_is_refused():
    for case in sorted(os.listdir(BRATS2018_SAMPLE)):
        for kind in ('t1ce', 'flair'):
            skull.check_skull_stripped(sitk.ReadImage(os.path.join(BRATS2018_SAMPLE, case, '{}_{}.nii.gz'.format(
                case, kind))), case)
    with pytest.raises(skull.DataError, match='skull'):
        skull.check_skull_stripped(with_skull(sitk.ReadImage(network_case_file('t1ce'))), 'head')


def with_skull(image, seed=0):
    """A brain with a synthetic skull (dark) and scalp (bright) shell and noisy air around it."""
    brain = sitk.GetArrayFromImage(image).astype(np.float32)
    mask = sitk.Cast(image != 0, sitk.sitkUInt8)
    level = float(brain[brain > 0].mean())
    dilate = lambda radius: sitk.GetArrayFromImage(sitk.BinaryDilate(mask, [radius] * 3)) > 0  # noqa: E731
    skull_shell, head = dilate(6), dilate(12)
    random = np.random.default_rng(seed)
    result = np.abs(random.normal(0.0, 0.03 * level, brain.shape)).astype(np.float32)
    result[head] = 1.3 * level + random.normal(0.0, 0.1 * level, int(head.sum()))
    result[skull_shell] = 0.15 * level
    result[brain > 0] = brain[brain > 0]
    out = sitk.GetImageFromArray(result)
    out.CopyInformation(image)
    return out


# -- refusals: one line naming the scan, exit code 2, nothing written ----------------------------

def refused(paths, tmp_path, *extra):
    """Run Inference.py on the scans; assert exit 2 and no output; return the error line."""
    output = tmp_path / 'out'
    code, _, err = run(scan_flags(paths) + ['--ckpt-dir', tmp_path / 'no_ckpt', '--output-dir', output] + list(extra))
    assert code == 2, err
    assert not output.exists() or not os.listdir(output)
    return error_line(err)


def altered(clinical_case, tmp_path, sequence, image, suffix='.nii.gz'):
    """The clinical scan paths with one sequence replaced by `image`, written to tmp_path."""
    path = str(tmp_path / (sequence + suffix))
    sitk.WriteImage(image, path)
    return dict(clinical_case['paths'], **{sequence: path})


@pytest.mark.parametrize('problem', ['missing_t2', 'with_list', 'name_with_folder', 'dicom_seg_of_a_file'])
def test_an_incomplete_or_contradictory_request_is_refused(clinical_case, tmp_path, problem):
    paths = dict(clinical_case['paths'], t1c=clinical_case['paths']['t2']) if problem == 'dicom_seg_of_a_file' \
        else clinical_case['paths']
    argv = scan_flags(paths) + ['--output-dir', tmp_path / 'out']
    argv = {'missing_t2': argv[:6] + argv[8:], 'with_list': argv + ['--list', tmp_path / 'test.txt'],
            'name_with_folder': argv + ['--name', '../elsewhere'], 'dicom_seg_of_a_file': argv + ['--dicom-seg']}[problem]
    code, _, err = run(argv)
    assert code == 2 and not (tmp_path / 'out').exists()
    assert {'missing_t2': '--t2', 'with_list': '--list', 'name_with_folder': '--name',
            'dicom_seg_of_a_file': 'DICOM series folder'}[problem] in error_line(err)


@pytest.mark.parametrize('problem', ['missing', 'unreadable', 'two_d', 'empty_series'])
def test_a_missing_unreadable_flat_or_empty_scan_is_refused(clinical_case, tmp_path, problem):
    paths = dict(clinical_case['paths'])
    bad = tmp_path / 'bad.nii.gz'
    if problem == 'unreadable':
        bad.write_bytes(b'not an image at all')
    elif problem == 'two_d':
        sitk.WriteImage(sitk.Image(64, 64, sitk.sitkInt16) + 1, str(bad))
    elif problem == 'empty_series':
        bad = tmp_path / 'empty_series'
        bad.mkdir()
    paths['flair'] = str(bad)
    line = refused(paths, tmp_path)
    assert str(bad) in line
    assert {'missing': 'does not exist', 'unreadable': 'cannot be read', 'two_d': '3-D',
            'empty_series': 'no DICOM series'}[problem] in line


def test_scans_of_two_patients_are_refused(clinical_case, tmp_path):
    flair = sitk.ReadImage(clinical_case['paths']['flair'])
    folder = clinical.write_dicom_series(flair, str(tmp_path / 'flair_dicom'), 'SOMEONE_ELSE', 'FLAIR')
    line = refused(dict(clinical_case['paths'], flair=folder), tmp_path)
    assert folder in line and 'SOMEONE_ELSE' in line and NAME in line


def test_a_folder_of_several_series_is_refused_unless_one_is_chosen(clinical_case, tmp_path):
    import shutil
    folder = tmp_path / 'two_series'
    shutil.copytree(clinical_case['paths']['t1c'], folder)
    clinical.write_dicom_series(sitk.ReadImage(clinical_case['paths']['flair']), str(tmp_path / 'flair_dicom'), NAME)
    for name in os.listdir(tmp_path / 'flair_dicom'):
        shutil.copy(tmp_path / 'flair_dicom' / name, folder / ('flair_' + name))
    line = refused(dict(clinical_case['paths'], t1c=str(folder)), tmp_path)
    assert str(folder) in line and 'holds 2 DICOM series' in line
    _, files = read_series(clinical_case['paths']['t1c'])
    import pydicom
    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    from model.scans import read_scan
    chosen = read_scan('t1c', str(folder), (uid,))
    assert chosen.image.GetSize() == read_series(clinical_case['paths']['t1c'])[0].GetSize()


def test_a_scan_that_does_not_overlap_the_t1c_is_refused(clinical_case, tmp_path):
    flair = sitk.ReadImage(clinical_case['paths']['flair'])
    flair.SetOrigin(np.add(flair.GetOrigin(), (400.0, 0.0, 0.0)).tolist())
    paths = altered(clinical_case, tmp_path, 'flair', flair)
    line = refused(paths, tmp_path)
    assert paths['flair'] in line and 'does not overlap' in line


def test_a_scan_whose_field_of_view_misses_the_brain_is_refused(clinical_case, tmp_path):
    t2 = sitk.ReadImage(clinical_case['paths']['t2'])
    paths = altered(clinical_case, tmp_path, 't2', t2[:, :, t2.GetDepth() // 2:t2.GetDepth() // 2 + 10])
    line = refused(paths, tmp_path)
    assert paths['t2'] in line and 'field of view does not cover the brain' in line


def test_a_t1c_whose_field_of_view_cuts_the_brain_is_refused(clinical_case, tmp_path):
    t1c, _ = read_series(clinical_case['paths']['t1c'])
    paths = altered(clinical_case, tmp_path, 't1c', t1c[:, :, t1c.GetDepth() // 2:])
    line = refused(paths, tmp_path)
    assert paths['t1c'] in line and 'field of view does not cover the brain' in line


def test_a_scan_with_skull_is_refused(clinical_case, tmp_path):
    paths = altered(clinical_case, tmp_path, 't1', with_skull(sitk.ReadImage(clinical_case['paths']['t1'])))
    line = refused(paths, tmp_path)
    assert paths['t1'] in line and 'skull' in line


def test_registration_does_not_care_about_intensity_units(clinical_case):
    from model.scans import read_scan
    reference = alignment.reference_grid(read_scan('t1c', clinical_case['paths']['t1c']).image)
    t2 = read_scan('t2', clinical_case['paths']['t2']).image
    found = [alignment.register(reference, image, 't2')[0] for image in (t2, t2 * 250.0)]
    brain = np.argwhere(sitk.GetArrayFromImage(reference) != 0)[::4000, ::-1]
    points = [reference.TransformIndexToPhysicalPoint([int(i) for i in index]) for index in brain]
    moved = np.array([[transform.TransformPoint(point) for point in points] for transform in found])
    assert np.linalg.norm(moved[0] - moved[1], axis=1).max() < 1.0   # mm, over the T1c brain
