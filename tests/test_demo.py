"""demo.py: every command it prints runs as printed from the project's folder, with arguments its
entry point accepts, and everything it writes lies in its work folder, which git ignores."""
import importlib.util
import os
import shlex
import subprocess
import sys

import pytest

import demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = 'demo-work'


def program_file(words):
    """The file that `python -m MODULE ...` or `python SCRIPT.py ...` runs from the project's folder."""
    if words[1] == '-m':
        return importlib.util.find_spec(words[2]).origin
    return os.path.join(ROOT, words[1])


@pytest.mark.parametrize('script, argv', demo.steps(WORK), ids=lambda value: getattr(value, '__name__', ''))
def test_each_printed_command_is_an_entry_point_that_accepts_its_arguments(script, argv, capsys):
    words = shlex.split(demo.command_line(script, argv))
    assert words[0] == 'python'
    assert words[3 if words[1] == '-m' else 2:] == argv
    path = program_file(words)
    assert os.path.samefile(path, script.__file__)
    with open(path) as source:
        assert "if __name__ == '__main__':" in source.read()
    # argparse converts and checks each value it meets before --help, which then lists every flag.
    with pytest.raises(SystemExit) as exited:
        script.main(argv + ['--help'])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert all(flag in shown for flag in argv if flag.startswith('--'))


def test_the_phantom_step_runs_as_printed():
    words = shlex.split(demo.command_line(*demo.steps(WORK)[0]))
    assert words[:3] == ['python', '-m', 'model.phantom']
    shown = subprocess.run([sys.executable] + words[1:] + ['--help'], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0 and shown.stdout.startswith('usage: '), shown.stderr[-2000:]


def test_the_demo_writes_only_under_its_work_folder():
    paths = [value for _, argv in demo.steps(WORK) for flag, value in zip(argv, argv[1:])
             if flag in ('--output-dir', '--list-dir', '--ckpt-dir', '--example-png')]
    assert len(paths) == 8
    assert all(path.startswith(WORK + os.sep) for path in paths + list(demo.work_paths(WORK).values()))
    assert not any(readme_copy.startswith(WORK) for readme_copy in demo.README_FIGURES.values())


def test_git_ignores_the_default_work_folder_and_the_virtualenv():
    if not os.path.exists(os.path.join(ROOT, '.git')):
        pytest.skip('not a git checkout')
    for path in (os.path.join(demo.WORK_DIR, 'example.png'), '.venv'):
        checked = subprocess.run(['git', 'check-ignore', '-q', path], cwd=ROOT, timeout=60)
        assert checked.returncode == 0, '{} is not ignored'.format(path)
