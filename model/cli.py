"""What every script shares: argparse from its constants, and one-line errors with exit code 2."""
import argparse
import functools
import os
import sys

from model.errors import InputError

EXIT_BAD_INPUT = 2


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends each flag's default to its --help line, unless the line states it in words or the
    default is None (the flag falls back on a constant only when it applies)."""

    def _get_help_string(self, action):
        if action.default is None or 'default ' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


def parser(description):
    """An ArgumentParser that shows defaults in --help."""
    return argparse.ArgumentParser(description=description, formatter_class=DefaultsHelpFormatter)


def graph_mode():
    """Switch TensorFlow to TF1 graph behaviour and silence its deprecation notices."""
    import tensorflow.compat.v1 as tf
    tf.get_logger().setLevel('ERROR')
    tf.disable_v2_behavior()


def on_off(text):
    """Parse on/off, true/false, yes/no or 1/0 (an argparse type)."""
    value = {'on': True, 'true': True, 'yes': True, '1': True,
             'off': False, 'false': False, 'no': False, '0': False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError('expected on or off, got {!r}'.format(text))
    return value


def int_list(text):
    """Parse '12,6,3,1' into a tuple of ints (an argparse type)."""
    try:
        return tuple(int(part) for part in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError('expected comma-separated integers, got {!r}'.format(text))


def float_list(text):
    """Parse '0.9,1,1.1' into a tuple of floats (an argparse type)."""
    try:
        return tuple(float(part) for part in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError('expected comma-separated numbers, got {!r}'.format(text))


def format_float_list(values):
    """'0.9,1,1.1' for (0.9, 1.0, 1.1): the text float_list reads back."""
    return ','.join('{:g}'.format(value) for value in values)


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
