"""Where the scripts read and write by default: the data/ layout of the original README
(relative to the folder they run in), and the network shipped with the project.

Every script's path constants come from here, so that one step finds what the step before it
wrote without any flag.
"""
import os

DATA_DIR = 'data'
LIST_DIR = DATA_DIR + '/lists'
TRAIN_LIST = LIST_DIR + '/train.txt'
VAL_LIST = LIST_DIR + '/val.txt'
TEST_LIST = LIST_DIR + '/test.txt'
RECORDS_DIR = DATA_DIR + '/records'
TRAIN_RECORDS = RECORDS_DIR + '/train-*'
CKPT_DIR = DATA_DIR + '/checkpoints'
PREDICTIONS_DIR = DATA_DIR + '/predictions'
EXPORT_DIR = DATA_DIR + '/export'
# The trained network in the repository, used when CKPT_DIR holds no trained run.
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'pretrained')
