"""The built-in phantom dataset: synthetic glioma patients in the exact BRATS2015 layout.

Nothing can be downloaded, so the demo and the tests run on this. Each patient is a
skull-stripped head of (z, y, x) = 155 x 240 x 240 voxels at 1 mm, as four int16, zlib-compressed
MetaImage volumes (Flair, T1, T1c, T2) plus a ground-truth volume with the BRATS2015 labels
(0 background, 1 necrosis, 2 oedema, 3 non-enhancing tumour, 4 enhancing tumour).

Anatomy: an ellipsoidal brain whose outline is smoothly perturbed, a cortical grey-matter
ribbon of varying thickness with CSF at the surface and in sulci, white matter inside, and two
curved lateral ventricles. One tumour per patient, in either hemisphere, built from smoothly
perturbed ellipsoidal shells: a necrotic core, an enhancing rim, non-enhancing tumour outside
it, and oedema spreading further through the brain tissue. Low-grade (LGG) tumours are mostly
non-enhancing with more oedema, little or no necrosis and at most a tiny enhancing focus.

Contrasts: T1 WM > GM > CSF with dark tumour; T1c as T1 plus a bright enhancing rim; T2 bright
CSF, necrosis and oedema, WM darkest; FLAIR dark CSF and bright oedema. Every class has its own
mean in every modality, scaled by a per-patient gain, blurred slightly (partial volume),
multiplied by a smooth bias field and corrupted with Rician noise. Zero outside the brain.

Layout written by generate_dataset (ids are unique across the dataset; per patient
Flair = base, T2 = base + 1, T1c = base + 2, T1 = base + 3, OT = base + 4):

    BRATS2015_Training/{HGG,LGG}/<patient>/VSD.Brain.XX.O.MR_<modality>.<id>/<same>.mha
    BRATS2015_Training/{HGG,LGG}/<patient>/VSD.Brain_3more.XX.O.OT.<id>/<same>.mha
    Testing/HGG_LGG/<patient>/VSD.Brain.XX.O.MR_<modality>.<id>/<same>.mha   (no OT)
    Testing_truth/<patient>/VSD.Brain_3more.XX.O.OT.<id>/<same>.mha           (kept apart)
    test_truth.txt   a patient list (readfile.py's format) of the test patients with their
                     truth, for Evaluate.py

Every patient draws from its own generator seeded with (seed, patient index), so a seed always
gives byte-identical volumes.

Usage:
    python -m model.phantom --output-dir data/phantom [--hgg 4] [--lgg 2] [--test 2]
        [--shape 155,240,240] [--seed 0]
"""
import dataclasses
import os

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from model import cli
from model.brats import LAYOUT_MHA, Geometry, Patient, write_volume
from model.errors import InputError
from model.lists import write_patient_list

OUTPUT_DIR = 'data/phantom'
NUM_HGG = 4
NUM_LGG = 2
NUM_TEST = 2
SHAPE = (155, 240, 240)
SEED = 0
TRUTH_LIST = 'test_truth.txt'

MIN_SIZE = 16              # smallest accepted extent of each axis, in voxels
FIRST_ID = 70001           # VSD id of the first patient's Flair image
IDS_PER_PATIENT = 5
MODALITIES = ('Flair', 'T2', 'T1c', 'T1')   # id offsets 0-3; the OT is offset 4
PATIENT_NAME = 'brats_phantom_pat{:04d}_1'
IMAGE_NAME = 'VSD.Brain.XX.O.MR_{}.{}'
TRUTH_NAME = 'VSD.Brain_3more.XX.O.OT.{}'

# Tissue codes of the normal anatomy.
BACKGROUND, CSF, GM, WM = 0, 1, 2, 3

# Mean intensity per class: background, CSF, GM, WM, then labels 1-4 (necrosis, oedema,
# non-enhancing, enhancing).
MEAN_INTENSITY = {
    'Flair': (0, 40, 110, 85, 135, 290, 225, 200),
    'T1': (0, 80, 170, 230, 70, 150, 125, 165),
    'T1c': (0, 90, 185, 245, 80, 165, 140, 430),
    'T2': (0, 600, 280, 200, 650, 470, 380, 330),
}
GAIN_RANGE = (0.9, 1.1)    # per-patient, per-modality intensity scale
NOISE_FRACTION = 0.04      # Rician noise sigma, as a fraction of the modality's WM mean
BLUR_SIGMA = 0.6           # partial-volume blur, voxels
BIAS_STRENGTH = 0.08       # log-amplitude of the smooth multiplicative bias field

BRAIN_AXES = (0.40, 0.36, 0.29)   # brain semi-axes as fractions of the (z, y, x) extents
OUTLINE_AMPLITUDE = 0.05   # outline perturbation, fraction of the brain radius per unit noise
NOISE_CLIP = 3.0           # random fields are clipped to +-3 standard deviations
# Smooth random fields are drawn on a grid of nodes FIELD_STEP voxels apart (OUTLINE_STEP for
# the brain outline), Gaussian-smoothed over FIELD_SIGMA nodes and linearly upsampled; a sigma
# of at least 1.5 nodes keeps the interpolation kinks small.
FIELD_STEP = 2
OUTLINE_STEP = 4
FIELD_SIGMA = dict(outline=4.0, folding=3.0, core=2.0, oedema=3.0, patches=1.5)
CSF_MM = 1.5               # CSF rim at the brain surface
GM_MM = 3.0                # cortical thickness at the crown of a gyrus
SULCUS_MM = 12.0           # depth of the sulci below the CSF rim
SULCUS_WIDTH = 0.12        # sulci are where |folding field| < this: thin folded sheets
# Paired structures mirrored across the midline, in brain-normalised (z, y, x) units.
VENTRICLES = dict(centre=(0.15, -0.05, 0.12), axes=(0.2, 0.45, 0.09), bend=0.8)
DEEP_GREY = dict(centre=(-0.05, 0.08, 0.17), axes=(0.16, 0.18, 0.11), bend=0.0)

# Tumour shape: core radius in units of the brain semi-axes, shells in units of the core
# radius. Enhancement is a rim (HGG) or at most a tiny focus (LGG).
TUMOUR = {
    'HGG': dict(radius=(0.18, 0.30), oedema=(1.3, 1.7), necrosis=0.55, necrosis_chance=1.0,
                enhancement='rim', enhancement_chance=1.0),
    'LGG': dict(radius=(0.20, 0.32), oedema=(1.4, 1.9), necrosis=0.25, necrosis_chance=0.3,
                enhancement='focus', enhancement_chance=0.3),
}
MIN_CORE_VOXELS = 3.0      # smallest core semi-axis, so that small volumes keep every shell
CORE_AMPLITUDE = 0.12      # core outline perturbation per unit noise
OEDEMA_AMPLITUDE = 0.15    # oedema outline perturbation per unit noise
RIM_RADIUS = 0.9           # the enhancing rim lies between the necrosis and this
RIM_GAP = -0.8             # the rim is open where the patch field is below this
FOCUS_THRESHOLD = 2.0      # an LGG enhancing focus is where the patch field exceeds this


@dataclasses.dataclass(frozen=True)
class Phantom:
    """One synthetic patient in memory: (z, y, x) arrays."""
    images: dict           # modality name -> int16 volume, zero outside the brain
    labels: np.ndarray     # uint8 BRATS2015 labels 0-4
    tissue: np.ndarray     # uint8 normal anatomy under the tumour: BACKGROUND, CSF, GM, WM


@dataclasses.dataclass(frozen=True)
class PatientRecord:
    """Where one generated patient was written."""
    name: str              # patient folder name
    split: str             # 'train' or 'test'
    grade: str             # 'HGG' or 'LGG'
    flair_id: int          # VSD id of the Flair image (predictions are named after it)
    directory: str         # the patient folder
    images: dict           # modality name -> .mha path
    truth: str             # ground-truth .mha (under Testing_truth for test patients)


def _grid_shape(shape, step):
    """Node counts of a grid with nodes every `step` voxels, covering `shape` from voxel 0."""
    return tuple(-(-(n - 1) // step) + 1 for n in shape)


def _random_field(rng, grid_shape, sigma):
    """Unit-variance smoothed Gaussian noise on a coarse grid, clipped to +-NOISE_CLIP."""
    field = ndimage.gaussian_filter(rng.standard_normal(grid_shape, dtype=np.float32), sigma)
    return np.clip((field - field.mean()) / field.std(), -NOISE_CLIP, NOISE_CLIP)


def _along(axis, part):
    """Index selecting `part` (a slice) along `axis` of a 3-D array."""
    return tuple(part if i == axis else slice(None) for i in range(3))


def _upsample(field, step, shape):
    """Linearly interpolate a grid with nodes every `step` voxels, cropped to `shape`."""
    for axis, n in enumerate(shape):
        nodes = field.shape[axis]
        out = np.empty(field.shape[:axis] + ((nodes - 1) * step + 1,) + field.shape[axis + 1:],
                       np.float32)
        low = field[_along(axis, slice(None, -1))]
        rise = field[_along(axis, slice(1, None))] - low
        out[_along(axis, slice(None, None, step))] = field
        for k in range(1, step):
            out[_along(axis, slice(k, None, step))] = low + rise * np.float32(k / step)
        field = out[_along(axis, slice(None, n))]
    return field


def _smooth_noise(rng, shape, field):
    """Unit-variance random field of `shape` with the smoothness of FIELD_SIGMA[field]."""
    grid = _grid_shape(shape, FIELD_STEP)
    return _upsample(_random_field(rng, grid, FIELD_SIGMA[field]), FIELD_STEP, shape)


def _axis_coordinates(box, centre, axes, step=1):
    """Per axis, (position - centre) / semi-axis, shaped to broadcast in 3-D.

    Positions are every `step`-th voxel from the start of `box` (all its voxels for step 1,
    else the nodes of the matching coarse grid, which may reach just past the box).
    """
    coordinates = []
    for axis, (nodes, part, c, a) in enumerate(
            zip(_grid_shape(_box_shape(box), step), box, centre, axes)):
        u = ((part.start + step * np.arange(nodes) - c) / a).astype(np.float32)
        coordinates.append(u.reshape([-1 if i == axis else 1 for i in range(3)]))
    return coordinates


def _box(centre, half_size, shape):
    """Slices covering centre +- half_size, clipped to `shape`."""
    low = np.maximum(np.floor(centre - half_size).astype(int), 0)
    high = np.minimum(np.ceil(centre + half_size).astype(int) + 1, shape)
    return tuple(slice(int(l), int(h)) for l, h in zip(low, high))


def _box_shape(box):
    return tuple(part.stop - part.start for part in box)


def _paired(u, structure):
    """Mask of a pair of bent ellipsoids mirrored across the midline (x = 0)."""
    (cz, cy, cx), (az, ay, ax) = structure['centre'], structure['axes']
    uz, uy, ux = u
    return (((uz - cz + structure['bend'] * uy ** 2) / az) ** 2
            + ((uy - cy) / ay) ** 2 + ((np.abs(ux) - cx) / ax) ** 2) < 1


def _tissue(depth, folding, u):
    """Tissue codes from the depth below the brain surface (mm) and the folding field.

    Sulci are the thin sheets where the folding field crosses zero; grey matter lines them,
    so the white matter reaches towards the surface only under the crowns of the gyri.
    """
    crown = np.minimum(np.abs(folding), 1)
    tissue = np.full(depth.shape, WM, np.uint8)
    tissue[(depth < CSF_MM + GM_MM + SULCUS_MM * (1 - crown)) | _paired(u, DEEP_GREY)] = GM
    sulci = (crown < SULCUS_WIDTH) & (depth < CSF_MM + SULCUS_MM)
    tissue[(depth < CSF_MM) | sulci | _paired(u, VENTRICLES)] = CSF
    tissue[depth <= 0] = BACKGROUND
    return tissue


def _anatomy(rng, shape):
    """Normal brain: returns (tissue volume, brain box, centre, semi-axes)."""
    shape = np.array(shape)
    centre = shape * (0.5 + rng.uniform(-0.02, 0.02, 3))
    axes = shape * np.array(BRAIN_AXES) * rng.uniform(0.96, 1.04, 3)
    box = _box(centre, (1 + OUTLINE_AMPLITUDE * NOISE_CLIP) * axes, shape)
    box_shape = _box_shape(box)
    u = _axis_coordinates(box, centre, axes, OUTLINE_STEP)
    radius = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    outline = _random_field(rng, radius.shape, FIELD_SIGMA['outline'])
    depth = (1 - radius + OUTLINE_AMPLITUDE * outline) * float(axes.mean())   # roughly mm
    depth = _upsample(depth, OUTLINE_STEP, box_shape)
    folding = _smooth_noise(rng, box_shape, 'folding')
    tissue = np.zeros(tuple(shape), np.uint8)
    tissue[box] = _tissue(depth, folding, _axis_coordinates(box, centre, axes))
    return tissue, box, centre, axes


def _tumour_site(rng, radius):
    """Tumour centre in brain-normalised coordinates: either hemisphere, inside the brain."""
    while True:
        site = np.array([rng.uniform(-0.35, 0.45), rng.uniform(-0.5, 0.5),
                         rng.choice([-1, 1]) * rng.uniform(0.2, 0.55)])
        if np.linalg.norm(site) < 0.85 - radius:
            return site


def _tumour(rng, grade, tissue, centre, axes):
    """BRATS2015 label volume holding one tumour of `grade` inside the brain of `tissue`."""
    params = TUMOUR[grade]
    radius = rng.uniform(*params['radius'])
    stretch = np.maximum(radius * rng.uniform(0.8, 1.2, 3) * axes, MIN_CORE_VOXELS)
    oedema_scale = rng.uniform(*params['oedema'])
    site = centre + _tumour_site(rng, radius) * axes
    box = _box(site, oedema_scale * (1 + OEDEMA_AMPLITUDE * NOISE_CLIP) * stretch, tissue.shape)
    box_shape = _box_shape(box)
    u = _axis_coordinates(box, site, stretch, FIELD_STEP)
    distance = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    core = distance + CORE_AMPLITUDE * _random_field(rng, distance.shape, FIELD_SIGMA['core'])
    oedema = distance / oedema_scale + OEDEMA_AMPLITUDE * _random_field(
        rng, distance.shape, FIELD_SIGMA['oedema'])
    fields = dict(core=_upsample(core, FIELD_STEP, box_shape),
                  oedema=_upsample(oedema, FIELD_STEP, box_shape),
                  patches=_smooth_noise(rng, box_shape, 'patches'))
    necrotic = rng.random() < params['necrosis_chance']
    enhancing = rng.random() < params['enhancement_chance']
    labels = np.zeros(tissue.shape, np.uint8)
    labels[box] = _tumour_labels(params, fields, necrotic, enhancing, tissue[box])
    return labels


def _tumour_labels(params, fields, necrotic, enhancing, tissue):
    """Assign labels 1-4 from the tumour's core, oedema and patch fields, within the brain."""
    core = fields['core']
    labels = np.zeros(core.shape, np.uint8)
    labels[(fields['oedema'] < 1) & (tissue > CSF)] = 2
    labels[core < 1] = 3
    if enhancing and params['enhancement'] == 'rim':
        labels[(core < RIM_RADIUS) & (fields['patches'] > RIM_GAP)] = 4
    elif enhancing:
        labels[(core < 1) & (fields['patches'] > FOCUS_THRESHOLD)] = 4
    if necrotic:
        labels[core < params['necrosis']] = 1
    labels[tissue == BACKGROUND] = 0
    return labels


def _bias_field(rng, voxels, centre, axes):
    """Smooth multiplicative bias at `voxels` (index arrays): one smooth profile per axis."""
    field = np.ones(len(voxels[0]), np.float32)
    for index, c, a in zip(voxels, centre, axes):
        u = ((np.arange(index.max() + 1) - c) / a).astype(np.float32)
        slope, curve = (float(value) for value in rng.standard_normal(2))
        field *= np.exp(BIAS_STRENGTH * (slope * u + curve * (u ** 2 - 0.33)))[index]
    return field


def _modality(rng, modality, classes, inside, bias):
    """Intensities at the flat indices `inside` of the class map: blur, bias, Rician noise."""
    means = np.array(MEAN_INTENSITY[modality], np.float32) * rng.uniform(*GAIN_RANGE)
    clean = ndimage.gaussian_filter(means[classes], BLUR_SIGMA, truncate=2.5)
    signal = clean.ravel()[inside] * bias
    sigma = NOISE_FRACTION * means[WM]
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.clip(np.rint(np.hypot(real, imaginary)), 1, np.iinfo(np.int16).max)


def synthesize_patient(rng, grade, shape=SHAPE):
    """Make one synthetic patient of `grade` ('HGG' or 'LGG') with a numpy Generator.

    Returns:
      A Phantom: the four modality volumes, the label volume and the normal tissue map.
    """
    tissue, box, centre, axes = _anatomy(rng, shape)
    labels = _tumour(rng, grade, tissue, centre, axes)
    classes = np.where(labels[box] > 0, labels[box] + WM, tissue[box])
    in_box = np.nonzero(classes)
    voxels = tuple(index + part.start for index, part in zip(in_box, box))
    inside, flat = np.ravel_multi_index(in_box, classes.shape), np.ravel_multi_index(voxels, shape)
    images = {}
    for modality in MODALITIES:
        bias = _bias_field(rng, voxels, centre, axes)
        images[modality] = np.zeros(shape, np.int16)
        np.put(images[modality], flat, _modality(rng, modality, classes, inside, bias))
    return Phantom(images=images, labels=labels, tissue=tissue)


def brats2015_geometry(shape):
    """The BRATS2015 grid for a (z, y, x) shape: 1 mm voxels, origin (0, -(y-1), 0), identity."""
    return Geometry(size=tuple(reversed(shape)), spacing=(1.0, 1.0, 1.0),
                    origin=(0.0, -(shape[1] - 1.0), 0.0),
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _vsd_path(parent, name):
    return os.path.join(parent, name, name + '.mha')


def patient_plan(num_hgg, num_lgg, num_test):
    """(split, grade) of every patient in order: HGG, LGG, then test alternating HGG/LGG."""
    return ([('train', 'HGG')] * num_hgg + [('train', 'LGG')] * num_lgg
            + [('test', ('HGG', 'LGG')[i % 2]) for i in range(num_test)])


def patient_record(output_dir, index, split, grade):
    """The names, ids and paths of patient `index` (0-based across the whole dataset)."""
    name = PATIENT_NAME.format(index + 1)
    flair_id = FIRST_ID + IDS_PER_PATIENT * index
    if split == 'train':
        directory = os.path.join(output_dir, 'BRATS2015_Training', grade, name)
        truth_parent = directory
    else:
        directory = os.path.join(output_dir, 'Testing', 'HGG_LGG', name)
        truth_parent = os.path.join(output_dir, 'Testing_truth', name)
    images = {m: _vsd_path(directory, IMAGE_NAME.format(m, flair_id + k))
              for k, m in enumerate(MODALITIES)}
    truth = _vsd_path(truth_parent, TRUTH_NAME.format(flair_id + len(MODALITIES)))
    return PatientRecord(name, split, grade, flair_id, directory, images, truth)


def _check_request(num_hgg, num_lgg, num_test, shape):
    if len(shape) != 3 or min(shape) < MIN_SIZE:
        raise InputError('shape must be three sizes of at least {}, got {}'.format(
            MIN_SIZE, ','.join(map(str, shape))))
    if min(num_hgg, num_lgg, num_test) < 0 or num_hgg + num_lgg + num_test == 0:
        raise InputError('patient counts must be non-negative and not all zero, got {}'.format(
            (num_hgg, num_lgg, num_test)))


def generate_dataset(output_dir, num_hgg=NUM_HGG, num_lgg=NUM_LGG, num_test=NUM_TEST,
                     shape=SHAPE, seed=SEED, progress=True):
    """Write a synthetic BRATS2015-format dataset under `output_dir`.

    Args:
      output_dir: root; gets BRATS2015_Training/, Testing/ and Testing_truth/.
      num_hgg, num_lgg: labelled training patients of each grade.
      num_test: unlabelled test patients (alternately HGG and LGG), truth kept apart.
      shape: (z, y, x) size of every volume.
      seed: patient i draws from numpy's default_rng((seed, i)).
      progress: show a tqdm bar over patients.
    Returns:
      One PatientRecord per patient, in the order written.
    Raises:
      InputError: a negative or all-zero patient count, or a shape that is not three sizes of
        at least MIN_SIZE.
    """
    _check_request(num_hgg, num_lgg, num_test, shape)
    plan = patient_plan(num_hgg, num_lgg, num_test)
    geometry = brats2015_geometry(tuple(shape))
    records = []
    for index, (split, grade) in enumerate(tqdm(plan, desc='phantom', unit='patient',
                                                disable=not progress)):
        record = patient_record(output_dir, index, split, grade)
        phantom = synthesize_patient(np.random.default_rng((seed, index)), grade, tuple(shape))
        for modality, path in record.images.items():
            write_volume(phantom.images[modality], geometry, path)
        write_volume(phantom.labels, geometry, record.truth)
        records.append(record)
    write_truth_list(records, os.path.join(output_dir, TRUTH_LIST))
    return records


def write_truth_list(records, path):
    """Write the test patients, with their kept-apart truth, as a patient list."""
    patients = [Patient(name=record.name, layout=LAYOUT_MHA, flair=record.images['Flair'],
                        t1=record.images['T1'], t1c=record.images['T1c'], t2=record.images['T2'],
                        label=record.truth, grade=record.grade)
                for record in records if record.split == 'test']
    if patients:
        write_patient_list(patients, path)


def _arguments(argv):
    parser = cli.parser('Write the synthetic BRATS2015-format phantom dataset.')
    parser.add_argument('--output-dir', default=OUTPUT_DIR, help='dataset root')
    parser.add_argument('--hgg', type=int, default=NUM_HGG, help='HGG training patients')
    parser.add_argument('--lgg', type=int, default=NUM_LGG, help='LGG training patients')
    parser.add_argument('--test', type=int, default=NUM_TEST, help='unlabelled test patients')
    parser.add_argument('--shape', type=cli.int_list, default=SHAPE,
                        help='volume size z,y,x (comma-separated)')
    parser.add_argument('--seed', type=int, default=SEED, help='random seed')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


@cli.reports_bad_input
def main(argv=None):
    """Generate the phantom dataset from the command line; returns the exit code."""
    args = _arguments(argv)
    records = generate_dataset(args.output_dir, args.hgg, args.lgg, args.test,
                               tuple(args.shape), args.seed, progress=not args.quiet)
    print('wrote {} phantom patients ({} HGG + {} LGG training, {} test) of {} voxels to {}'
          .format(len(records), args.hgg, args.lgg, args.test,
                  'x'.join(map(str, args.shape)), args.output_dir))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
