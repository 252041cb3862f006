"""Bringing a patient's own scans onto the grid the network was trained on.

The BRATS volumes (both layouts) read with SimpleITK have the identity direction, which ITK
names 'LPS' (x towards the patient's left, y posterior, z superior), and 1 mm voxels. T1c is
reoriented to that (DICOMOrient, exact) and resampled to 1 mm (`reference_grid`).
FLAIR, T1 and T2 are registered rigidly onto it (`register`): Mattes mutual information, which
does not care about intensity units, over three resolutions of images binned to 2 mm, started
from the brains' centres. A registration is refused when the scans' brains do not
overlap in scanner space, when the optimizer does not converge, or when the moved brain falls
outside T1c's.
"""
import numpy as np
import SimpleITK as sitk

from model.brats import DataError

TRAINING_ORIENTATION = 'LPS'   # ITK's name of the identity direction of the BRATS files
SPACING_MM = 1.0
HISTOGRAM_BINS = 32
REGISTRATION_SPACING_MM = 2.0   # both images are binned to about this voxel size before registering
SAMPLING_FRACTION = 0.02
SAMPLING_SEED = 0
SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_MM = (2.0, 1.0, 0.0)
ITERATIONS = 100          # per resolution; reaching it at the finest one means no convergence
MIN_STEP = 0.02           # the optimizer stops when its step (in mm at the brain's edge) falls below this
ROTATION_RADIUS_MM = 80.0   # optimizer scales: a rotation of one radian moves the brain's edge this far
MIN_MOVED_INSIDE = 0.9    # share of the moved scan's brain that must fall inside T1c's brain


def reference_grid(t1c):
    """T1c in the training orientation on a 1 mm grid: reoriented exactly (DICOMOrient), then, unless
    already at 1 mm, resampled linearly onto 1 mm voxels along the same axes and over the same field of
    view. An oblique T1c stays oblique: its slices are usually planned along the head's own axes."""
    oriented = sitk.DICOMOrient(t1c, TRAINING_ORIENTATION)
    spacing = np.array(oriented.GetSpacing())
    if np.allclose(spacing, SPACING_MM, atol=1e-4):
        return oriented
    size = [int(n) for n in np.ceil(np.array(oriented.GetSize()) * spacing / SPACING_MM)]
    direction = np.array(oriented.GetDirection()).reshape(3, 3)
    origin = np.array(oriented.GetOrigin()) + direction @ ((SPACING_MM - spacing) / 2.0)
    return sitk.Resample(oriented, size, sitk.Transform(), sitk.sitkLinear, origin.tolist(),
                         [SPACING_MM] * 3, oriented.GetDirection(), 0.0, sitk.sitkFloat32)


def foreground(image):
    """uint8 mask of an image's non-zero voxels (the brain of a skull-stripped scan)."""
    return sitk.Cast(sitk.NotEqual(image, 0.0), sitk.sitkUInt8)


def _centre(mask):
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(mask)
    return np.array(statistics.GetCentroid(1))


def _overlap(fixed_mask, moving_mask, transform):
    """(share of the fixed brain covered by the moved brain, share of the moved brain inside the fixed)."""
    moved = sitk.GetArrayFromImage(sitk.Resample(moving_mask, fixed_mask, transform, sitk.sitkNearestNeighbor, 0))
    fixed, moved = sitk.GetArrayFromImage(fixed_mask).astype(bool), moved.astype(bool)
    both = np.count_nonzero(fixed & moved)
    return both / max(np.count_nonzero(fixed), 1), both / max(np.count_nonzero(moved), 1)


def _binned(image):
    """`image` binned (averaged) to about REGISTRATION_SPACING_MM per voxel."""
    return sitk.BinShrink(image, [max(int(round(REGISTRATION_SPACING_MM / spacing)), 1)
                                  for spacing in image.GetSpacing()])


def _method():
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING_FRACTION, SAMPLING_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=MIN_STEP, numberOfIterations=ITERATIONS,
                                                    relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScales([ROTATION_RADIUS_MM ** 2] * 3 + [1.0] * 3)   # Euler3D: 3 angles, 3 translations
    method.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    method.SetSmoothingSigmasPerLevel(list(SMOOTHING_MM))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def register(fixed, moving, path):
    """The rigid transform (fixed -> moving physical points) that aligns `moving` onto `fixed`, and the
    share of the fixed (T1c) brain that the moved scan's brain then covers.

    Args:
      fixed: the reference T1c (reference_grid).
      moving: another sequence's image, in its own grid and pose.
      path: the moving scan's path, for messages.
    Raises:
      DataError: no overlap of the brains in scanner space, or a failed registration.
    """
    fixed_mask, moving_mask = foreground(fixed), foreground(moving)
    if _overlap(fixed_mask, moving_mask, sitk.Transform())[0] == 0.0:
        raise DataError('{}: its brain does not overlap the T1c brain in scanner coordinates; not the same '
                        'patient and session, or a broken header'.format(path))
    transform = sitk.Euler3DTransform()
    fixed_centre = _centre(fixed_mask)
    transform.SetCenter(fixed_centre.tolist())
    transform.SetTranslation((_centre(moving_mask) - fixed_centre).tolist())
    method = _method()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(_binned(fixed), _binned(moving))
    if method.GetOptimizerIteration() >= ITERATIONS:
        raise DataError('{}: registration onto T1c failed (the mutual information did not converge in {} '
                        'iterations; value {:.3f})'.format(path, ITERATIONS, method.GetMetricValue()))
    covered, inside = _overlap(fixed_mask, moving_mask, transform)
    if inside < MIN_MOVED_INSIDE:
        raise DataError('{}: registration onto T1c failed (only {:.0%} of its brain lands inside the T1c brain, '
                        'at least {:.0%} expected)'.format(path, inside, MIN_MOVED_INSIDE))
    return transform, covered


def resampled(moving, reference, transform, interpolator=sitk.sitkLinear, pixel=sitk.sitkFloat32):
    """`moving` on the grid of `reference` through `transform` (zero outside its field of view)."""
    return sitk.Resample(moving, reference, transform, interpolator, 0.0, pixel)
