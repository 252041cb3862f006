"""create_pascal_tf_record.py and model/records.py: schema round trip, sidecar, shards."""
import fnmatch
import json
import os
import re
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

import create_pascal_tf_record  # noqa: E402  (after disable_v2_behavior)
from model import conversion, normalization, phantom, records  # noqa: E402
from model.brats import find_patients  # noqa: E402
from model.errors import InputError  # noqa: E402
from model.lists import write_patient_list  # noqa: E402

TINY = (24, 64, 64)
SHARD = re.compile(r'^(?P<list>.+)-(?P<k>\d+)-of-(?P<n>\d+)\.tfrecord$')
REAL_CASE = 'Brats18_2013_2_1'


def convert(list_path, output_dir, *extra):
    return create_pascal_tf_record.main(
        ['--list', str(list_path), '--output-dir', str(output_dir)] + [str(a) for a in extra])


def write_list(patients, path):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    write_patient_list(patients, str(path))
    return str(path)


def read_volume(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


def shard_files(output_dir):
    return sorted(f for f in os.listdir(str(output_dir)) if f.endswith('.tfrecord'))


def examples_of(paths):
    """Every example of the shards, parsed in Python: {(patient, slice): features}."""
    options = tf.io.TFRecordOptions(compression_type='GZIP')
    found = {}
    for path in paths:
        for serialized in tf.io.tf_record_iterator(path, options):
            feature = tf.train.Example.FromString(serialized).features.feature
            key = (feature['slice/patient'].bytes_list.value[0].decode(),
                   feature['slice/index'].int64_list.value[0])
            assert key not in found, 'duplicate example {}'.format(key)
            found[key] = {
                'image': feature['image/raw'].bytes_list.value[0],
                'label': feature['label/raw'].bytes_list.value[0],
                'mean': tuple(feature['image/mean'].float_list.value),
                'std': tuple(feature['image/std'].float_list.value),
                'tumour': feature['slice/tumour'].int64_list.value[0],
                'version': feature['schema/version'].int64_list.value[0],
            }
    return found


def parsed_examples(paths):
    """Yield each example as parsed by records.parse_example in a TF1 graph and Session."""
    graph = tf.Graph()
    with graph.as_default():
        dataset = tf.data.TFRecordDataset(paths, compression_type='GZIP').map(records.parse_example)
        next_example = tf.data.make_one_shot_iterator(dataset).get_next()
        with tf.Session(graph=graph) as session:
            while True:
                try:
                    yield session.run(next_example)
                except tf.errors.OutOfRangeError:
                    return


def reference_normalisation(volume):
    """z-score per modality over voxels where any modality is non-zero, clipped, zero outside."""
    volume = volume.astype(np.float64)
    brain = np.any(volume != 0, axis=-1)
    mean = volume[brain].mean(axis=0)
    std = volume[brain].std(axis=0)
    return np.where(brain[..., None], np.clip((volume - mean) / std, -5, 5), 0.0)


# ---------------------------------------------------------------- real BraTS 2018 case


def test_real_case_round_trips_bit_exact(brats2018_root, tmp_path):
    (patient,) = [p for p in find_patients([brats2018_root]) if p.name == REAL_CASE]
    list_path = write_list([patient], tmp_path / 'lists' / 'train.txt')
    output_dir = tmp_path / 'records'
    assert convert(list_path, output_dir, '--workers', 1, '--keep-empty-slices') == 0

    paths, sidecar = records.resolve_records(str(output_dir / 'train-*'))
    volume = np.stack([read_volume(p) for p in patient.modality_paths], axis=-1)
    labels = read_volume(patient.label)
    assert volume.dtype == np.int16 and volume.shape == (155, 240, 240, 4)
    expected = reference_normalisation(volume)

    seen = []
    for example in parsed_examples(paths):
        z = int(example['slice'])
        seen.append(z)
        assert example['patient'].decode() == REAL_CASE
        np.testing.assert_array_equal(example['raw'], volume[z].astype(np.float32))
        np.testing.assert_array_equal(example['label'], labels[z])
        assert example['tumour'] == int(labels[z].any())
        np.testing.assert_allclose(example['image'], expected[z], rtol=0, atol=1e-4)
    assert sorted(seen) == list(range(155))
    assert sidecar['num_examples'] == 155
    assert sidecar['num_tumour_examples'] == int(np.count_nonzero(labels.any(axis=(1, 2))))
    assert sidecar['normalization'] == normalization.ZSCORE


def test_histogram_records_hold_the_standardised_case_and_its_scale(brats2018_root, tmp_path):
    (patient,) = [p for p in find_patients([brats2018_root]) if p.name == REAL_CASE]
    list_path = write_list([patient], tmp_path / 'lists' / 'train.txt')
    assert convert(list_path, tmp_path / 'records', '--workers', 1, '--normalization', 'histogram') == 0

    paths, sidecar = records.resolve_records(str(tmp_path / 'records' / 'train-*'))
    volume = np.stack([read_volume(p) for p in patient.modality_paths], axis=-1)
    assert sidecar['normalization'] == normalization.learn_histogram([normalization.landmarks(volume)])
    standardized = normalization.standardize(volume, sidecar['normalization'])
    expected = reference_normalisation(standardized)
    for example in parsed_examples(paths):
        z = int(example['slice'])
        np.testing.assert_array_equal(example['raw'], standardized[z].astype(np.float32))
        np.testing.assert_allclose(example['image'], expected[z], rtol=0, atol=1e-4)


# ---------------------------------------------------------------- phantom data


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """3 labelled phantom patients (2 HGG, 1 LGG) and 1 test patient, with their lists."""
    root = str(tmp_path_factory.mktemp('phantom'))
    generated = phantom.generate_dataset(root, num_hgg=2, num_lgg=1, num_test=1, shape=TINY,
                                         progress=False)
    patients = find_patients([os.path.join(root, 'BRATS2015_Training'),
                              os.path.join(root, 'Testing')])
    lists = os.path.join(root, 'lists')
    train = write_list([p for p in patients if p.label], os.path.join(lists, 'train.txt'))
    test = write_list([p for p in patients if not p.label], os.path.join(lists, 'test.txt'))
    return {'patients': [p for p in patients if p.label], 'train': train, 'test': test,
            'generated': generated}


def brain_slices(patient):
    volume = np.stack([read_volume(p) for p in patient.modality_paths], axis=-1)
    return np.flatnonzero(np.any(volume != 0, axis=(1, 2, 3)))


def test_default_conversion_drops_brainless_slices_and_writes_a_sidecar(dataset, tmp_path):
    output_dir = tmp_path / 'records'
    assert convert(dataset['train'], output_dir, '--workers', 1) == 0

    files = sorted(os.listdir(str(output_dir)))
    assert 'train.json' in files
    assert not fnmatch.fnmatch('train.json', 'train-*')
    shards = [f for f in files if f != 'train.json']
    assert len(shards) == len(dataset['patients'])     # default: one shard per patient
    for name in shards:
        match = SHARD.match(name)
        assert match and match.group('list') == 'train'
        assert int(match.group('n')) == len(shards) and int(match.group('k')) < len(shards)
    assert sorted(int(SHARD.match(f).group('k')) for f in shards) == list(range(len(shards)))

    with open(str(output_dir / 'train.json')) as stream:
        sidecar = json.load(stream)
    examples = examples_of([str(output_dir / f) for f in shards])
    expected = {(p.name, int(z)) for p in dataset['patients'] for z in brain_slices(p)}
    assert set(examples) == expected
    assert all(len(brain_slices(p)) < TINY[0] for p in dataset['patients'])  # some were dropped
    assert sidecar['schema_version'] == records.SCHEMA_VERSION
    assert sidecar['source_list'] == dataset['train']
    assert sidecar['num_examples'] == len(examples)
    assert sidecar['num_tumour_examples'] == sum(e['tumour'] for e in examples.values())
    assert sidecar['num_tumour_examples'] == sum(
        bool(np.frombuffer(e['label'], np.uint8).any()) for e in examples.values())
    assert 0 < sidecar['num_tumour_examples'] < sidecar['num_examples']
    assert sorted(shard['file'] for shard in sidecar['shards']) == shards
    assert sum(shard['examples'] for shard in sidecar['shards']) == len(examples)
    assert sorted(n for shard in sidecar['shards'] for n in shard['patients']) == sorted(
        p.name for p in dataset['patients'])
    assert {e['version'] for e in examples.values()} == {records.SCHEMA_VERSION}

    paths, resolved = records.resolve_records(str(output_dir / 'train-*'))
    assert paths == [str(output_dir / f) for f in shards]
    assert resolved == sidecar


def test_two_workers_write_the_same_examples_as_one(dataset, tmp_path):
    assert convert(dataset['train'], tmp_path / 'one', '--workers', 1) == 0
    assert convert(dataset['train'], tmp_path / 'two', '--workers', 2) == 0
    assert shard_files(tmp_path / 'one') == shard_files(tmp_path / 'two')
    one = examples_of(records.resolve_records(str(tmp_path / 'one' / 'train-*'))[0])
    two = examples_of(records.resolve_records(str(tmp_path / 'two' / 'train-*'))[0])
    assert one == two


def test_shard_count_and_rerun_leave_exactly_the_new_shards(dataset, tmp_path):
    output_dir = tmp_path / 'records'
    assert convert(dataset['train'], output_dir, '--workers', 1, '--num-shards', 2) == 0
    assert shard_files(output_dir) == ['train-00000-of-00002.tfrecord',
                                       'train-00001-of-00002.tfrecord']
    first = examples_of(records.resolve_records(str(output_dir / 'train-*'))[0])

    for count in (3, 1):
        assert convert(dataset['train'], output_dir, '--workers', 1, '--num-shards', count) == 0
        assert sorted(os.listdir(str(output_dir))) == sorted(
            ['train.json'] + [records.shard_name('train', k, count) for k in range(count)])
        paths, sidecar = records.resolve_records(str(output_dir / 'train-*'))
        assert len(sidecar['shards']) == count
        assert examples_of(paths) == first


def test_resolve_records_rejects_inconsistent_shard_sets(dataset, tmp_path):
    output_dir = tmp_path / 'records'
    assert convert(dataset['train'], output_dir, '--workers', 1, '--num-shards', 2) == 0
    pattern = str(output_dir / 'train-*')
    paths, _ = records.resolve_records(pattern)
    sidecar_file = str(output_dir / 'train.json')

    with pytest.raises(InputError, match='no TFRecord file matches'):
        records.resolve_records(str(output_dir / 'val-*'))

    stray = str(output_dir / records.shard_name('train', 2, 3))
    shutil.copy(paths[0], stray)
    with pytest.raises(InputError, match='differ'):
        records.resolve_records(pattern)
    os.remove(stray)
    records.resolve_records(pattern)

    with open(sidecar_file) as stream:
        sidecar = json.load(stream)
    written_before_normalisations = {key: value for key, value in sidecar.items() if key != 'normalization'}
    with open(sidecar_file, 'w') as stream:
        json.dump(written_before_normalisations, stream)
    assert records.resolve_records(pattern)[1]['normalization'] == normalization.ZSCORE
    with open(sidecar_file, 'w') as stream:
        json.dump(dict(sidecar, normalization={'method': 'histogram'}), stream)
    with pytest.raises(InputError, match='invalid intensity normalisation'):
        records.resolve_records(pattern)
    with open(sidecar_file, 'w') as stream:
        json.dump(dict(sidecar, schema_version=records.SCHEMA_VERSION + 1), stream)
    with pytest.raises(InputError, match='schema version'):
        records.resolve_records(pattern)

    os.remove(sidecar_file)
    with pytest.raises(InputError, match='sidecar missing'):
        records.resolve_records(pattern)


def test_an_unknown_normalisation_is_refused_before_anything_is_written(dataset, tmp_path):
    with pytest.raises(InputError, match='minmax: no such intensity normalisation'):
        conversion.convert(dataset['patients'], dataset['train'], str(tmp_path / 'records'), 1,
                           normalization='minmax')
    assert not (tmp_path / 'records').exists()


def test_unlabelled_list_is_refused(dataset, tmp_path, capsys):
    output_dir = tmp_path / 'records'
    capsys.readouterr()
    assert convert(dataset['test'], output_dir, '--workers', 1) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert dataset['test'] in lines[0] and 'label' in lines[0]
    assert not output_dir.exists() or os.listdir(str(output_dir)) == []
