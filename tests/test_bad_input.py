"""Bad input: every script exits 2 with one line naming the file and the problem, and leaves
no partial output behind."""
import csv
import os

import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

import create_pascal_tf_record  # noqa: E402  (after disable_v2_behavior)
import readfile  # noqa: E402
from model import phantom, records  # noqa: E402
from model.brats import find_patients  # noqa: E402
from model.lists import write_patient_list  # noqa: E402

TINY = (24, 64, 64)


@pytest.fixture
def data(tmp_path):
    """Two labelled phantom patients and their list; tests damage the second patient, so that
    the first one's shard is written before the failure."""
    root = str(tmp_path / 'phantom')
    generated = phantom.generate_dataset(root, num_hgg=2, num_lgg=0, num_test=0, shape=TINY,
                                         progress=False)
    training = os.path.join(root, 'BRATS2015_Training')
    list_path = str(tmp_path / 'lists' / 'train.txt')
    os.makedirs(os.path.dirname(list_path))
    write_patient_list(find_patients([training]), list_path)
    return {'root': root, 'training': training, 'list': list_path,
            'records': str(tmp_path / 'records'), 'good': generated[0], 'bad': generated[1]}


def run_readfile(data_dirs, list_dir, *extra):
    argv = []
    for directory in data_dirs:
        argv += ['--data-dir', str(directory)]
    return readfile.main(argv + ['--list-dir', str(list_dir), '--val-fraction', '0']
                         + list(extra))


def run_conversion(data, list_path=None, workers=1):
    return create_pascal_tf_record.main(['--list', list_path or data['list'],
                                         '--output-dir', data['records'],
                                         '--workers', str(workers)])


def error_line(capsys):
    """The one line written to stderr."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, 'expected one line on stderr, got {!r}'.format(lines)
    return lines[0]


def assert_refused(code, capsys, *needles):
    assert code == 2
    line = error_line(capsys)
    for needle in needles:
        assert str(needle) in line, '{!r} not in {!r}'.format(needle, line)
    return line


def assert_nothing_written(directory):
    """No shard, sidecar, partial file or list: the folder is absent or empty."""
    if os.path.isdir(directory):
        assert os.listdir(directory) == []


def rewrite(path, array=None, origin=None):
    """Rewrite a volume in place (same name), changing its voxels and/or its origin."""
    image = sitk.ReadImage(path)
    new = sitk.GetImageFromArray(sitk.GetArrayFromImage(image) if array is None else array)
    new.SetSpacing(image.GetSpacing())
    new.SetOrigin(image.GetOrigin() if origin is None else origin)
    new.SetDirection(image.GetDirection())
    sitk.WriteImage(new, path, True)


def voxels(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


# ---------------------------------------------------------------- readfile.py


def test_patient_missing_a_modality(data, tmp_path, capsys):
    os.remove(data['bad'].images['T1'])
    list_dir = tmp_path / 'new_lists'
    line = assert_refused(run_readfile([data['training']], list_dir), capsys,
                          data['bad'].directory, 'missing', 't1')
    assert 't1c' not in line
    assert_nothing_written(str(list_dir))


def test_skip_incomplete_warns_and_continues(data, tmp_path, capsys):
    os.remove(data['bad'].images['T1'])
    list_dir = tmp_path / 'new_lists'
    assert run_readfile([data['training']], list_dir, '--skip-incomplete') == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(warnings) == 1 and data['bad'].directory in warnings[0]
    assert 'warning' in warnings[0] and 't1' in warnings[0]
    with open(str(list_dir / 'train.txt'), newline='') as stream:
        assert [row['patient'] for row in csv.DictReader(stream)] == [data['good'].name]


def test_empty_data_folder(tmp_path, capsys):
    empty = tmp_path / 'empty'
    empty.mkdir()
    list_dir = tmp_path / 'lists'
    assert_refused(run_readfile([empty], list_dir), capsys, str(empty), 'no BRATS patient')
    assert_nothing_written(str(list_dir))


def test_missing_data_folder(tmp_path, capsys):
    missing = tmp_path / 'nowhere'
    list_dir = tmp_path / 'lists'
    assert_refused(run_readfile([missing], list_dir), capsys, str(missing), 'does not exist')
    assert_nothing_written(str(list_dir))


# ---------------------------------------------------------------- create_pascal_tf_record.py


@pytest.mark.parametrize('change', ['origin', 'size'])
def test_modality_on_another_grid(data, capsys, change):
    path = data['bad'].images['T2']
    if change == 'origin':
        rewrite(path, origin=(5.0, -(TINY[1] - 1.0), 0.0))
    else:
        rewrite(path, array=voxels(path)[:, :, :-8])
    assert_refused(run_conversion(data), capsys, path, 'grid', 'differs')
    assert_nothing_written(data['records'])


def put_label_7(path):
    labels = voxels(path)
    labels[TINY[0] // 2, TINY[1] // 2, TINY[2] // 2] = 7
    rewrite(path, array=labels)


@pytest.mark.parametrize('workers', [1, 2])
def test_label_value_7(data, capsys, workers):
    put_label_7(data['bad'].truth)
    assert_refused(run_conversion(data, workers=workers), capsys, data['bad'].truth,
                   'label value 7')
    assert_nothing_written(data['records'])


def test_failed_rerun_leaves_no_orphan_shards(data, capsys):
    assert run_conversion(data) == 0
    assert len(os.listdir(data['records'])) == 3        # two shards and the sidecar
    capsys.readouterr()
    put_label_7(data['bad'].truth)
    assert_refused(run_conversion(data), capsys, data['bad'].truth, 'label value 7')
    assert_nothing_written(data['records'])


def truncate_to_half(path):
    with open(path, 'rb') as stream:
        content = stream.read()
    with open(path, 'wb') as stream:
        stream.write(content[:len(content) // 2])
    return content


def test_truncated_mha(data, capsys):
    path = data['bad'].images['Flair']
    assert b'CompressedData = True' in truncate_to_half(path)
    line = assert_refused(run_conversion(data), capsys, path, 'truncated')
    assert 'No such file' not in line      # ITK's stale errno text is not the problem
    assert_nothing_written(data['records'])


def as_nifti_patients(data, tmp_path):
    """The two phantom patients rewritten in the BraTS 2017+ NIfTI layout, and their list."""
    for record in (data['good'], data['bad']):
        case = tmp_path / 'nifti' / record.name
        case.mkdir(parents=True)
        for kind, source in (('flair', 'Flair'), ('t1', 'T1'), ('t1ce', 'T1c'), ('t2', 'T2')):
            sitk.WriteImage(sitk.ReadImage(record.images[source]),
                            str(case / '{}_{}.nii.gz'.format(record.name, kind)), True)
        truth = sitk.ReadImage(record.truth)
        labels = sitk.GetArrayFromImage(truth)
        labels[labels == 3] = 1             # BraTS 2017+ merge non-enhancing into label 1
        seg = sitk.GetImageFromArray(labels)
        seg.CopyInformation(truth)
        sitk.WriteImage(seg, str(case / '{}_seg.nii.gz'.format(record.name)), True)
    patients = find_patients([str(tmp_path / 'nifti')])
    list_path = str(tmp_path / 'lists' / 'nifti.txt')
    write_patient_list(patients, list_path)
    return patients, list_path


def test_truncated_nifti(data, tmp_path, capsys):
    patients, list_path = as_nifti_patients(data, tmp_path)
    assert run_conversion(data, list_path) == 0        # the NIfTI copies themselves are fine
    capsys.readouterr()
    truncate_to_half(patients[1].t1)
    assert_refused(run_conversion(data, list_path), capsys, patients[1].t1, 'truncated')
    assert_nothing_written(data['records'])


def test_empty_image_file(data, capsys):
    path = data['bad'].images['T1c']
    open(path, 'wb').close()
    assert_refused(run_conversion(data), capsys, path, 'empty')
    assert_nothing_written(data['records'])


def read_rows(path):
    with open(path, newline='') as stream:
        return list(csv.reader(stream))


def write_rows(rows, path):
    with open(path, 'w', newline='') as stream:
        csv.writer(stream).writerows(rows)


def test_list_with_a_missing_path(data, capsys):
    rows = read_rows(data['list'])
    missing = rows[2][1] + '.gone'
    rows[2][1] = missing
    write_rows(rows, data['list'])
    assert_refused(run_conversion(data), capsys, data['list'] + ':3', 'flair', missing,
                   'does not exist')
    assert_nothing_written(data['records'])


def test_list_row_missing_a_column(data, capsys):
    rows = read_rows(data['list'])
    rows[1] = rows[1][:-1]
    write_rows(rows, data['list'])
    assert_refused(run_conversion(data), capsys, data['list'] + ':2', 'expected 6 fields')
    assert_nothing_written(data['records'])


def test_list_header_missing_a_column(data, capsys):
    rows = [row[:4] + row[5:] for row in read_rows(data['list'])]    # no t2 column
    write_rows(rows, data['list'])
    assert_refused(run_conversion(data), capsys, data['list'], 'header')
    assert_nothing_written(data['records'])


def test_list_with_a_duplicated_patient(data, capsys):
    rows = read_rows(data['list'])
    write_rows(rows + [rows[1]], data['list'])
    assert_refused(run_conversion(data), capsys, data['list'] + ':4', 'duplicate',
                   data['good'].name)
    assert_nothing_written(data['records'])


def write_float(path, values):
    rewrite(path, array=values.astype(np.float32))


@pytest.mark.parametrize('bad_value', [np.nan, np.inf])
def test_non_finite_voxels_in_a_float_modality(data, capsys, bad_value):
    path = data['bad'].images['T1']
    values = voxels(path).astype(np.float32) * 0.37
    values[TINY[0] // 2, 3, 3] = bad_value
    write_float(path, values)
    assert sitk.ReadImage(path).GetPixelID() == sitk.sitkFloat32
    assert_refused(run_conversion(data), capsys, path, 'NaN or infinite')
    assert_nothing_written(data['records'])


def test_finite_float_modality_is_accepted(data, capsys):
    path = data['bad'].images['T1']
    original = voxels(path)
    write_float(path, original.astype(np.float32) * 0.37)
    assert run_conversion(data) == 0
    paths, sidecar = records.resolve_records(os.path.join(data['records'], 'train-*'))
    assert len(paths) == 2 and sidecar['num_patients'] == 2


def test_all_zero_modality(data, capsys):
    path = data['bad'].images['T2']
    rewrite(path, array=np.zeros_like(voxels(path)))
    assert_refused(run_conversion(data), capsys, path, 'all zero')
    assert_nothing_written(data['records'])


# ---------------------------------------------------------------- more of the catalogue


def test_file_that_is_not_an_image(data, capsys):
    flair = data['bad'].images['Flair']
    with open(flair, 'w') as stream:
        stream.write('this is a text file, not a MetaImage\n')
    assert_refused(run_conversion(data), capsys, flair, 'cannot be read as an image')
    assert_nothing_written(data['records'])


def test_corrupted_nifti(data, tmp_path, capsys):
    nifti = str(tmp_path / 'case_flair.nii.gz')
    sitk.WriteImage(sitk.ReadImage(data['bad'].images['Flair']), nifti, True)
    with open(nifti, 'r+b') as stream:            # scribble over the middle of the deflate stream
        stream.seek(os.path.getsize(nifti) // 2)
        stream.write(os.urandom(256))
    from model.brats import DataError, read_volume
    with pytest.raises(DataError, match='case_flair.nii.gz: '):
        read_volume(nifti)


def test_volume_that_is_not_3d(data, capsys):
    flair = data['bad'].images['Flair']
    flat = sitk.GetImageFromArray(voxels(flair)[0])
    sitk.WriteImage(flat, flair, True)
    assert_refused(run_conversion(data), capsys, flair, '3-D')
    assert_nothing_written(data['records'])


def test_non_integer_label_values(data, capsys):
    truth = data['bad'].truth
    labels = voxels(truth).astype(np.float32)
    labels[labels == 2] = 1.5
    rewrite(truth, labels)
    assert_refused(run_conversion(data), capsys, truth, '1.5', 'not an integer')
    assert_nothing_written(data['records'])


def test_label_3_is_refused_in_a_brats2017_file(tmp_path, capsys):
    case = tmp_path / 'data' / 'Case_1'
    case.mkdir(parents=True)
    image = sitk.GetImageFromArray(np.full((8, 32, 32), 100, np.int16))
    for modality in ('flair', 't1', 't1ce', 't2'):
        sitk.WriteImage(image, str(case / 'Case_1_{}.nii.gz'.format(modality)), True)
    labels = np.zeros((8, 32, 32), np.uint8)
    labels[4, 10:20, 10:20] = 3
    seg = str(case / 'Case_1_seg.nii.gz')
    sitk.WriteImage(sitk.GetImageFromArray(labels), seg, True)
    assert run_readfile([tmp_path / 'data'], tmp_path / 'lists') == 0
    capsys.readouterr()
    code = create_pascal_tf_record.main(['--list', str(tmp_path / 'lists' / 'train.txt'),
                                         '--output-dir', str(tmp_path / 'records'), '--workers', '1'])
    assert_refused(code, capsys, seg, 'label value 3', 'BRATS2017')
    assert_nothing_written(str(tmp_path / 'records'))


def test_output_folder_that_cannot_be_created(data, tmp_path, capsys):
    blocker = tmp_path / 'not-a-folder'
    blocker.write_text('a file where the output folder should be')
    code = create_pascal_tf_record.main(['--list', data['list'], '--output-dir', str(blocker / 'records'),
                                         '--workers', '1'])
    assert_refused(code, capsys, 'not-a-folder')


@pytest.mark.skipif(os.geteuid() == 0, reason='root may write into read-only folders')
def test_read_only_output_folder(data, tmp_path, capsys):
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code = create_pascal_tf_record.main(['--list', data['list'], '--output-dir', str(locked),
                                             '--workers', '1'])
        assert_refused(code, capsys, 'locked')
    finally:
        locked.chmod(0o700)
