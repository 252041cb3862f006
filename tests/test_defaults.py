"""The original README's workflow: every script run with its default paths on the data/ layout
(only the network is made tiny, and the steps few)."""
import os
import shutil

import pytest
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

import Evaluate  # noqa: E402  (after disable_v2_behavior)
import Inference  # noqa: E402
import Train  # noqa: E402
import create_pascal_tf_record  # noqa: E402
import readfile  # noqa: E402
from model import phantom  # noqa: E402

TINY = ['--width', '0.125', '--refine-filters', '8', '--batch-size', '2', '--num-steps', '2',
        '--shuffle-buffer', '8']


@pytest.mark.slow
def test_scripts_run_with_their_default_paths(tmp_path, monkeypatch):
    generated = tmp_path / 'generated'
    phantom.generate_dataset(str(generated), num_hgg=4, num_lgg=1, num_test=1, shape=(16, 240, 240),
                             progress=False)
    project = tmp_path / 'project'
    (project / 'data').mkdir(parents=True)
    for folder in ('BRATS2015_Training', 'Testing'):       # as BRATS2015 unpacks
        shutil.move(str(generated / folder), str(project / 'data' / folder))
    monkeypatch.chdir(project)
    assert readfile.main([]) == 0
    assert sorted(os.listdir('data/lists')) == ['test.txt', 'train.txt', 'val.txt']
    assert create_pascal_tf_record.main([]) == 0
    assert os.path.exists('data/records/train.json')
    assert Train.main(TINY) == 0
    assert os.path.exists('data/checkpoints/config.json') and os.path.isdir('data/checkpoints/best')
    assert Inference.main([]) == 0           # the validation and the test patients
    predictions = sorted(name for name in os.listdir('data/predictions') if name.endswith('.mha'))
    assert len(predictions) == 2 and all(name.startswith('VSD.dcr.') for name in predictions)
    assert Evaluate.main([]) == 0
    assert os.path.exists('data/predictions/metrics.csv')


def help_of(script, capsys):
    """What `script --help` prints."""
    with pytest.raises(SystemExit) as stop:
        script.parse_args(['--help'])
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_help_states_each_default_once_and_never_none(capsys):
    for script in (readfile, create_pascal_tf_record, Train, Inference, Evaluate):
        help_text = help_of(script, capsys)
        assert '(default: None)' not in help_text, script.__name__
        assert '(default: ' in help_text, script.__name__
    inference_help = help_of(Inference, capsys)
    assert inference_help.count('(default: {})'.format(Inference.DECODING.tta)) == 1
