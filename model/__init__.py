"""DCR brain-tumour segmentation: data, network, training and evaluation modules."""
import os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) buries the scripts' own output;
# set TF_CPP_MIN_LOG_LEVEL=0 to see it again.
# In a TF_CONFIG cluster, a worker that goes away makes every pending collective op log its abort
# (dozens of gRPC error lines); Train.py reports the lost worker in one line instead.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3' if os.environ.get('TF_CONFIG', '').strip() else '2')
# TensorFlow uses oneDNN's CPU kernels by default only on CPUs with AVX-512; without them its
# plain kernels train the dilated convolutions through space-to-batch (model/layers.py), which
# measured 1.6x slower on an AVX2-only EPYC. Set TF_ENABLE_ONEDNN_OPTS=0 to opt out.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
