"""DCR brain-tumour segmentation: data, network, training and evaluation modules."""
import os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) buries the scripts' own output;
# set TF_CPP_MIN_LOG_LEVEL=0 to see it again.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# TensorFlow uses oneDNN's CPU kernels by default only on CPUs with AVX-512; without them its
# plain kernels train the dilated convolutions through space-to-batch (model/layers.py), which
# measured 1.6x slower on an AVX2-only EPYC. Set TF_ENABLE_ONEDNN_OPTS=0 to opt out.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
