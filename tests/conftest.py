"""Shared fixtures: the real BRATS samples beside the project, skipped when absent."""
import os

import pytest

import model  # noqa: F401  (sets TensorFlow's environment, as the scripts do, before any test imports it)

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(PROJECT_ROOT), 'shared', 'data')
BRATS2015_SAMPLE = os.path.join(SHARED_DATA, 'brats2015_sample')
BRATS2018_SAMPLE = os.path.join(SHARED_DATA, 'brats2018_sample')


TRAIN_SHAPE = (24, 96, 96)


def pytest_configure(config):
    """Register the marker of the slow end-to-end tests (`make test-fast` leaves them out)."""
    config.addinivalue_line('markers', 'slow: end-to-end runs of the scripts; left out by make test-fast')


@pytest.fixture(scope='session')
def data(tmp_path_factory):
    """Records of 4 tiny phantom training patients, and a validation list of a fifth."""
    import create_pascal_tf_record
    from model import phantom
    from model.brats import find_patients
    from model.lists import write_patient_list
    root = str(tmp_path_factory.mktemp('train'))
    phantom.generate_dataset(os.path.join(root, 'phantom'), num_hgg=3, num_lgg=2, num_test=0,
                             shape=TRAIN_SHAPE, progress=False)
    patients = find_patients([os.path.join(root, 'phantom')])
    lists = {'train': os.path.join(root, 'train.txt'), 'val': os.path.join(root, 'val.txt')}
    write_patient_list(patients[:4], lists['train'])
    write_patient_list(patients[4:], lists['val'])
    records = os.path.join(root, 'records')
    assert create_pascal_tf_record.main(['--list', lists['train'], '--output-dir', records,
                                         '--workers', '1']) == 0
    return dict(root=root, records=os.path.join(records, 'train-*'), **lists)


def _require(path):
    if not os.path.isdir(path):
        pytest.skip('real BRATS sample not found at {} (../shared/data is absent)'.format(path))
    return path


@pytest.fixture
def brats2015_root():
    """Root of the one real BRATS2015 test patient."""
    return _require(BRATS2015_SAMPLE)


@pytest.fixture
def brats2018_root():
    """Root of the 12 real labelled BraTS 2018 cases."""
    return _require(BRATS2018_SAMPLE)
