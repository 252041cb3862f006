"""The built-in phantom dataset: BRATS2015 layout, names, geometry, labels and contrasts."""
import os
import re

import numpy as np
import pytest
import SimpleITK as sitk

from model import phantom
from model.lists import read_patient_list

TINY = (24, 64, 64)
MODALITY_OFFSETS = {'Flair': 0, 'T2': 1, 'T1c': 2, 'T1': 3}
PATIENT = re.compile(r'^brats_phantom_pat(\d{4})_1$')
IMAGE = re.compile(r'^VSD\.Brain\.XX\.O\.MR_(Flair|T1|T1c|T2)\.(\d+)$')
TRUTH = re.compile(r'^VSD\.Brain_3more\.XX\.O\.OT\.(\d+)$')


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """A tiny dataset: 2 HGG + 1 LGG training patients and 2 test patients."""
    root = str(tmp_path_factory.mktemp('phantom'))
    records = phantom.generate_dataset(root, num_hgg=2, num_lgg=1, num_test=2, shape=TINY,
                                       seed=0, progress=False)
    return root, records


def read(path):
    image = sitk.ReadImage(path)
    return image, sitk.GetArrayFromImage(image)


def vsd_id(folder, pattern):
    """The numeric id of a VSD folder whose .mha has the same name; fails on any mismatch."""
    match = pattern.match(os.path.basename(folder))
    assert match, folder
    assert os.listdir(folder) == [os.path.basename(folder) + '.mha']
    return int(match.groups()[-1])


def all_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files)


def test_layout_holds_exactly_the_brats2015_tree(dataset):
    root, records = dataset
    expected = []
    for record in records:
        expected += list(record.images.values()) + [record.truth]
    expected.append(os.path.join(root, phantom.TRUTH_LIST))
    assert all_files(root) == sorted(os.path.relpath(p, root) for p in expected)
    assert sorted(os.listdir(root)) == ['BRATS2015_Training', 'Testing', 'Testing_truth',
                                        phantom.TRUTH_LIST]
    assert sorted(os.listdir(os.path.join(root, 'BRATS2015_Training'))) == ['HGG', 'LGG']
    assert os.listdir(os.path.join(root, 'Testing')) == ['HGG_LGG']


def test_training_patients_hold_four_modalities_and_their_truth(dataset):
    root, records = dataset
    train = [r for r in records if r.split == 'train']
    assert [r.grade for r in train] == ['HGG', 'HGG', 'LGG']
    for record in train:
        assert record.directory == os.path.join(root, 'BRATS2015_Training', record.grade,
                                                record.name)
        folders = sorted(os.listdir(record.directory))
        assert len(folders) == 5
        assert sum(bool(TRUTH.match(f)) for f in folders) == 1
        assert os.path.dirname(os.path.dirname(record.truth)) == record.directory


def test_test_patients_have_no_truth_beside_them_and_mix_grades(dataset):
    root, records = dataset
    test = [r for r in records if r.split == 'test']
    assert sorted(r.grade for r in test) == ['HGG', 'LGG']
    for record in test:
        assert record.directory == os.path.join(root, 'Testing', 'HGG_LGG', record.name)
        folders = os.listdir(record.directory)
        assert len(folders) == 4 and all(IMAGE.match(f) for f in folders)
        truth_dir = os.path.join(root, 'Testing_truth', record.name)
        assert record.truth.startswith(truth_dir + os.sep)
        assert os.path.isfile(record.truth)


def test_names_and_ids_follow_brats_and_are_unique(dataset):
    _, records = dataset
    names = [r.name for r in records]
    assert all(PATIENT.match(n) for n in names) and len(set(names)) == len(names)
    ids = []
    for record in records:
        for modality, path in record.images.items():
            folder = os.path.dirname(path)
            assert IMAGE.match(os.path.basename(folder)).group(1) == modality
            assert vsd_id(folder, IMAGE) == record.flair_id + MODALITY_OFFSETS[modality]
            ids.append(vsd_id(folder, IMAGE))
        truth_id = vsd_id(os.path.dirname(record.truth), TRUTH)
        assert truth_id == record.flair_id + 4
        ids.append(truth_id)
    assert len(set(ids)) == len(ids) == 5 * len(records)


def test_volumes_have_brats_geometry_and_are_compressed(dataset):
    _, records = dataset
    record = records[0]
    for path in list(record.images.values()) + [record.truth]:
        image, array = read(path)
        assert image.GetSize() == (64, 64, 24) and array.shape == TINY
        assert image.GetSpacing() == (1.0, 1.0, 1.0)
        assert image.GetOrigin() == (0.0, -63.0, 0.0)
        assert image.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
        with open(path, 'rb') as handle:
            header = handle.read(1024).split(b'ElementDataFile')[0].decode('ascii')
        assert 'CompressedData = True' in header
    for path in record.images.values():
        image, array = read(path)
        assert array.dtype == np.int16 and array.min() >= 0
    assert read(record.truth)[1].dtype in (np.uint8, np.int16)


def test_labels_and_brain_masks(dataset):
    _, records = dataset
    for record in records:
        labels = read(record.truth)[1]
        present = set(np.unique(labels).tolist())
        assert present <= {0, 1, 2, 3, 4}
        images = [read(p)[1] for p in record.images.values()]
        brain = images[0] > 0
        for image in images:
            assert np.array_equal(image > 0, brain)   # zero outside the brain, in every one
        assert brain[labels > 0].all()                # the tumour lies inside the brain
        assert 0.05 < brain.mean() < 0.4
        tumour = np.count_nonzero(labels)
        if record.grade == 'HGG':
            assert present == {0, 1, 2, 3, 4}
        else:
            assert {2, 3} <= present and np.count_nonzero(labels == 4) <= 0.01 * tumour


def test_lgg_enhancement_is_absent_or_tiny():
    for index in range(6):
        labels = phantom.synthesize_patient(np.random.default_rng((1, index)), 'LGG', TINY).labels
        assert np.count_nonzero(labels == 4) <= 0.01 * np.count_nonzero(labels)


def test_tissue_map_matches_the_images():
    patient = phantom.synthesize_patient(np.random.default_rng(3), 'HGG', TINY)
    brain = patient.tissue > phantom.BACKGROUND
    for image in patient.images.values():
        assert np.array_equal(image > 0, brain)
    assert set(np.unique(patient.tissue)) == {phantom.BACKGROUND, phantom.CSF, phantom.GM,
                                              phantom.WM}


def test_full_size_patient_shows_each_region_in_its_contrast():
    patient = phantom.synthesize_patient(np.random.default_rng((0, 0)), 'HGG')
    labels, tissue = patient.labels, patient.tissue
    assert labels.shape == phantom.SHAPE

    def mean(modality, mask):
        return patient.images[modality][mask].mean()

    normal = {name: (labels == 0) & (tissue == code)
              for name, code in [('csf', phantom.CSF), ('gm', phantom.GM), ('wm', phantom.WM)]}
    region = {name: labels == label for name, label in
              [('necrosis', 1), ('oedema', 2), ('non_enhancing', 3), ('enhancing', 4)]}
    t1 = {name: mean('T1', mask) for name, mask in normal.items()}
    t2 = {name: mean('T2', mask) for name, mask in normal.items()}
    assert t1['wm'] > t1['gm'] > t1['csf']
    assert t2['csf'] > t2['gm'] > t2['wm']
    flair_oedema = mean('Flair', region['oedema'])
    assert flair_oedema > 1.5 * max(mean('Flair', mask) for mask in normal.values())
    assert mean('Flair', normal['csf']) < mean('Flair', normal['wm'])
    t1c_rim = mean('T1c', region['enhancing'])
    assert t1c_rim > 1.5 * max(mean('T1c', m) for m in list(normal.values()) + [region['oedema']])
    assert mean('T1', region['necrosis']) < mean('T1', region['non_enhancing']) < t1['wm']
    assert mean('T2', region['necrosis']) > mean('T2', region['oedema']) > t2['gm']
    for image in patient.images.values():
        assert 50 < np.percentile(image[image > 0], 50) < 1000


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    def files(seed, name):
        records = phantom.generate_dataset(str(tmp_path / name), num_hgg=1, num_lgg=0,
                                           num_test=1, shape=TINY, seed=seed, progress=False)
        paths = [p for r in records for p in list(r.images.values()) + [r.truth]]
        return [open(p, 'rb').read() for p in paths]

    first, again, other = files(5, 'a'), files(5, 'b'), files(6, 'c')
    assert first == again
    assert all(a != b for a, b in zip(first, other))


def test_generator_is_deterministic_per_seed():
    def make(seed):
        return phantom.synthesize_patient(np.random.default_rng(seed), 'LGG', TINY)

    a, b, c = make((2, 0)), make((2, 0)), make((2, 1))
    assert np.array_equal(a.labels, b.labels)
    assert all(np.array_equal(a.images[m], b.images[m]) for m in phantom.MODALITIES)
    assert not np.array_equal(a.images['T1'], c.images['T1'])


def test_cli_writes_the_dataset_and_prints_a_summary(tmp_path, capsys):
    root = str(tmp_path / 'out')
    code = phantom.main(['--output-dir', root, '--hgg', '1', '--lgg', '1', '--test', '1',
                         '--shape', '24,64,64', '--seed', '4', '--quiet'])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and '3 phantom patients' in out[0]
    assert len(all_files(root)) == 3 * 5 + 1
    assert len(os.listdir(os.path.join(root, 'Testing', 'HGG_LGG'))) == 1


@pytest.mark.parametrize('argv', [['--shape', '8,64,64'], ['--shape', '24,64'],
                                  ['--hgg', '0', '--lgg', '0', '--test', '0'],
                                  ['--hgg', '-1']])
def test_cli_rejects_bad_input_in_one_line(tmp_path, capsys, argv):
    code = phantom.main(['--output-dir', str(tmp_path), '--quiet'] + argv)
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert os.listdir(str(tmp_path)) == []


def test_truth_list_pairs_test_images_with_their_kept_apart_truth(dataset):
    root, records = dataset
    listed = read_patient_list(os.path.join(root, phantom.TRUTH_LIST), require_labels=True)
    tests = [record for record in records if record.split == 'test']
    assert [patient.name for patient in listed] == [record.name for record in tests]
    for patient, record in zip(listed, tests):
        assert patient.label == record.truth and patient.flair == record.images['Flair']
        assert patient.flair_id == record.flair_id
