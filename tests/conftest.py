"""Shared fixtures: the real BRATS samples beside the project, skipped when absent."""
import os

import pytest

import model  # noqa: F401  (sets TensorFlow's environment, as the scripts do, before any test imports it)

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(PROJECT_ROOT), 'shared', 'data')
BRATS2015_SAMPLE = os.path.join(SHARED_DATA, 'brats2015_sample')
BRATS2018_SAMPLE = os.path.join(SHARED_DATA, 'brats2018_sample')


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
