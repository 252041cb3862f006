"""DCR brain-tumour segmentation: data, network, training and evaluation modules."""
