"""Train.py and model/training.py at tiny width on tiny phantom records: checkpoints, config,
resume, validation, TensorBoard events, refusals and NaN handling."""
import contextlib
import glob
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

import create_pascal_tf_record  # noqa: E402  (after disable_v2_behavior)
import Inference  # noqa: E402
import Train  # noqa: E402
from model import checkpoints, training, training_graph  # noqa: E402
from model.cpu import cpu_has_bfloat16  # noqa: E402
from model.dcr import NetworkConfig, build_network  # noqa: E402
from model.errors import InputError  # noqa: E402
from model.predict import restored_predictor  # noqa: E402
from model.recipes import MEASURED  # noqa: E402
from model.training_settings import Schedule, ValidationConfig  # noqa: E402
from model.records import resolve_records  # noqa: E402

pytestmark = pytest.mark.slow   # runs the scripts end to end (make test-fast leaves it out)

NETWORK = ['--width', '0.125', '--refine-filters', '8', '--dcr-type', 'C', '--dilations', '6,3,2,1']
EXPECTED_CONFIG = NetworkConfig(dcr_type='C', dilations=(6, 3, 2, 1), width=0.125, refine_filters=8)
TINY_SCHEDULE = ['--batch-size', '2', '--crop-size', '64', '--shuffle-buffer', '16',
                 '--save-every-steps', '1', '--summary-every-steps', '1', '--validate-every-steps', '100']
TINY_RUN = TINY_SCHEDULE + NETWORK


def validation_config(select_on='mean', **decoding):
    """A ValidationConfig without patients: the measured decoding with `decoding` in place."""
    return ValidationConfig(patients=(), decoding=MEASURED.decoding.overridden(**decoding), select_on=select_on)


def schedule(**settings):
    """A Schedule with Train.py's bookkeeping and `settings` in place."""
    bookkeeping = dict(save_every_steps=Train.SAVE_EVERY_STEPS, save_every_minutes=Train.SAVE_EVERY_MINUTES,
                       keep_checkpoints=Train.KEEP_CHECKPOINTS, summary_every_steps=Train.SUMMARY_EVERY_STEPS,
                       validate_every_steps=Train.VALIDATE_EVERY_STEPS, time_budget_minutes=0.0)
    return Schedule(**dict(bookkeeping, **settings))


def train(data, ckpt_dir, *extra, val_list=''):
    """Train.main in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = ['--train-records', data['records'], '--ckpt-dir', str(ckpt_dir), '--val-list', val_list]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = Train.main(argv + list(extra))
    return code, out.getvalue(), err.getvalue()


def checkpoint_steps(ckpt_dir):
    return sorted(int(re.search(r'model\.ckpt-(\d+)\.index$', path).group(1))
                  for path in glob.glob(os.path.join(str(ckpt_dir), 'model.ckpt-*.index')))


def error_lines(stderr):
    """stderr without tqdm progress bars."""
    return [line for line in re.split(r'[\r\n]', stderr) if line.strip() and 'Train' in line]


def snapshot(ckpt_dir):
    return {name: os.stat(os.path.join(ckpt_dir, name)).st_mtime_ns
            for name in os.listdir(ckpt_dir) if name.startswith('model.ckpt-')}


@pytest.fixture(scope='module')
def first_run(data):
    """Two steps with validation; what it left is recorded before any other test runs on it."""
    ckpt = os.path.join(data['root'], 'run')
    logs = os.path.join(data['root'], 'logs')
    code, out, err = train(data, ckpt, '--num-steps', '2', '--log-dir', logs, *TINY_RUN,
                           val_list=data['val'])
    assert code == 0, err
    with open(os.path.join(ckpt, checkpoints.BEST_DIR, 'best.json')) as stream:
        best = json.load(stream)
    return {'ckpt': ckpt, 'logs': logs, 'out': out, 'steps': checkpoint_steps(ckpt),
            'latest': tf.train.latest_checkpoint(ckpt), 'best': best,
            'best_checkpoint': tf.train.latest_checkpoint(os.path.join(ckpt, checkpoints.BEST_DIR)),
            'files': snapshot(ckpt)}


def test_checkpoints_are_named_by_global_step(first_run):
    assert first_run['steps'] == [1, 2]
    assert first_run['latest'] == os.path.join(first_run['ckpt'], 'model.ckpt-2')
    assert tf.train.load_variable(first_run['latest'], 'global_step') == 2
    assert 'reached step 2' in first_run['out']


def test_config_json_rebuilds_the_same_network(first_run):
    network, crop_size, training = checkpoints.read_config(first_run['ckpt'])
    assert network == EXPECTED_CONFIG
    assert crop_size == 64
    assert training['batch_size'] == 2 and training['train_records'].endswith('train-*')
    with open(checkpoints.config_path(first_run['ckpt'])) as stream:
        assert NetworkConfig.from_dict(json.load(stream)['network']) == EXPECTED_CONFIG
    # The checkpoint holds every variable of the network that config describes.
    with tf.Graph().as_default():
        build_network(tf.placeholder(tf.float32, [None, 64, 64, 4]), network, is_training=False)
        checkpoints.check_compatible(first_run['latest'], tf.global_variables())


def test_tensorboard_events_in_the_log_dir(first_run):
    events = glob.glob(os.path.join(first_run['logs'], 'events.out.tfevents.*'))
    assert events
    tags = set()
    for path in events:
        for event in tf.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    assert {'loss/total', 'loss/cross_entropy', 'learning_rate', 'validation/dice_mean'} <= tags


def test_validation_keeps_the_best_checkpoint(first_run):
    best = first_run['best']
    assert set(best) == {'WT', 'TC', 'ET', 'mean', 'step', 'select_on', 'decoding', 'tta', 'tumour_threshold',
                         'min_component_size', 'min_component_fraction'}
    decoding = MEASURED.decoding
    assert (best['select_on'], best['decoding'], best['tta'], best['tumour_threshold'],
            best['min_component_fraction']) == (Train.SELECT_ON, decoding.method, decoding.tta,
                                                decoding.tumour_threshold, decoding.min_component_fraction)
    assert all(0.0 <= best[name] <= 1.0 for name in ('WT', 'TC', 'ET', 'mean'))
    np.testing.assert_allclose(best['mean'], np.mean([best['WT'], best['TC'], best['ET']]))
    assert first_run['best_checkpoint'] == os.path.join(
        first_run['ckpt'], checkpoints.BEST_DIR, 'model.ckpt-{}'.format(best['step']))
    assert 'validating on 1 patients' in first_run['out']
    assert 'validation Dice' in first_run['out']


def test_rerun_with_more_steps_resumes(data, first_run):
    ckpt = first_run['ckpt']
    assert tf.train.latest_checkpoint(ckpt) == os.path.join(ckpt, 'model.ckpt-2')
    before = snapshot(ckpt)
    code, out, err = train(data, ckpt, '--num-steps', '4', '--log-dir', first_run['logs'], *TINY_RUN,
                           val_list=data['val'])
    assert code == 0, err
    assert 'resumed from {}'.format(os.path.join(ckpt, 'model.ckpt-2')) in out
    assert checkpoint_steps(ckpt) == [1, 2, 3, 4]
    assert tf.train.latest_checkpoint(ckpt) == os.path.join(ckpt, 'model.ckpt-4')
    assert tf.train.load_variable(os.path.join(ckpt, 'model.ckpt-4'), 'global_step') == 4
    # Steps 1 and 2 were not trained (and saved) again.
    after = snapshot(ckpt)
    assert {name: after[name] for name in before} == before
    # Adam's bias-correction counter continued too: beta1^(steps + 1).
    np.testing.assert_allclose(
        tf.train.load_variable(os.path.join(ckpt, 'model.ckpt-4'), 'beta1_power'), 0.9 ** 5, rtol=1e-5)


def test_a_copied_run_folder_uses_its_own_checkpoints(first_run, tmp_path):
    copy = str(tmp_path / 'copy')
    shutil.copytree(first_run['ckpt'], copy)
    latest = tf.train.latest_checkpoint(copy)
    assert latest and os.path.dirname(latest) == copy
    best = tf.train.latest_checkpoint(os.path.join(copy, checkpoints.BEST_DIR))
    assert best and os.path.dirname(best) == os.path.join(copy, checkpoints.BEST_DIR)
    assert checkpoints.find_checkpoint(copy, checkpoints.BEST) == best
    assert checkpoints.find_checkpoint(copy) == latest
    for not_a_checkpoint in ('', os.path.join(copy, checkpoints.BEST_DIR)):
        with pytest.raises(InputError, match='not a checkpoint'):
            checkpoints.find_checkpoint(copy, not_a_checkpoint)


@pytest.mark.parametrize('change', [['--width', '0.25'], ['--dcr-type', 'A'],
                                    ['--dilations', '12,6,3,1'], ['--crop-size', '96']])
def test_another_network_in_the_same_ckpt_dir_is_refused(data, first_run, change):
    config_file = checkpoints.config_path(first_run['ckpt'])
    with open(config_file, 'rb') as stream:
        stored = stream.read()
    steps = checkpoint_steps(first_run['ckpt'])
    code, out, err = train(data, first_run['ckpt'], '--num-steps', '10', *(TINY_RUN + change))
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert config_file in lines[0] and 'another network configuration' in lines[0]
    with open(config_file, 'rb') as stream:
        assert stream.read() == stored
    assert checkpoint_steps(first_run['ckpt']) == steps


@pytest.mark.parametrize('network, expected', [
    (['--dcr-type', 'none'], dict(dcr_type='none')),
    (['--dcr-type', 'B'], dict(dcr_type='B')),
    (['--architecture', 'unet'], dict(architecture='unet')),
], ids=('none', 'B', 'unet'))
def test_study_networks_train_resume_predict_and_score(data, tmp_path, network, expected):
    import Evaluate
    ckpt = str(tmp_path / 'run')
    code, _, err = train(data, ckpt, '--num-steps', '2', *TINY_RUN, *network)
    assert code == 0, err
    code, out, err = train(data, ckpt, '--num-steps', '3', *TINY_RUN, *network)
    assert code == 0 and checkpoint_steps(ckpt) == [1, 2, 3] and 'reached step 3' in out, err
    stored = checkpoints.read_config(ckpt)[0]
    assert stored == NetworkConfig(**dict(EXPECTED_CONFIG.to_dict(), **expected))
    predictions = str(tmp_path / 'predictions')
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert Inference.main(['--list', data['val'], '--ckpt-dir', ckpt, '--output-dir', predictions]) == 0
        assert Evaluate.main(['--list', data['val'], '--pred-dir', predictions]) == 0
    rows = Evaluate.read_csv(os.path.join(predictions, 'metrics.csv'))
    assert [row['patient'] for row in rows][-1] == 'mean' and len(rows) == 2
    other = ['--architecture', 'dcr'] if expected.get('architecture') else ['--dcr-type', 'A']
    code, _, err = train(data, ckpt, '--num-steps', '4', *TINY_RUN, *network, *other)
    assert code == 2 and 'another network configuration' in error_lines(err)[0]
    assert checkpoint_steps(ckpt) == [1, 2, 3]


@pytest.mark.parametrize('crop', ['48', '100'])
def test_crop_size_must_be_a_multiple_of_32(data, tmp_path, crop):
    run = [arg if arg != '64' else crop for arg in TINY_RUN]
    code, out, err = train(data, tmp_path / 'ckpt', '--num-steps', '1', *run)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and '--crop-size {}'.format(crop) in lines[0], lines
    assert not os.path.exists(checkpoints.config_path(str(tmp_path / 'ckpt')))


@pytest.mark.parametrize('fraction', ['-0.1', '1.5'])
def test_tumour_fraction_must_be_a_share(data, tmp_path, fraction):
    code, out, err = train(data, tmp_path / 'ckpt', '--num-steps', '1', '--tumour-fraction', fraction, *TINY_RUN)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and '--tumour-fraction {} is not between 0 and 1'.format(fraction) in lines[0], lines
    assert not os.path.exists(checkpoints.config_path(str(tmp_path / 'ckpt')))


def test_bfloat16_is_refused_on_a_cpu_without_it(data, tmp_path, monkeypatch):
    # The flag check alone: on such a CPU oneDNN's pass leaves dilated-convolution gradients to
    # kernels that refuse them, so Train.py must stop before building anything.
    monkeypatch.setattr(Train, 'cpu_has_bfloat16', lambda: False)
    code, out, err = train(data, tmp_path / 'ckpt', '--num-steps', '1', '--bfloat16', 'on', *TINY_RUN)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and '--bfloat16 on needs a CPU with AVX512-BF16' in lines[0], lines
    assert not os.path.exists(checkpoints.config_path(str(tmp_path / 'ckpt')))


def test_nan_loss_stops_without_saving_that_step(data, tmp_path):
    ckpt = tmp_path / 'ckpt'
    code, out, err = train(data, ckpt, '--num-steps', '6', '--learning-rate', '1e30',
                           '--save-every-minutes', '1000', *TINY_RUN)
    assert code == 1
    (line,) = error_lines(err)
    match = re.match(r'Train\.py: error: loss is (nan|inf|-inf) at step (\d+); stopped without '
                     r'saving.*last good checkpoint: step (\d+)\)?$', line)
    assert match, line
    bad_step, last_good = int(match.group(2)), int(match.group(3))
    assert bad_step > last_good
    steps = checkpoint_steps(ckpt)
    assert bad_step not in steps and all(step < bad_step for step in steps)
    assert steps[-1] == last_good
    assert 'reached step' not in out


def test_learning_rate_schedules_follow_progress():
    from model.training import progress
    from model.training_graph import learning_rate
    budgeted = schedule(num_steps=100, learning_rate=1e-3, time_budget_minutes=10.0)
    assert progress(50, 0.0, budgeted) == 0.5
    assert progress(10, 300.0, budgeted) == 0.5        # the time budget is further along
    assert progress(200, 0.0, budgeted) == 1.0
    with tf.Graph().as_default(), tf.Session() as session:
        share = tf.placeholder(tf.float32, [])
        rates = {decay: learning_rate(schedule(num_steps=1, learning_rate=1e-3, lr_decay=decay), share)
                 for decay in ('none', 'cosine', 'poly')}
        for decay, start, middle in (('none', 1e-3, 1e-3), ('cosine', 1e-3, 5e-4), ('poly', 1e-3, 1e-3 * 0.5 ** 0.9)):
            got = [session.run(rates[decay], {share: value}) for value in (0.0, 0.5, 1.0)]
            np.testing.assert_allclose(got[:2], [start, middle], rtol=1e-5)
            assert got[2] == pytest.approx(1e-3 if decay == 'none' else 0.0, abs=1e-9)


def test_time_budget_stops_saves_and_counts_across_resumes(data, tmp_path):
    ckpt = tmp_path / 'budget'
    code, out, err = train(data, ckpt, '--num-steps', '100000', '--time-budget-minutes', '0.05', *TINY_RUN)
    assert code == 0, err
    assert 'time budget of 0.05 minutes used' in err + out
    assert 'training (time budget)' in err and '/3 [' in err     # the bar counts the 3 s budget
    steps = checkpoint_steps(ckpt)
    assert steps and steps[-1] < 100000
    seconds = tf.train.load_variable(str(ckpt), 'train_seconds')
    assert seconds >= 3.0
    # The budget is spent: a rerun restores, trains no further step and keeps the checkpoints.
    code, out, err = train(data, ckpt, '--num-steps', '100000', '--time-budget-minutes', '0.05', *TINY_RUN)
    assert code == 0, err
    assert checkpoint_steps(ckpt)[-1] == steps[-1]


@pytest.mark.skipif(not cpu_has_bfloat16(), reason='this CPU has no native bfloat16 (AVX512-BF16 or AMX)')
def test_bfloat16_training_runs_and_is_recorded(data, tmp_path):
    ckpt = str(tmp_path / 'bf16')
    code, _, err = train(data, ckpt, '--num-steps', '2', '--bfloat16', 'on', *TINY_RUN)
    assert code == 0, err
    assert checkpoint_steps(ckpt) == [1, 2]
    assert checkpoints.read_config(ckpt)[2]['bfloat16'] is True


def test_inference_ensemble_of_a_network_with_itself_matches_the_network(data, first_run, tmp_path):
    import Inference
    from model.brats import load_patient, read_volume
    from model.lists import read_patient_list
    copies = [str(tmp_path / name) for name in ('a', 'b')]
    for copy in copies:
        shutil.copytree(first_run['ckpt'], copy)
    image = load_patient(read_patient_list(data['val'])[0], with_label=False)[0]
    probabilities, labels = {}, {}
    for name, ckpt_dirs in (('single', copies[:1]), ('ensemble', copies)):
        output = str(tmp_path / name)
        ckpt_flags = [flag for ckpt in ckpt_dirs for flag in ('--ckpt-dir', ckpt)]
        with contextlib.redirect_stderr(io.StringIO()):
            assert Inference.main(['--list', data['val'], '--output-dir', output, '--bfloat16', 'off']
                                  + ckpt_flags) == 0
        assert len(os.listdir(output)) == 1
        labels[name] = read_volume(os.path.join(output, os.listdir(output)[0]))[0]
        with restored_predictor(ckpt_dirs, checkpoints.LATEST, Inference.DECODING, 8) as (session, predictor, _):
            probabilities[name] = predictor.probabilities(session, image)
    np.testing.assert_allclose(probabilities['ensemble'], probabilities['single'], atol=1e-6)
    # The graphs that decode differ ((p + p) / 2 against p / 1, rewritten by grappler), which moves
    # the voxels at a near-tie of this untrained network (measured: 64 of 221184).
    assert labels['single'].any() and np.mean(labels['single'] == labels['ensemble']) >= 0.999


def trained_weights(data, ckpt_dir, seed):
    """Every variable after one step from scratch with --seed `seed`."""
    code, out, err = train(data, ckpt_dir, '--num-steps', '1', '--seed', str(seed), *TINY_RUN)
    assert code == 0, err
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(ckpt_dir)))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map() if name != 'train_seconds'}


def test_the_seed_fixes_the_initial_weights_and_batches(data, tmp_path):
    first = trained_weights(data, tmp_path / 'first', 5)
    again = trained_weights(data, tmp_path / 'again', 5)
    other = trained_weights(data, tmp_path / 'other', 6)
    kernels = [name for name in first if name.endswith('weights') and 'Adam' not in name]
    assert kernels
    for name in first:
        np.testing.assert_allclose(again[name], first[name], atol=1e-5, err_msg=name)
    assert all(not np.allclose(other[name], first[name], atol=1e-5) for name in kernels)


def test_a_resumed_run_draws_a_stream_of_its_own(first_run, tmp_path):
    fresh = str(tmp_path / 'fresh')
    assert training_graph.run_seed(0, fresh) == training_graph.run_seed(0, fresh) != training_graph.run_seed(1, fresh)
    assert training_graph.run_seed(0, first_run['ckpt']) != training_graph.run_seed(0, fresh)


@pytest.mark.parametrize('flags, problem', [
    (['--val-decoding', 'argmax', '--val-tumour-threshold', '0.3'], 'needs regions decoding'),
    (['--val-tumour-threshold', '1.5'], 'between 0 and 1'),
    (['--val-min-component-fraction', '2'], 'between 0 and 1'),
])
def test_a_validation_decoding_that_cannot_work_is_refused(data, tmp_path, flags, problem):
    code, out, err = train(data, tmp_path / 'ckpt', '--num-steps', '1', *TINY_RUN, *flags, val_list=data['val'])
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and '--val-tumour-threshold' in lines[0] and problem in lines[0], lines
    assert not os.path.exists(checkpoints.config_path(str(tmp_path / 'ckpt')))


def offer_all(ckpt_dir, validation, offers):
    """Offer each scores dict in turn to a BestCheckpoint; returns which were saved and what it logged."""
    logged = []
    with tf.Graph().as_default():
        tf.Variable(1.0, name='weight')
        best = training.BestCheckpoint(ckpt_dir, validation, logged.append)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            return [best.offer(session, scores, step) for step, scores in enumerate(offers, 1)], logged


def scores(wt, tc, et):
    return dict(WT=wt, TC=tc, ET=et, mean=(wt + tc + et) / 3)


def best_json(ckpt_dir):
    return os.path.join(ckpt_dir, checkpoints.BEST_DIR, training.BEST_SCORE_FILE)


def test_the_best_checkpoint_is_chosen_on_the_selected_score(tmp_path):
    ckpt, on_wt = str(tmp_path), validation_config(select_on='WT')
    saved, _ = offer_all(ckpt, on_wt, [scores(0.5, 0.9, 0.9), scores(0.6, 0.1, 0.1), scores(0.55, 0.9, 0.9)])
    assert saved == [True, True, False]
    with open(best_json(ckpt)) as stream:
        best = json.load(stream)
    assert (best['step'], best['select_on'], best['WT']) == (2, 'WT', 0.6)
    assert tf.train.latest_checkpoint(os.path.join(ckpt, checkpoints.BEST_DIR)).endswith('model.ckpt-2')
    # Resumed with the same settings, it compares with the kept WT Dice 0.6.
    assert offer_all(ckpt, on_wt, [scores(0.59, 0.9, 0.9)]) == ([False], [])


@pytest.mark.parametrize('resumed_with', [validation_config(select_on='mean'),
                                          validation_config(select_on='WT', tta='none')])
def test_selection_starts_again_when_resumed_with_other_validation_settings(tmp_path, resumed_with):
    ckpt = str(tmp_path)
    offer_all(ckpt, validation_config(select_on='WT'), [scores(0.9, 0.9, 0.9)])
    saved, logged = offer_all(ckpt, resumed_with, [scores(0.2, 0.2, 0.2)])
    assert saved == [True]
    assert len(logged) == 1 and 'other validation settings' in logged[0]


def test_selection_starts_again_when_best_json_is_not_of_the_kept_checkpoint(tmp_path):
    ckpt, validation = str(tmp_path), validation_config()
    offer_all(ckpt, validation, [scores(0.9, 0.9, 0.9)])
    with open(best_json(ckpt)) as stream:
        best = json.load(stream)
    with open(best_json(ckpt), 'w') as stream:   # as if killed between the checkpoint and its scores
        json.dump(dict(best, step=7), stream)
    saved, logged = offer_all(ckpt, validation, [scores(0.2, 0.2, 0.2)])
    assert saved == [True]
    assert len(logged) == 1 and 'not the scores of the checkpoint' in logged[0]


def test_a_best_json_of_an_older_run_counts_as_argmax_validation_on_the_mean(tmp_path):
    ckpt, legacy = str(tmp_path), validation_config(tta='none', method='argmax')
    offer_all(ckpt, legacy, [scores(0.9, 0.9, 0.9)])
    with open(best_json(ckpt)) as stream:
        best = json.load(stream)
    with open(best_json(ckpt), 'w') as stream:
        json.dump({name: best[name] for name in ('WT', 'TC', 'ET', 'mean', 'step')}, stream)
    assert offer_all(ckpt, legacy, [scores(0.2, 0.2, 0.2)]) == ([False], [])
    assert offer_all(ckpt, validation_config(), [scores(0.2, 0.2, 0.2)])[0] == [True]   # the measured decoding


def test_validation_flags_reach_the_validation_config():
    args = Train.parse_args(['--val-list', '', '--val-decoding', 'argmax', '--val-tta', 'zooms',
                             '--select-on', 'WT', '--val-min-component-fraction', '0.3'])
    decoding = Train.resolve_recipe(args).decoding
    assert (decoding.tta, decoding.method, decoding.tumour_threshold, decoding.min_component_fraction) == (
        'zooms', 'argmax', 0.5, 0.3)
    assert args.val_tumour_threshold == 0.5   # resolved, so config.json records it
    defaults = Train.resolve_recipe(Train.parse_args(['--val-list', ''])).decoding
    assert defaults == Inference.decoding_of(Inference.parse_args([]))


def test_a_missing_validation_list_is_named(data, tmp_path):
    missing = str(tmp_path / 'no-such-list.txt')
    code, out, err = train(data, tmp_path / 'ckpt', '--num-steps', '1', *TINY_RUN, val_list=missing)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and missing in lines[0] and '--val-decoding' not in lines[0], lines


def test_an_unknown_selection_score_is_refused():
    with pytest.raises(InputError, match='selects on one of mean, WT, TC, ET'):
        validation_config(select_on='dice')


def test_a_negative_seed_is_refused(data, tmp_path):
    code, out, err = train(data, tmp_path / 'ckpt', '--num-steps', '1', '--seed', '-1', *TINY_RUN)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and '--seed -1 is negative' in lines[0], lines
    assert not os.path.exists(checkpoints.config_path(str(tmp_path / 'ckpt')))


@pytest.fixture(scope='module')
def histogram_run(data):
    """One step on histogram-standardised records of the same patients, with validation."""
    records_dir = os.path.join(data['root'], 'histogram-records')
    assert create_pascal_tf_record.main(['--list', data['train'], '--output-dir', records_dir, '--workers', '1',
                                         '--normalization', 'histogram']) == 0
    histogram_data = dict(data, records=os.path.join(records_dir, 'train-*'))
    ckpt = os.path.join(data['root'], 'histogram-run')
    validation_settings = []

    class RecordingPredictor(training.Predictor):
        """The real Predictor, noting the normalisation and decoding of each validation prediction."""

        def predict(self, session, image):
            validation_settings.append(dict(normalization=self.normalization, decoding=self.decoding))
            return super().predict(session, image)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, 'Predictor', RecordingPredictor)
        code, out, err = train(histogram_data, ckpt, '--num-steps', '1', *TINY_RUN, val_list=data['val'])
    assert code == 0, err
    return {'ckpt': ckpt, 'normalization': resolve_records(histogram_data['records'])[1]['normalization'],
            'validation_settings': validation_settings}


def test_validation_during_a_histogram_run_standardises_with_the_records_scale(histogram_run):
    assert histogram_run['validation_settings']
    assert all(settings['normalization'] == histogram_run['normalization']
               for settings in histogram_run['validation_settings'])


def test_validation_decodes_as_inference_does_by_default(histogram_run):
    assert histogram_run['validation_settings']
    inference_defaults = Inference.decoding_of(Inference.parse_args([]))
    assert all(settings['decoding'] == inference_defaults for settings in histogram_run['validation_settings'])


def test_a_histogram_run_hands_its_records_scale_to_inference(histogram_run):
    assert histogram_run['normalization']['method'] == 'histogram'
    assert checkpoints.read_normalization(histogram_run['ckpt']) == histogram_run['normalization']
    with restored_predictor(histogram_run['ckpt'], checkpoints.LATEST, MEASURED.decoding, 8) as (_, predictor, _):
        assert predictor.normalization == histogram_run['normalization']


def test_resuming_on_records_of_another_normalisation_is_refused(data, histogram_run):
    steps = checkpoint_steps(histogram_run['ckpt'])
    code, out, err = train(data, histogram_run['ckpt'], '--num-steps', '2', *TINY_RUN)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and 'another intensity normalisation' in lines[0], lines
    assert checkpoint_steps(histogram_run['ckpt']) == steps
    assert checkpoints.read_normalization(histogram_run['ckpt']) == histogram_run['normalization']


def test_networks_of_different_normalisations_cannot_form_an_ensemble(first_run, histogram_run):
    with pytest.raises(InputError, match='different intensity normalisations'):
        with restored_predictor([first_run['ckpt'], histogram_run['ckpt']], checkpoints.LATEST, MEASURED.decoding, 8):
            pass


def test_init_from_starts_a_new_run_from_a_trained_network_and_then_resumes_its_own(data, first_run, tmp_path):
    ckpt = tmp_path / 'fine-tuned'
    source_path = tf.train.latest_checkpoint(first_run['ckpt'])   # other tests may have trained it on
    code, out, err = train(data, ckpt, '--num-steps', '1', '--init-from', first_run['ckpt'],
                           '--learning-rate', '0', *TINY_SCHEDULE)   # the network comes from --init-from
    assert code == 0, err
    started = tf.train.latest_checkpoint(str(ckpt))
    assert 'started from the network of ' + source_path in out + err
    assert tf.train.load_variable(started, 'global_step') == 1           # a fresh step ...
    assert checkpoints.read_config(str(ckpt))[0] == EXPECTED_CONFIG     # ... on the trained network
    source = tf.train.load_checkpoint(source_path)
    weights = [name for name, _ in tf.train.list_variables(started) if name.endswith('weights')]
    assert weights
    for name in weights:   # learning rate 0: the weights are still the trained network's
        np.testing.assert_array_equal(tf.train.load_variable(started, name), source.get_tensor(name), err_msg=name)
    adam = [name for name, _ in tf.train.list_variables(started) if name.endswith('/Adam')]
    assert adam and not np.array_equal(tf.train.load_variable(started, adam[0]), source.get_tensor(adam[0]))
    code, out, err = train(data, ckpt, '--num-steps', '2', '--init-from', first_run['ckpt'], *TINY_SCHEDULE)
    assert code == 0, err
    assert checkpoint_steps(ckpt) == [1, 2] and 'resumed from' in err + out


def test_init_from_refuses_a_network_flag_that_contradicts_its_network(data, first_run, tmp_path):
    code, out, err = train(data, tmp_path / 'ckpt', '--num-steps', '1', '--init-from', first_run['ckpt'],
                           '--dcr-type', 'A', *TINY_SCHEDULE)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and '--dcr-type A' in lines[0] and 'dcr_type C' in lines[0], lines
    assert not os.path.exists(checkpoints.config_path(str(tmp_path / 'ckpt')))
