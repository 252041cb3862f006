"""Helpers of the tests that run a script's main(argv) in-process."""
import contextlib
import io
import re


def run_main(script, argv):
    """script.main(argv) in-process, every argument as a string; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = script.main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


def error_line(stderr):
    """The one error line of stderr; anything else there may only be progress bars."""
    lines = [line for line in re.split(r'[\r\n]', stderr) if line.strip()]
    errors = [line for line in lines if ': error: ' in line]
    assert len(errors) == 1, lines
    assert all('%|' in line for line in lines if line not in errors), lines
    return errors[0]
