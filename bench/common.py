"""What the benchmarks share: paths, measured child processes, the temporary work folder, the
machine's facts and the rows of the results table.

Every number the benchmarks report is measured here or in a child process; the only constants
are targets and the one labelled reference value of benchmark 1.
"""
import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

from model.cpu import vector_extensions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.normpath(os.path.join(ROOT, '..', 'shared', 'data'))
BRATS2018 = 'brats2018_sample'   # 12 labelled BraTS 2018 cases (NIfTI)
BRATS2015 = 'brats2015_sample'   # 1 unlabelled BRATS2015 test patient (.mha)
PYTHON = sys.executable
MIB = 1024.0 ** 2


class BenchError(RuntimeError):
    """A benchmark could not run (missing data, a child process that failed)."""


def median(values):
    return float(statistics.median(values))


def child_env(extra=None):
    """The environment of child processes: TF's C++ chatter off, and the `extra` variables (a dict).
    Children run in ROOT (python -m bench.<module>, or a script there), which puts the project first
    on their import path."""
    env = dict(os.environ, **(extra or {}))
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    return env


def usable_cpus():
    """CPUs this process may run on (its affinity mask), sorted."""
    return sorted(os.sched_getaffinity(0))


def _tail(path, lines=15):
    try:
        with open(path, errors='replace') as stream:
            text = stream.read().replace('\r', '\n')
    except OSError:
        return ''
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return '\n'.join('    ' + line for line in kept)


def run_measured(command, log_stem, cpus=None, env=None):
    """Run `command` in the project root as a child process and measure it.

    Waits with os.wait4, so the resource usage is this child's own (with its own reaped
    children, e.g. a worker pool), not a maximum over every earlier child.

    Args:
      command: argv list.
      log_stem: path prefix; stdout and stderr go to <log_stem>.out / .err.
      cpus: optional CPU ids to pin the child to (sched_setaffinity before exec).
      env: optional dict of environment variables for the child, beside child_env's.
    Returns:
      dict wall_s, user_s, sys_s, cpu_s, peak_rss_mib.
    Raises:
      BenchError: when the child exits non-zero (with the tail of its stderr).
    """
    os.makedirs(os.path.dirname(log_stem), exist_ok=True)
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    with open(log_stem + '.out', 'w') as out, open(log_stem + '.err', 'w') as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=child_env(env), stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=err, preexec_fn=preexec)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise BenchError('`{}` exited with {}; end of its stderr ({}.err):\n{}'.format(
            ' '.join(os.path.basename(part) if os.path.isabs(part) else part for part in command[:4]),
            process.returncode, log_stem, _tail(log_stem + '.err')))
    return {'wall_s': wall, 'user_s': usage.ru_utime, 'sys_s': usage.ru_stime,
            'cpu_s': usage.ru_utime + usage.ru_stime,
            'peak_rss_mib': usage.ru_maxrss / 1024.0}   # ru_maxrss is in KiB on Linux


def _child_command(module, args, result_path):
    return [PYTHON, '-m', 'bench.' + module] + list(args) + ['--result', result_path]


def run_child(module, args, log_stem, cpus=None, env=None):
    """Run `python -m bench.<module> --child ...` measured; returns (measurement, its result dict)."""
    result_path = log_stem + '.json'
    measured = run_measured(_child_command(module, args, result_path), log_stem, cpus, env)
    with open(result_path) as stream:
        return measured, json.load(stream)


@contextlib.contextmanager
def background_child(module, args, log_stem, env=None, timeout_s=600):
    """Run `python -m bench.<module> --child ...` unmeasured beside the body of the with block
    (another worker of a cluster, say); after it, wait for the child and raise BenchError if it failed."""
    os.makedirs(os.path.dirname(log_stem), exist_ok=True)
    with open(log_stem + '.out', 'w') as out, open(log_stem + '.err', 'w') as err:
        process = subprocess.Popen(_child_command(module, args, log_stem + '.json'), cwd=ROOT, env=child_env(env),
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            yield process
            code = process.wait(timeout_s)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    if code != 0:
        raise BenchError('background child bench.{} exited with {}; end of its stderr ({}.err):\n{}'.format(
            module, code, log_stem, _tail(log_stem + '.err')))


def child_arguments(argv):
    """(the bench's own flags, the script's flags) of a timing child: --child, --repeats and
    --result are the bench's; the rest goes to the script."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--child', action='store_true', required=True)
    parser.add_argument('--repeats', type=int, required=True)
    parser.add_argument('--result', required=True)
    return parser.parse_known_args(argv)


def write_json(path, document):
    with open(path, 'w') as stream:
        json.dump(document, stream, indent=1, sort_keys=True)


class Workspace:
    """The temporary work folder of one run.py invocation, and the inputs benchmarks share.

    Inputs are made on first use: the patient lists, the TFRecords (benchmark 1 hands over
    the records it wrote; otherwise they are converted here, untimed) and a full-width
    checkpoint (a 1-step Train.py run).
    """

    def __init__(self, data_dir=DATA_DIR, keep=False):
        for sample in (BRATS2018, BRATS2015):
            if not os.path.isdir(os.path.join(data_dir, sample)):
                raise BenchError('{}: real sample missing (expected the shared data beside the '
                                 'project; pass --data-dir)'.format(os.path.join(data_dir, sample)))
        self.data_dir = data_dir
        self.keep = keep
        self.root = tempfile.mkdtemp(prefix='dcr-bench-')
        self.records_glob = None
        self.prepared = {}   # measurements of untimed preparation steps, for the record
        self._lists = {}
        self._checkpoint = None

    def path(self, *parts):
        """A path inside the work folder (its parent folder created)."""
        path = os.path.join(self.root, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def folder(self, *parts):
        """A folder inside the work folder, created."""
        path = os.path.join(self.root, *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def cleanup(self):
        if self.keep:
            print('work folder kept: {}'.format(self.root))
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def _list(self, sample, name):
        key = (sample, name)
        if key not in self._lists:
            import readfile
            from model.brats import find_patients
            list_dir = self.folder('lists', sample)
            readfile.write_lists(find_patients([os.path.join(self.data_dir, sample)]), list_dir, 0.0, readfile.SEED)
            self._lists[key] = os.path.join(list_dir, name + '.txt')
            if not os.path.isfile(self._lists[key]):
                raise BenchError('readfile.py wrote no {}.txt for {}'.format(name, sample))
        return self._lists[key]

    def train_list(self):
        """List of the 12 labelled BraTS 2018 cases (readfile.py --val-fraction 0)."""
        return self._list(BRATS2018, 'train')

    def test_list(self):
        """List of the one unlabelled BRATS2015 patient."""
        return self._list(BRATS2015, 'test')

    def records(self):
        """Glob of the training records of the 12 cases (converted here if not yet done)."""
        if self.records_glob is None:
            output = self.folder('records', 'prepared')
            self.prepared['conversion'] = run_measured(
                [PYTHON, 'create_pascal_tf_record.py', '--list', self.train_list(),
                 '--output-dir', output], self.path('logs', 'prepare_records'))
            self.records_glob = os.path.join(output, 'train-*')
        return self.records_glob

    def checkpoint(self, network_flags):
        """A full-width checkpoint folder from a 1-step Train.py run (no validation)."""
        if self._checkpoint is None:
            ckpt = self.folder('checkpoint')
            self.prepared['train_1_step'] = run_measured(
                [PYTHON, 'Train.py', '--train-records', self.records(), '--val-list', '',
                 '--ckpt-dir', ckpt, '--log-dir', os.path.join(ckpt, 'logs'), '--num-steps', '1']
                + list(network_flags), self.path('logs', 'prepare_checkpoint'))
            self._checkpoint = ckpt
        return self._checkpoint


def _cpu_model():
    try:
        with open('/proc/cpuinfo') as stream:
            for line in stream:
                if line.lower().startswith(('model name', 'cpu model', 'hardware')):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib():
    try:
        with open('/proc/meminfo') as stream:
            for line in stream:
                if line.startswith('MemTotal:'):
                    return int(line.split()[1]) / MIB   # kB -> GiB
    except OSError:
        pass
    return None


def _version(*distributions):
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine():
    """Facts about the machine and software the numbers were measured on."""
    return {
        'cpu_model': _cpu_model(),
        'cpu_vector_extensions': vector_extensions(),
        'logical_cores': os.cpu_count(),
        'usable_cores': len(usable_cpus()),
        'memory_gib': _memory_gib(),
        'load_average_1_5_15': list(os.getloadavg()),
        'tensorflow': _version('tensorflow', 'tensorflow-cpu', 'tf-nightly'),
        'numpy': _version('numpy'),
        'simpleitk': _version('SimpleITK', 'simpleitk'),
        'python': platform.python_version(),
        'python_executable': PYTHON,
        'platform': platform.platform(),
        'hostname': platform.node(),
    }


def vector_level(extensions):
    """The widest vector instructions in `extensions` (a machine()'s cpu_vector_extensions), e.g. 'AVX2', for
    the tables that compare rates measured on different CPUs."""
    if 'avx512f' in extensions:
        return 'AVX-512 with bfloat16' if 'avx512_bf16' in extensions else 'AVX-512'
    return 'AVX2' if 'avx2' in extensions else 'no AVX2'


def row(metric, value, unit='', target=None, passed=None, kind=None, digits=2):
    """One table row. kind: 'target' (pass/FAIL from `passed`), 'info' or 'reference'."""
    if kind is None:
        kind = 'target' if passed is not None else 'info'
    if kind == 'target':
        status = 'pass' if passed else 'FAIL'
    else:
        status = '' if kind == 'info' else kind
    if isinstance(value, float):
        text = '{:.{}f}'.format(value, digits)
    else:
        text = str(value)
    return {'metric': metric, 'value': value, 'text': (text + ' ' + unit).strip(),
            'target': target or '', 'status': status}
