"""A DICOM Segmentation object (highdicom) of the predicted tumour regions on a T1c DICOM series:
one binary segment each for the whole tumour, the tumour core and the enhancing tumour, referencing
the series' instances, so that 3D Slicer, OHIF and a PACS show it over the T1c."""
import highdicom
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from model.atomic import atomic_output
from model.labels import REGION_NAMES, region_mask

REGION_LABELS = {'WT': 'Whole tumour', 'TC': 'Tumour core', 'ET': 'Enhancing tumour'}
SOFTWARE = 'dcr-brain-tumour-segmentation'


def _segment(number, region):
    return highdicom.seg.SegmentDescription(
        segment_number=number, segment_label=REGION_LABELS[region],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=highdicom.AlgorithmIdentificationSequence(
            name='DCR network', family=codes.DCM.ArtificialIntelligence, version='1'))


def segmentation(dicom_files, labels):
    """The Segmentation dataset of `labels` (z, y, x), given on the grid of the series `dicom_files`
    in the same slice order (as SimpleITK's ImageSeriesReader reads them)."""
    sources = [pydicom.dcmread(path) for path in dicom_files]
    masks = np.stack([region_mask(labels, region) for region in REGION_NAMES], axis=-1).astype(np.uint8)
    return highdicom.seg.Segmentation(
        source_images=sources, pixel_array=masks, segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment(number, region) for number, region in enumerate(REGION_NAMES, 1)],
        series_instance_uid=highdicom.UID(), series_number=int(sources[0].get('SeriesNumber') or 0) + 1000,
        sop_instance_uid=highdicom.UID(), instance_number=1, manufacturer='DCR reproduction',
        manufacturer_model_name='DCR', software_versions=SOFTWARE, device_serial_number='0',
        series_description='Tumour segmentation', omit_empty_frames=False)


def write_segmentation(dataset, path):
    """Write a Segmentation dataset atomically."""
    with atomic_output(path) as temporary:
        dataset.save_as(temporary)
