"""readfile.py: finding patients in both layouts, the list files, and the validation split."""
import collections
import csv
import dataclasses
import os

import pytest

import readfile
from model import phantom
from model.brats import LAYOUT_MHA, LAYOUT_NIFTI, find_patients
from model.lists import read_patient_list

TINY = (24, 64, 64)
HEADER = 'patient,flair,t1,t1c,t2,label'
PATIENT_2015 = 'brats_tcia_pat124_0003'
FLAIR_ID_2015 = 35557
BRATS2018_CASES = 12


def read_csv(path):
    """(header line exactly as written, rows as dicts)."""
    with open(path, newline='') as stream:
        header = stream.readline().rstrip('\r\n')
    with open(path, newline='') as stream:
        rows = list(csv.DictReader(stream))
    return header, rows


def run(data_dirs, list_dir, *extra):
    argv = []
    for directory in data_dirs:
        argv += ['--data-dir', str(directory)]
    return readfile.main(argv + ['--list-dir', str(list_dir)] + [str(a) for a in extra])


def list_names(path):
    return [patient.name for patient in read_patient_list(path)]


# ---------------------------------------------------------------- real samples


@pytest.fixture(params=['two data dirs', 'parent folder'])
def real_lists(request, brats2015_root, brats2018_root, tmp_path):
    if request.param == 'two data dirs':
        data_dirs = [brats2015_root, brats2018_root]
    else:
        data_dirs = [os.path.dirname(brats2015_root)]
    list_dir = tmp_path / 'lists'
    assert run(data_dirs, list_dir, '--val-fraction', 0) == 0
    return list_dir, data_dirs


def test_real_samples_give_one_test_and_twelve_train_patients(real_lists, brats2018_root):
    list_dir, _ = real_lists
    assert sorted(os.listdir(list_dir)) == ['test.txt', 'train.txt']
    for name in ('train.txt', 'test.txt'):
        header, _ = read_csv(list_dir / name)
        assert header == HEADER

    _, test_rows = read_csv(list_dir / 'test.txt')
    assert [row['patient'] for row in test_rows] == [PATIENT_2015]
    assert test_rows[0]['label'] == ''
    (patient,) = read_patient_list(str(list_dir / 'test.txt'))
    assert patient.layout == LAYOUT_MHA and patient.label is None
    assert patient.flair_id == FLAIR_ID_2015
    assert patient.prediction_name('run') == 'VSD.run.{}.mha'.format(FLAIR_ID_2015)

    _, train_rows = read_csv(list_dir / 'train.txt')
    cases = sorted(os.listdir(brats2018_root))
    assert len(cases) == BRATS2018_CASES
    assert [row['patient'] for row in train_rows] == cases
    for patient in read_patient_list(str(list_dir / 'train.txt'), require_labels=True):
        assert patient.layout == LAYOUT_NIFTI
        assert patient.flair_id is None
        assert patient.prediction_name('run') == patient.name + '.nii.gz'


def test_real_modality_columns_avoid_the_t1_prefix_trap(real_lists):
    list_dir, data_dirs = real_lists
    _, (row,) = read_csv(list_dir / 'test.txt')
    assert row['flair'].endswith(os.sep + 'VSD.Brain.XX.O.MR_Flair.35557.mha')
    assert row['t1'].endswith(os.sep + 'VSD.Brain.XX.O.MR_T1.35560.mha')
    assert row['t1c'].endswith(os.sep + 'VSD.Brain.XX.O.MR_T1c.35559.mha')
    assert row['t2'].endswith(os.sep + 'VSD.Brain.XX.O.MR_T2.35558.mha')
    _, rows = read_csv(list_dir / 'train.txt')
    for row in rows:
        case = row['patient']
        for column, suffix in (('flair', 'flair'), ('t1', 't1'), ('t1c', 't1ce'), ('t2', 't2'),
                               ('label', 'seg')):
            assert os.path.basename(row[column]) == '{}_{}.nii.gz'.format(case, suffix)
            assert os.path.basename(os.path.dirname(row[column])) == case
    for row in rows + read_csv(list_dir / 'test.txt')[1]:
        # Paths are kept as given: under one of the data folders passed on the command line.
        assert any(row['flair'].startswith(str(d) + os.sep) for d in data_dirs)
        assert all(os.path.isfile(row[c]) for c in ('flair', 't1', 't1c', 't2'))


# ---------------------------------------------------------------- phantom data


def generate(root, **counts):
    return phantom.generate_dataset(str(root), shape=TINY, progress=False, **counts)


def phantom_dirs(root):
    # Testing_truth holds only OT files: it is not a data folder.
    return [os.path.join(str(root), 'BRATS2015_Training'), os.path.join(str(root), 'Testing')]


@pytest.fixture(scope='module')
def small_phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp('phantom')
    return root, generate(root, num_hgg=2, num_lgg=1, num_test=2)


def test_phantom_finds_exactly_what_was_generated(small_phantom, tmp_path):
    root, generated = small_phantom
    list_dir = tmp_path / 'lists'
    assert run(phantom_dirs(root), list_dir, '--val-fraction', 0) == 0
    assert sorted(os.listdir(list_dir)) == ['test.txt', 'train.txt']
    train = [r for r in generated if r.split == 'train']
    test = [r for r in generated if r.split == 'test']

    listed = {p.name: p for p in read_patient_list(str(list_dir / 'train.txt'), require_labels=True)}
    assert sorted(listed) == sorted(r.name for r in train)
    for record in train:
        patient = listed[record.name]
        assert (patient.flair, patient.t1, patient.t1c, patient.t2) == tuple(
            record.images[m] for m in ('Flair', 'T1', 'T1c', 'T2'))
        assert patient.label == record.truth
        assert patient.flair_id == record.flair_id

    listed = {p.name: p for p in read_patient_list(str(list_dir / 'test.txt'))}
    assert sorted(listed) == sorted(r.name for r in test)
    for record in test:
        patient = listed[record.name]
        assert patient.label is None
        assert patient.flair == record.images['Flair']
        assert patient.flair_id == record.flair_id
        assert patient.prediction_name('x') == 'VSD.x.{}.mha'.format(record.flair_id)

    # Grades come from the HGG/LGG folder; test patients sit under HGG_LGG and have none.
    found = {p.name: p for p in find_patients(phantom_dirs(root))}
    assert {name: p.grade for name, p in found.items()} == {
        r.name: (r.grade if r.split == 'train' else None) for r in generated}
    assert {name: bool(p.label) for name, p in found.items()} == {
        r.name: r.split == 'train' for r in generated}


# ---------------------------------------------------------------- validation split


@pytest.fixture(scope='module')
def graded_phantom(tmp_path_factory):
    """6 HGG + 4 LGG labelled patients, no test patients."""
    root = tmp_path_factory.mktemp('graded')
    generated = generate(root, num_hgg=6, num_lgg=4, num_test=0)
    return root, {r.name: r.grade for r in generated}


def split(root, list_dir, fraction, seed):
    assert run(phantom_dirs(root)[:1], list_dir, '--val-fraction', fraction, '--seed', seed) == 0
    val_path = list_dir / 'val.txt'
    return (list_names(str(list_dir / 'train.txt')),
            list_names(str(val_path)) if val_path.exists() else [])


def test_split_is_seeded_patient_level_and_stratified(graded_phantom, tmp_path):
    root, grades = graded_phantom
    train, val = split(root, tmp_path / 'a', 0.25, 7)
    assert split(root, tmp_path / 'b', 0.25, 7) == (train, val)
    assert (tmp_path / 'a' / 'val.txt').read_bytes() == (tmp_path / 'b' / 'val.txt').read_bytes()
    assert (tmp_path / 'a' / 'train.txt').read_bytes() == (tmp_path / 'b' / 'train.txt').read_bytes()
    assert not (tmp_path / 'a' / 'test.txt').exists()

    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(grades)
    per_grade = collections.Counter(grades[name] for name in val)
    assert per_grade == {'HGG': round(0.25 * 6), 'LGG': round(0.25 * 4)}

    val_sets = {tuple(split(root, tmp_path / 'seed{}'.format(seed), 0.25, seed)[1])
                for seed in range(6)}
    assert len(val_sets) > 1, 'six seeds all gave the same validation split'


def test_zero_fraction_keeps_every_labelled_patient_in_train(graded_phantom, tmp_path):
    root, grades = graded_phantom
    list_dir = tmp_path / 'lists'
    split(root, list_dir, 0.25, 0)
    assert (list_dir / 'val.txt').exists()
    # A rerun without validation removes the old val.txt.
    train, val = split(root, list_dir, 0, 0)
    assert val == [] and not (list_dir / 'val.txt').exists()
    assert train == sorted(grades)
    assert sorted(os.listdir(list_dir)) == ['train.txt']


def test_lists_round_trip_to_the_discovered_patients(small_phantom, tmp_path):
    root, _ = small_phantom
    list_dir = tmp_path / 'lists'
    assert run(phantom_dirs(root), list_dir, '--val-fraction', 0.5, '--seed', 3) == 0
    read_back = []
    for name in ('train.txt', 'val.txt', 'test.txt'):
        read_back += read_patient_list(str(list_dir / name))
    discovered = find_patients(phantom_dirs(root))
    # Lists do not store the grade; every other field survives the round trip.
    assert sorted(read_back, key=lambda p: p.name) == [
        dataclasses.replace(p, grade=None) for p in discovered]
