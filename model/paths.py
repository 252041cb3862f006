"""Where the scripts read and write by default: the data/ layout of the original README.

Every script's path constants come from here, so that one step finds what the step before it
wrote without any flag.
"""
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
