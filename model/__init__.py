"""DCR brain-tumour segmentation: data, network, training and evaluation modules."""
import os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) buries the scripts' own output;
# set TF_CPP_MIN_LOG_LEVEL=0 to see it again.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
