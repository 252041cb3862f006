"""The one exception type for bad input: scripts turn it into a one-line error and exit 2."""


class InputError(ValueError):
    """Bad input (data, lists, checkpoints, settings); the message names the file and the problem."""
