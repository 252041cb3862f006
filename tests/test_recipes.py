"""model/recipes.py and Train.py --recipe: each recipe trains, resumes and predicts; config.json
records exactly what the recipes set; every default is defined once."""
import contextlib
import dataclasses
import glob
import io
import json
import os

import pytest
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

import Inference  # noqa: E402  (after disable_v2_behavior)
import Train  # noqa: E402
from model import recipes  # noqa: E402
from model.dcr import NetworkConfig  # noqa: E402
from model.input import AugmentConfig  # noqa: E402
from model.losses import LossConfig  # noqa: E402
from model.training_settings import Schedule  # noqa: E402

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Only what a tiny phantom run must change: the width and the crop (the phantom's slices are 96 wide).
TINY = {'width': 0.125, 'refine_filters': 8, 'crop_size': 64, 'shuffle_buffer': 16}
TINY_FLAGS = ['--width', '0.125', '--refine-filters', '8', '--crop-size', '64', '--shuffle-buffer', '16']
PATHS = ('train_records', 'val_list', 'ckpt_dir', 'log_dir')


def quietly(main, argv):
    """main(argv) with its output swallowed; returns the exit code."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


@pytest.fixture(scope='module')
def recipe_runs(data):
    """Each recipe trained 1 step, resumed to 2 and predicted on the validation patient."""
    runs = {}
    for name in recipes.RECIPES:
        ckpt = os.path.join(data['root'], 'recipe-' + name)
        flags = ['--recipe', name, '--train-records', data['records'], '--ckpt-dir', ckpt, '--val-list', '',
                 '--save-every-steps', '1'] + TINY_FLAGS
        assert quietly(Train.main, flags + ['--num-steps', '1']) == 0
        assert quietly(Train.main, flags + ['--num-steps', '2']) == 0
        predictions = os.path.join(data['root'], 'predictions-' + name)
        assert quietly(Inference.main, ['--list', data['val'], '--ckpt-dir', ckpt, '--output-dir', predictions,
                                        '--bfloat16', 'off']) == 0
        with open(os.path.join(ckpt, 'config.json')) as stream:
            runs[name] = dict(ckpt=ckpt, config=json.load(stream), predictions=os.listdir(predictions))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize('name', list(recipes.RECIPES))
def test_each_recipe_trains_resumes_and_predicts(recipe_runs, name):
    run = recipe_runs[name]
    steps = sorted(int(path.rsplit('-', 1)[1].split('.')[0]) for path in
                   glob.glob(os.path.join(run['ckpt'], 'model.ckpt-*.index')))
    assert steps == [1, 2]
    assert len(run['predictions']) == 1
    assert run['config']['training']['recipe'] == name


@pytest.mark.slow
def test_config_files_differ_exactly_in_the_recipes_fields(recipe_runs):
    def resolved(name):
        return recipes.recipe(name).overridden(**TINY)

    def training(name):
        settings = recipe_runs[name]['config']['training']
        return {key: value for key, value in settings.items() if key not in PATHS}

    for first, second in (('paper', 'released'), ('paper', 'measured'), ('released', 'measured')):
        a, b = resolved(first).to_dict(), resolved(second).to_dict()
        expected = {field for field in a if a[field] != b[field] and field not in ('name', 'decoding')}
        expected |= {'val_' + {'method': 'decoding'}.get(field, field) for field in a['decoding']
                     if a['decoding'][field] != b['decoding'][field]}
        expected.add('recipe')
        differing = {key for key in training(first) if training(first)[key] != training(second).get(key)}
        assert differing == expected, (first, second)


@pytest.mark.slow
def test_config_records_every_resolved_recipe_value(recipe_runs):
    for name, run in recipe_runs.items():
        settings = run['config']['training']
        for field, value in recipes.recipe(name).overridden(**TINY).to_dict().items():
            if field not in ('name', 'decoding'):
                assert settings[field] == value, (name, field)


def test_a_flag_overrides_one_field_of_the_recipe():
    args = Train.parse_args(['--recipe', 'paper', '--learning-rate', '0.01'])
    resolved = Train.resolve_recipe(args)
    assert resolved == dataclasses.replace(recipes.PAPER, learning_rate=0.01)
    assert args.learning_rate == 0.01 and args.crop_size == recipes.PAPER.crop_size


def test_class_weights_given_as_empty_mean_none_and_otherwise_five_weights():
    assert Train.resolve_recipe(Train.parse_args(['--class-weights', ''])).class_weights is None
    assert Train.resolve_recipe(Train.parse_args(['--class-weights', '1,2,1,2,2'])).class_weights == (1, 2, 1, 2, 2)


def test_the_released_recipe_is_the_papers_at_half_width_dilations_12_6_4_1_and_batch_1():
    paper, released = recipes.PAPER.to_dict(), recipes.RELEASED.to_dict()
    assert {field for field in paper if paper[field] != released[field]} == {
        'name', 'width', 'dilations', 'batch_size'}
    assert (recipes.RELEASED.width, recipes.RELEASED.dilations, recipes.RELEASED.batch_size) == (
        0.5, (12, 6, 4, 1), 1)


def test_an_unknown_recipe_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        Train.parse_args(['--recipe', 'fast'])
    assert stop.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err
    with pytest.raises(KeyError, match='known: paper, released, measured'):
        recipes.recipe('fast')


def test_every_default_is_defined_once(data, tmp_path):
    """Train.py's settings with no flags are the library's defaults, and those are the measured
    recipe's; Inference.py decodes as Train.py validates."""
    settings, _ = Train.settings_from_flags(['--train-records', data['records'], '--ckpt-dir', str(tmp_path),
                                             '--val-list', ''])
    assert settings.network == NetworkConfig(**recipes.MEASURED.fields(recipes.NETWORK_FIELDS))
    assert settings.network == NetworkConfig()
    assert settings.augment == AugmentConfig()
    assert settings.loss == LossConfig()
    library_schedule = Schedule(num_steps=1, save_every_steps=1, save_every_minutes=1, keep_checkpoints=1,
                                summary_every_steps=1, validate_every_steps=1, time_budget_minutes=0)
    assert (settings.schedule.learning_rate, settings.schedule.lr_decay) == (
        library_schedule.learning_rate, library_schedule.lr_decay)
    assert settings.batch_size == recipes.MEASURED.batch_size
    assert settings.validation.decoding == recipes.MEASURED.decoding == Inference.decoding_of(
        Inference.parse_args([]))


def test_default_paths_are_spelled_only_in_model_paths():
    for script in ('readfile.py', 'create_pascal_tf_record.py', 'Train.py', 'Inference.py', 'Evaluate.py',
                   'Export.py'):
        with open(os.path.join(PROJECT_ROOT, script)) as stream:
            assert "'data/" not in stream.read(), script
