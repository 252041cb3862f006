"""All the scripts in-process at tiny size: phantom -> readfile -> create_pascal_tf_record ->
Train -> Inference -> Evaluate, and Export with the export's use outside the project; their
refusals, and prediction geometry on real BRATS data."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

import create_pascal_tf_record  # noqa: E402  (after disable_v2_behavior)
import Evaluate  # noqa: E402
import Export  # noqa: E402
import Inference  # noqa: E402
import readfile  # noqa: E402
import Train  # noqa: E402
from model import checkpoints, phantom, predict  # noqa: E402
from model.brats import find_patients, load_patient  # noqa: E402
from model.lists import read_patient_list, write_patient_list  # noqa: E402
from model.normalization import intensity_stats  # noqa: E402
from script_runs import error_line, run_main  # noqa: E402

pytestmark = pytest.mark.slow   # runs the scripts end to end (make test-fast leaves it out)

SHAPE = (24, 96, 96)
RUN_NAME = 'e2e'
TRAIN_FLAGS = ['--num-steps', '2', '--batch-size', '2', '--crop-size', '64', '--width', '0.125',
               '--refine-filters', '8', '--shuffle-buffer', '16', '--save-every-steps', '1',
               '--validate-every-steps', '100']
METRIC_COLUMNS = ['{}_{}'.format(region, metric) for region in ('WT', 'TC', 'ET')
                  for metric in ('dice', 'ppv', 'sensitivity', 'hd95')]
INTEGER_PIXELS = {sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16,
                  sitk.sitkUInt32, sitk.sitkInt32, sitk.sitkUInt64, sitk.sitkInt64}
REAL_2018_CASE = 'Brats18_TCIA10_628_1'


run = run_main


def assert_same_grid(prediction_path, flair_path):
    """The prediction keeps the input's size, spacing, origin and direction exactly."""
    predicted, source = sitk.ReadImage(prediction_path), sitk.ReadImage(flair_path)
    assert predicted.GetSize() == source.GetSize()
    assert predicted.GetSpacing() == source.GetSpacing()
    assert predicted.GetOrigin() == source.GetOrigin()
    assert predicted.GetDirection() == source.GetDirection()
    assert predicted.GetPixelID() in INTEGER_PIXELS, predicted.GetPixelIDTypeAsString()
    labels = sitk.GetArrayFromImage(predicted)
    assert labels.min() >= 0 and labels.max() <= 4
    return labels


@pytest.fixture(scope='module')
def pipeline(tmp_path_factory):
    """Run the five scripts once; returns paths and every script's (code, stdout, stderr)."""
    root = str(tmp_path_factory.mktemp('e2e'))
    paths = {name: os.path.join(root, name) for name in
             ('phantom', 'lists', 'records', 'ckpt', 'pred', 'example.png')}
    phantom.generate_dataset(paths['phantom'], num_hgg=3, num_lgg=1, num_test=2, shape=SHAPE,
                             progress=False)
    paths.update(train=os.path.join(paths['lists'], 'train.txt'),
                 val=os.path.join(paths['lists'], 'val.txt'),
                 test=os.path.join(paths['lists'], 'test.txt'),
                 truth=os.path.join(paths['phantom'], phantom.TRUTH_LIST))
    results = {}
    results['readfile'] = run(readfile, [
        '--data-dir', os.path.join(paths['phantom'], 'BRATS2015_Training'),
        '--data-dir', os.path.join(paths['phantom'], 'Testing'),
        '--list-dir', paths['lists'], '--val-fraction', '0.25'])
    results['records'] = run(create_pascal_tf_record, [
        '--list', paths['train'], '--output-dir', paths['records'], '--workers', '1'])
    results['train'] = run(Train, [
        '--train-records', os.path.join(paths['records'], 'train-*'), '--val-list', paths['val'],
        '--ckpt-dir', paths['ckpt']] + TRAIN_FLAGS)
    results['inference'] = run(Inference, [
        '--list', paths['test'], '--ckpt-dir', paths['ckpt'], '--output-dir', paths['pred'],
        '--run-name', RUN_NAME, '--save-png'])
    results['evaluate'] = run(Evaluate, [
        '--list', paths['truth'], '--pred-dir', paths['pred'], '--example-png', paths['example.png']])
    return paths, results


@pytest.fixture
def test_patients(pipeline):
    paths, _ = pipeline
    return read_patient_list(paths['test'])


def test_every_script_succeeds(pipeline):
    paths, results = pipeline
    for name, (code, out, err) in results.items():
        assert code == 0, (name, err)
    assert len(read_patient_list(paths['train'])) == 3
    assert len(read_patient_list(paths['val'])) == 1
    assert os.path.exists(os.path.join(paths['ckpt'], checkpoints.BEST_DIR, 'best.json'))
    assert 'reached step 2' in results['train'][1]
    # Inference.py restores the last checkpoint, not the validation-selected one in best/.
    assert 'with {} ('.format(os.path.join(paths['ckpt'], 'model.ckpt-2')) in results['inference'][1]


def test_one_prediction_per_test_patient_on_the_input_grid(pipeline, test_patients):
    paths, _ = pipeline
    assert len(test_patients) == 2
    expected = sorted('VSD.{}.{}.mha'.format(RUN_NAME, patient.flair_id) for patient in test_patients)
    assert sorted(name for name in os.listdir(paths['pred']) if name.endswith('.mha')) == expected
    for patient in test_patients:
        labels = assert_same_grid(os.path.join(paths['pred'], patient.prediction_name(RUN_NAME)),
                                  patient.flair)
        flair = sitk.GetArrayFromImage(sitk.ReadImage(patient.flair))
        assert labels.shape == flair.shape == SHAPE


def test_metrics_csv_has_the_contract_columns_and_a_mean_row(pipeline, test_patients):
    paths, results = pipeline
    with open(os.path.join(paths['pred'], 'metrics.csv'), newline='') as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ['patient'] + METRIC_COLUMNS
    assert ','.join(rows[0]) == ('patient,WT_dice,WT_ppv,WT_sensitivity,WT_hd95,TC_dice,TC_ppv,'
                                 'TC_sensitivity,TC_hd95,ET_dice,ET_ppv,ET_sensitivity,ET_hd95')
    assert [row[0] for row in rows[1:]] == sorted(p.name for p in test_patients) + ['mean']
    values = np.array([[float(cell) if cell else np.nan for cell in row[1:]] for row in rows[1:]])
    with np.errstate(all='ignore'):
        means = np.nanmean(values[:-1], axis=0)
    np.testing.assert_allclose(values[-1], means, atol=1e-5, equal_nan=True)
    dice = values[:, [METRIC_COLUMNS.index(name) for name in ('WT_dice', 'TC_dice', 'ET_dice')]]
    assert np.all((dice >= 0) & (dice <= 1))
    assert 'mean' in results['evaluate'][1]


def test_pngs_are_written(pipeline, test_patients):
    paths, _ = pipeline
    for path in [paths['example.png']] + [os.path.join(paths['pred'], p.name + '.png')
                                          for p in test_patients]:
        with open(path, 'rb') as stream:
            assert stream.read(8) == b'\x89PNG\r\n\x1a\n', path


# ---------------------------------------------------------------- Inference behaviour


def identity(path):
    status = os.stat(path)
    return status.st_ino, status.st_mtime_ns


def test_inference_skips_existing_predictions_unless_overwrite(pipeline, tmp_path):
    paths, _ = pipeline
    output = str(tmp_path / 'pred')
    shutil.copytree(paths['pred'], output)
    predictions = sorted(os.path.join(output, name) for name in os.listdir(output)
                         if name.endswith('.mha'))
    before = [identity(path) for path in predictions]
    argv = ['--list', paths['test'], '--ckpt-dir', paths['ckpt'], '--output-dir', output,
            '--run-name', RUN_NAME]
    code, out, err = run(Inference, argv)
    assert code == 0, err
    assert 'wrote 0 predictions' in out and '2 already there' in out
    assert [identity(path) for path in predictions] == before

    code, out, err = run(Inference, argv + ['--overwrite'])
    assert code == 0, err
    assert 'wrote 2 predictions' in out
    after = [identity(path) for path in predictions]
    assert all(new != old for new, old in zip(after, before))
    for path in predictions:
        original = os.path.join(paths['pred'], os.path.basename(path))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(path)),
                                      sitk.GetArrayFromImage(sitk.ReadImage(original)))


def test_inference_refuses_an_output_folder_holding_input_volumes(pipeline, test_patients):
    paths, _ = pipeline
    folder = os.path.dirname(test_patients[1].t1c)
    before = sorted(os.listdir(folder))
    code, out, err = run(Inference, ['--list', paths['test'], '--ckpt-dir', paths['ckpt'],
                                     '--output-dir', folder])
    assert code == 2
    line = error_line(err)
    assert folder in line and 'input volume' in line
    assert sorted(os.listdir(folder)) == before


@pytest.mark.parametrize('content', ['nothing', 'config only', 'missing folder'])
def test_inference_needs_config_and_a_checkpoint(pipeline, tmp_path, content):
    paths, _ = pipeline
    ckpt = tmp_path / 'ckpt'
    if content != 'missing folder':
        ckpt.mkdir()
    if content == 'config only':
        shutil.copy(checkpoints.config_path(paths['ckpt']), str(ckpt))
    code, out, err = run(Inference, ['--list', paths['test'], '--ckpt-dir', ckpt,
                                     '--output-dir', tmp_path / 'pred'])
    assert code == 2
    line = error_line(err)
    assert str(ckpt) in line
    expected = {'nothing': 'config.json', 'config only': 'no checkpoint',
                'missing folder': 'does not exist'}[content]
    assert expected in line, line
    predictions = os.listdir(str(tmp_path / 'pred')) if (tmp_path / 'pred').exists() else []
    assert predictions == []


def test_inference_refuses_a_checkpoint_of_another_network(pipeline, tmp_path):
    paths, _ = pipeline
    ckpt = tmp_path / 'ckpt'
    shutil.copytree(paths['ckpt'], str(ckpt))
    with open(checkpoints.config_path(str(ckpt))) as stream:
        config = json.load(stream)
    config['network']['refine_filters'] *= 2          # the weights no longer fit this graph
    with open(checkpoints.config_path(str(ckpt)), 'w') as stream:
        json.dump(config, stream)
    code, out, err = run(Inference, ['--list', paths['test'], '--ckpt-dir', ckpt,
                                     '--output-dir', tmp_path / 'pred'])
    assert code == 2
    assert 'different network configuration' in error_line(err)
    assert not (tmp_path / 'pred').exists() or os.listdir(str(tmp_path / 'pred')) == []


REGIONS_THRESHOLD = Inference.DECODING.tumour_threshold if Inference.DECODING.method == 'regions' else 0.5


@pytest.mark.parametrize('flags, method, threshold', [
    ([], Inference.DECODING.method, Inference.DECODING.tumour_threshold),
    (['--decoding', 'regions'], 'regions', REGIONS_THRESHOLD),
    (['--decoding', 'regions', '--tumour-threshold', '0.3'], 'regions', 0.3),
    (['--decoding', 'argmax'], 'argmax', 0.5),
])
def test_inference_decodes_at_its_tumour_threshold_unless_told_otherwise(flags, method, threshold):
    decoding = Inference.decoding_of(Inference.parse_args(flags))
    assert (decoding.method, decoding.tumour_threshold) == (method, threshold)


@pytest.mark.parametrize('flags, tta', [([], Inference.DECODING.tta), (['--tta', 'none'], 'none'),
                                        (['--tta', 'flip'], 'flip'), (['--tta', 'zooms'], 'zooms')])
def test_inference_reads_its_one_test_time_switch(flags, tta):
    assert Inference.decoding_of(Inference.parse_args(flags)).tta == tta


@pytest.mark.parametrize('flags', [['--tta', 'accurate'], ['--flip'], ['--scales', '1'], ['--rotations', '0']])
def test_inference_refuses_unknown_test_time_options(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        Inference.main(['--ckpt-dir', 'nowhere'] + flags)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'invalid choice' in error or 'unrecognized arguments' in error


@pytest.mark.parametrize('setting, cpu, expected', [('on', False, True), ('off', True, False), ('auto', True, True),
                                                    ('auto', False, False)])
def test_inference_uses_bfloat16_where_told_or_where_the_cpu_has_it(monkeypatch, setting, cpu, expected):
    monkeypatch.setattr(Inference, 'cpu_has_bfloat16', lambda: cpu)
    assert Inference.uses_bfloat16(setting) is expected


def test_inference_refuses_a_tumour_threshold_without_regions_decoding(pipeline, tmp_path):
    paths, _ = pipeline
    code, out, err = run(Inference, ['--list', paths['test'], '--ckpt-dir', paths['ckpt'],
                                     '--output-dir', tmp_path / 'pred', '--decoding', 'argmax',
                                     '--tumour-threshold', '0.3'])
    assert code == 2
    assert 'needs regions decoding' in error_line(err)
    assert not (tmp_path / 'pred').exists()


@pytest.mark.parametrize('flags, problem', [(['--min-component-fraction', '1.5'], 'between 0 and 1'),
                                            (['--min-component-size', '-3'], 'at least 0 voxels')])
def test_inference_refuses_impossible_options(pipeline, tmp_path, flags, problem):
    paths, _ = pipeline
    code, out, err = run(Inference, ['--list', paths['test'], '--ckpt-dir', paths['ckpt'],
                                     '--output-dir', tmp_path / 'pred'] + flags)
    assert code == 2
    assert problem in error_line(err)
    assert not (tmp_path / 'pred').exists()


# ---------------------------------------------------------------- Evaluate refusals


def test_evaluate_names_the_patient_without_a_prediction(pipeline, test_patients, tmp_path):
    paths, _ = pipeline
    output = tmp_path / 'pred'
    output.mkdir()
    present, missing = test_patients
    shutil.copy(os.path.join(paths['pred'], present.prediction_name(RUN_NAME)), str(output))
    code, out, err = run(Evaluate, ['--list', paths['truth'], '--pred-dir', output])
    assert code == 2
    line = error_line(err)
    assert missing.name in line and 'no prediction' in line
    assert not (output / 'metrics.csv').exists()


@pytest.mark.parametrize('change', ['size', 'origin', 'spacing'])
def test_evaluate_refuses_a_prediction_on_another_grid(pipeline, test_patients, tmp_path, change):
    paths, _ = pipeline
    output = tmp_path / 'pred'
    shutil.copytree(paths['pred'], str(output))
    patient = test_patients[0]
    path = str(output / patient.prediction_name(RUN_NAME))
    image = sitk.ReadImage(path)
    if change == 'size':
        moved = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[:, :-8])
        moved.SetSpacing(image.GetSpacing())
        moved.SetOrigin(image.GetOrigin())
        moved.SetDirection(image.GetDirection())
    else:
        moved = sitk.Image(image)
        if change == 'origin':
            moved.SetOrigin(tuple(o + 5.0 for o in image.GetOrigin()))
        else:
            moved.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(moved, path, True)
    code, out, err = run(Evaluate, ['--list', paths['truth'], '--pred-dir', output])
    assert code == 2
    line = error_line(err)
    assert os.path.basename(path) in line and patient.name in line and 'grid' in line


# ---------------------------------------------------------------- real BRATS geometry


def real_inference(pipeline, list_path, output):
    paths, _ = pipeline
    code, out, err = run(Inference, ['--list', list_path, '--ckpt-dir', paths['ckpt'],
                                     '--output-dir', output])
    assert code == 0, err
    return sorted(os.listdir(str(output)))


def test_real_brats2015_prediction_keeps_the_input_geometry(brats2015_root, pipeline, tmp_path):
    lists = tmp_path / 'lists'
    code, out, err = run(readfile, ['--data-dir', brats2015_root, '--list-dir', lists,
                                    '--val-fraction', '0'])
    assert code == 0, err
    (patient,) = read_patient_list(str(lists / 'test.txt'))
    assert patient.name == 'brats_tcia_pat124_0003'
    assert real_inference(pipeline, str(lists / 'test.txt'), tmp_path / 'pred') == [
        'VSD.dcr.35557.mha']
    labels = assert_same_grid(str(tmp_path / 'pred' / 'VSD.dcr.35557.mha'), patient.flair)
    image = np.stack([sitk.GetArrayFromImage(sitk.ReadImage(p)) for p in patient.modality_paths], -1)
    assert labels.shape == image.shape[:3] == (155, 240, 240)
    assert not labels[~np.any(image != 0, axis=(1, 2, 3))].any()


def test_real_brats2018_prediction_keeps_the_input_geometry(brats2018_root, pipeline, tmp_path):
    (patient,) = [p for p in find_patients([brats2018_root]) if p.name == REAL_2018_CASE]
    list_path = str(tmp_path / 'case.txt')
    write_patient_list([patient], list_path)
    assert real_inference(pipeline, list_path, tmp_path / 'pred') == [REAL_2018_CASE + '.nii.gz']
    labels = assert_same_grid(str(tmp_path / 'pred' / (REAL_2018_CASE + '.nii.gz')), patient.flair)
    assert labels.shape == (155, 240, 240)


def test_inference_shards_split_the_patients_without_overlap_or_loss(tmp_path):
    rows = ['patient,flair,t1,t1c,t2,label']
    for index in range(7):
        case = tmp_path / 'case{}'.format(index)
        case.mkdir()
        paths = [case / 'case{}_{}.nii.gz'.format(index, modality) for modality in ('flair', 't1', 't1ce', 't2')]
        for path in paths:
            path.write_text('')
        rows.append(','.join([case.name] + [str(path) for path in paths] + ['']))
    listed = tmp_path / 'test.txt'
    listed.write_text('\n'.join(rows) + '\n')
    everyone = [patient.name for patient in Inference.patients_to_segment([str(listed)])]
    parts = [[patient.name for patient in Inference.patients_to_segment([str(listed)], Inference.parse_args(
        ['--shard', '{}/3'.format(index)]).shard)] for index in range(3)]
    assert sorted(sum(parts, [])) == sorted(everyone) and len(everyone) == 7
    assert [len(part) for part in parts] == [3, 2, 2]
    assert Inference.parse_args([]).shard == (0, 1)


@pytest.mark.parametrize('text', ['2/2', '-1/2', '0/0', 'a/b', '1'])
def test_inference_refuses_a_shard_outside_its_count(text, capsys):
    with pytest.raises(SystemExit):
        Inference.parse_args(['--shard', text])
    assert '--shard' in capsys.readouterr().err


# ---------------------------------------------------------------- SavedModel export

# Run in a fresh interpreter that imports only TensorFlow and NumPy: normalise a volume by the
# export's preprocessing.json, run the serving signature on all its slices, save the outputs.
PLAIN_TENSORFLOW_CLIENT = r'''
import json, os, sys
import numpy as np
import tensorflow as tf
export_dir, volume_path, output_path = sys.argv[1:]
with open(os.path.join(export_dir, 'assets.extra', 'preprocessing.json')) as stream:
    preprocessing = json.load(stream)
assert preprocessing['normalization']['method'] == 'zscore'
volume = np.load(volume_path).astype(np.float64)
brain = np.any(volume != 0, axis=-1)
mean, std = volume[brain].mean(axis=0), np.maximum(volume[brain].std(axis=0), 1e-6)
clip = preprocessing['clip_sd']
slices = np.where(brain[..., None], np.clip((volume - mean) / std, -clip, clip), 0.0).astype(np.float32)
serve = tf.saved_model.load(export_dir).signatures['serving_default']
outputs = serve(**{preprocessing['input']: tf.constant(slices)})
np.savez(output_path, **{name: outputs[name].numpy() for name in preprocessing['outputs']})
leaked = sorted(name for name in sys.modules if name == 'model' or name.startswith('model.'))
assert not leaked, leaked
'''


@pytest.fixture(scope='module')
def exported(pipeline, tmp_path_factory):
    """Export.py run on the pipeline's checkpoint: (code, stdout, stderr, output folder)."""
    paths, _ = pipeline
    output = str(tmp_path_factory.mktemp('export'))
    return run(Export, ['--ckpt-dir', paths['ckpt'], '--output-dir', output]) + (output,)


def test_export_writes_a_tf_serving_layout_with_its_preprocessing(exported, pipeline, tmp_path):
    code, out, err, output = exported
    assert code == 0, err
    assert sorted(os.listdir(output)) == ['1']
    version = os.path.join(output, '1')
    assert {'saved_model.pb', 'variables', 'assets.extra'} <= set(os.listdir(version))
    assert version in out
    with open(os.path.join(version, 'assets.extra', 'preprocessing.json')) as stream:
        preprocessing = json.load(stream)
    paths, _ = pipeline
    assert preprocessing['network'] == checkpoints.read_config(paths['ckpt'])[0].to_dict()
    assert preprocessing['checkpoint'] == os.path.join(paths['ckpt'], 'model.ckpt-2')
    assert (preprocessing['input'], preprocessing['outputs']) == ('slices', ['probabilities', 'labels'])
    again = str(tmp_path / 'export')
    shutil.copytree(output, again)
    code, out, err = run(Export, ['--ckpt-dir', paths['ckpt'], '--output-dir', again])
    assert code == 0 and sorted(os.listdir(again)) == ['1', '2'], err
    code, out, err = run(Export, ['--ckpt-dir', paths['ckpt'], '--output-dir', again, '--version', '2'])
    assert code == 2 and 'exists already' in error_line(err) and sorted(os.listdir(again)) == ['1', '2']


def test_an_export_folder_resolves_to_its_highest_version_or_to_itself(tmp_path):
    from model import export
    for version in ('1', '2', '10', 'notes'):
        os.makedirs(str(tmp_path / 'serving' / version))
    assert export.resolve(str(tmp_path / 'serving')) == str(tmp_path / 'serving' / '10')
    (tmp_path / 'serving' / '2' / 'saved_model.pb').write_bytes(b'')
    assert export.resolve(str(tmp_path / 'serving' / '2')) == str(tmp_path / 'serving' / '2')
    with pytest.raises(export.InputError, match='neither saved_model.pb nor version folders'):
        export.resolve(str(tmp_path / 'serving' / 'notes'))


def test_export_refuses_a_folder_without_a_checkpoint(tmp_path):
    code, out, err = run(Export, ['--ckpt-dir', tmp_path / 'nothing', '--output-dir', tmp_path / 'export'])
    assert code == 2 and 'checkpoint folder does not exist' in error_line(err)
    assert not os.path.exists(str(tmp_path / 'export'))


def test_plain_tensorflow_gets_the_labels_inference_gets_from_the_checkpoint(exported, pipeline, test_patients,
                                                                           tmp_path):
    paths, _ = pipeline
    image = load_patient(test_patients[0], with_label=False)[0]
    np.save(str(tmp_path / 'volume.npy'), image)
    client = subprocess.run([sys.executable, '-c', PLAIN_TENSORFLOW_CLIENT, os.path.join(exported[3], '1'),
                             str(tmp_path / 'volume.npy'), str(tmp_path / 'outputs.npz')],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=''), cwd=str(tmp_path))
    assert client.returncode == 0, client.stderr[-2000:]
    outputs = np.load(str(tmp_path / 'outputs.npz'))
    argmax = Inference.DECODING.overridden(tta='none', method='argmax')
    with predict.restored_predictor(paths['ckpt'], 'latest', argmax, 8) as (session, predictor, _):
        raw, mean, std, probabilities, labels = predictor.window_ops(session.graph, *image.shape[1:3])
        expected = session.run({'probabilities': probabilities, 'labels': labels},
                               {raw: image.astype(np.float32), mean: intensity_stats(image)[0],
                                std: intensity_stats(image)[1]})
    assert len(np.unique(expected['labels'])) > 1   # an untrained network: labels of several classes
    # The client normalises in float64 NumPy, the project in float32 TensorFlow: the inputs differ
    # by float32 rounding, which moves a few probabilities by up to about 1e-3.
    np.testing.assert_allclose(outputs['probabilities'], expected['probabilities'], atol=2e-3)
    assert np.mean(outputs['labels'] == expected['labels']) >= 0.999


def test_inference_from_the_export_equals_inference_from_the_checkpoint_on_a_real_patient(
        brats2015_root, exported, pipeline, tmp_path):
    code, out, err = run(readfile, ['--data-dir', brats2015_root, '--list-dir', tmp_path / 'lists',
                                    '--val-fraction', '0'])
    assert code == 0, err
    paths, _ = pipeline
    # float32 on both sides: the comparison is of the two ways in, not of oneDNN's bfloat16 rounding
    common = ['--list', tmp_path / 'lists' / 'test.txt', '--min-component-fraction', '0.1', '--bfloat16', 'off']
    code, out, err = run(Inference, common + ['--ckpt-dir', paths['ckpt'], '--output-dir', tmp_path / 'ckpt'])
    assert code == 0, err
    code, out, err = run(Inference, common + ['--saved-model', exported[3], '--output-dir', tmp_path / 'export'])
    assert code == 0, err
    assert 'with {} ('.format(os.path.join(exported[3], '1')) in out
    from_checkpoint = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / 'ckpt' / 'VSD.dcr.35557.mha')))
    from_export = assert_same_grid(str(tmp_path / 'export' / 'VSD.dcr.35557.mha'),
                                   read_patient_list(str(tmp_path / 'lists' / 'test.txt'))[0].flair)
    assert from_checkpoint.any()
    np.testing.assert_array_equal(from_export, from_checkpoint)


@pytest.mark.parametrize('flags, problem', [
    (['--ckpt-dir', 'somewhere'], 'cannot go with --ckpt-dir'),
    (['--checkpoint', 'best'], 'cannot go with --ckpt-dir or --checkpoint'),
])
def test_inference_refuses_an_export_with_checkpoint_flags(exported, pipeline, tmp_path, flags, problem):
    paths, _ = pipeline
    code, out, err = run(Inference, ['--list', paths['test'], '--saved-model', exported[3],
                                     '--output-dir', tmp_path / 'pred'] + flags)
    assert code == 2 and problem in error_line(err)


def test_inference_refuses_a_folder_that_holds_no_export(pipeline, tmp_path):
    paths, _ = pipeline
    code, out, err = run(Inference, ['--list', paths['test'], '--saved-model', paths['ckpt'],
                                     '--output-dir', tmp_path / 'pred'])
    assert code == 2 and 'neither saved_model.pb nor version folders' in error_line(err)
