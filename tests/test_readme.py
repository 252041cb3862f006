"""README.md: short, and every `python <script>.py ...` command it shows names a script of the
project whose argument parser takes the command's flags."""
import importlib.util
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, 'README.md')
MAX_BYTES = 16 * 1024
COMMAND = re.compile(r'(?:^|`)python3? ([\w/]+\.py(?: [^`\n]*)?)', re.MULTILINE)


def readme_commands():
    """The argument lists of the README's python commands, in order."""
    with open(README, encoding='utf-8') as stream:
        return [shlex.split(match.group(1)) for match in COMMAND.finditer(stream.read())]


def script_module(path):
    """The script at `path` (relative to the project root), imported under a name of its own."""
    spec = importlib.util.spec_from_file_location('readme_' + re.sub(r'\W', '_', path), os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_at_most_16_kb_and_shows_the_pipeline():
    assert os.path.getsize(README) <= MAX_BYTES
    scripts = [argv[0] for argv in readme_commands()]
    for script in ('readfile.py', 'create_pascal_tf_record.py', 'Train.py', 'Inference.py', 'Evaluate.py',
                   'Export.py'):
        assert script in scripts


@pytest.mark.parametrize('argv', readme_commands(), ids=' '.join)
def test_readme_command_names_a_script_whose_flags_parse(argv):
    script = argv[0]
    assert os.path.isfile(os.path.join(ROOT, script)), script
    script_module(script).parse_args(argv[1:])
