"""Removal of small tumour components from predicted label volumes."""
import numpy as np
import pytest
from scipy import ndimage

from model.errors import InputError
from model.postprocess import check_component_limits, remove_small_components


def three_lesions():
    """Labels with a 1000-voxel lesion, a 125-voxel one and a 8-voxel one, apart."""
    labels = np.zeros((30, 40, 40), np.uint8)
    labels[2:12, 2:12, 2:12] = 2
    labels[4:6, 4:6, 4:6] = 4                  # inside the large one: the same component
    labels[20:25, 25:30, 25:30] = 1
    labels[26:28, 2:4, 36:38] = 4
    return labels


def component_sizes(labels):
    components, _ = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), bool))
    return sorted(np.bincount(components.ravel())[1:].tolist(), reverse=True)


@pytest.mark.parametrize('min_size, min_fraction, kept', [
    (0, 0.0, [1000, 125, 8]), (9, 0.0, [1000, 125]), (126, 0.0, [1000]),
    (0, 0.008, [1000, 125, 8]), (0, 0.01, [1000, 125]), (0, 0.2, [1000]), (0, 1.0, [1000]),
    (100, 0.005, [1000, 125]), (9, 0.2, [1000]),
])
def test_components_below_either_limit_are_removed(min_size, min_fraction, kept):
    labels = three_lesions()
    cleaned = remove_small_components(labels, min_size, min_fraction)
    assert component_sizes(cleaned) == kept
    survivors = cleaned > 0
    np.testing.assert_array_equal(cleaned[survivors], labels[survivors])   # labels kept as they were
    assert component_sizes(labels) == [1000, 125, 8]                        # input untouched


def test_diagonal_neighbours_are_one_component():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0, 0, 0] = labels[1, 1, 1] = 2
    labels[3, 3, 3] = 1
    assert component_sizes(remove_small_components(labels, min_fraction=1.0)) == [2]


def test_equally_large_components_survive_keeping_the_largest():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[0:2, 0:2, 0:2] = 2
    labels[6:8, 6:8, 6:8] = 4
    np.testing.assert_array_equal(remove_small_components(labels, min_fraction=1.0), labels)


def test_a_volume_without_tumour_is_returned_as_a_copy():
    labels = np.zeros((3, 3, 3), np.uint8)
    cleaned = remove_small_components(labels, 5, 0.5)
    assert not cleaned.any() and cleaned is not labels


@pytest.mark.parametrize('min_size, min_fraction, problem', [
    (-1, 0.0, 'at least 0 voxels'), (0, -0.1, 'between 0 and 1'), (0, 1.5, 'between 0 and 1'),
])
def test_impossible_limits_are_refused(min_size, min_fraction, problem):
    with pytest.raises(InputError, match=problem):
        check_component_limits(min_size, min_fraction)
