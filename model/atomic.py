"""Atomic file output: write under a temporary name, rename into place when complete."""
import contextlib
import glob
import os
import re
import shutil

_PARTIAL = re.compile(r'^\.partial-(?P<pid>\d+)-')


def partial_name(path):
    """Temporary name used while `path` is being written; never matches `<name>-*` globs."""
    directory, name = os.path.split(path)
    return os.path.join(directory, '.partial-{}-{}'.format(os.getpid(), name))


def partial_glob(pattern):
    """Glob matching the temporary names of every file that `pattern` matches, any process."""
    directory, name = os.path.split(pattern)
    return os.path.join(directory, '.partial-*-' + name)


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path to write; on success rename it to `path`, on error delete it.

    Keeps the file's extension at the end of the temporary name so that writers that choose
    a format by extension (SimpleITK, matplotlib) still do the right thing. The temporary may
    also be written as a folder (`path` must then not exist yet).
    """
    temporary = partial_name(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


def _remove(path):
    """Delete the file or folder `path` if it exists."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        pass
    return True


def remove_stale_partials(directory):
    """Delete temporary files and folders left in `directory` by processes that no longer run
    (killed writers); returns how many were removed."""
    removed = 0
    for path in glob.glob(os.path.join(directory, '.partial-*')):
        match = _PARTIAL.match(os.path.basename(path))
        if match and not _alive(int(match.group('pid'))):
            _remove(path)
            removed += 1
    return removed
