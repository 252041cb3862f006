"""bench/training.py swaps model.training.train for a timing stand-in: it must take exactly the
arguments Train.py passes, or `make bench` fails only when it is run."""
import inspect

from bench import training as training_bench
from model import training


def parameters(function):
    """(name, default) of each parameter, in order (Train.py passes most of them by position)."""
    return [(name, parameter.default) for name, parameter in inspect.signature(function).parameters.items()]


def test_the_timing_stand_in_takes_the_arguments_of_train():
    stand_in = training_bench._measuring_train('pipeline', steps=1, warmup=0, report={})
    assert parameters(stand_in) == parameters(training.train)
