"""What every script shares: argparse from its constants, and one-line errors with exit code 2."""
import argparse
import functools
import os
import sys

from model.errors import InputError

EXIT_BAD_INPUT = 2


def parser(description):
    """An ArgumentParser that shows defaults in --help."""
    return argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def int_list(text):
    """Parse '12,6,3,1' into a tuple of ints (an argparse type)."""
    try:
        return tuple(int(part) for part in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError('expected comma-separated integers, got {!r}'.format(text))


def reports_bad_input(main):
    """Wrap a script's main(argv) so bad input prints one line to stderr and returns 2."""
    @functools.wraps(main)
    def wrapped(argv=None):
        script = os.path.basename(sys.argv[0]) if argv is None else main.__module__
        try:
            return main(argv)
        except InputError as error:
            print('{}: error: {}'.format(script, error), file=sys.stderr)
        except OSError as error:
            print('{}: error: {}: {}'.format(script, error.filename or '', error.strerror or error),
                  file=sys.stderr)
        return EXIT_BAD_INPUT
    return wrapped
