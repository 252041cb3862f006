"""The TFRecord schema: one tf.train.Example per axial slice, shared by writer and reader.

Example features (schema version 1)::

    image/raw        bytes   int16 little-endian, [height, width, 4], channels flair,t1,t1c,t2,
                             raw scanner intensities (lossless), or with a histogram
                             normalisation in the sidecar, the standardised intensities
    image/height     int64
    image/width      int64
    image/mean       float[4] per-volume, per-modality mean of image/raw over brain voxels
    image/std        float[4] per-volume, per-modality standard deviation of image/raw over brain voxels
    label/raw        bytes   uint8, [height, width], BRATS labels 0-4
    slice/patient    bytes   patient id (folder name)
    slice/index      int64   axial slice index z in the volume
    slice/tumour     int64   1 when the slice holds any tumour label, else 0
    schema/version   int64   SCHEMA_VERSION

Files are GZIP-compressed and sharded as `<list-name>-<k>-of-<n>.tfrecord`, with a JSON
sidecar `<list-name>.json` describing them (see `sidecar_path`), including the intensity
normalisation they were written with (model.normalization; z-score when absent). Only labelled patients are
converted: the records exist for training, and Inference.py reads volumes directly.
"""
import glob
import json
import os
import re

import numpy as np
import tensorflow.compat.v1 as tf

from model.errors import InputError
from model.normalization import normalize, stored_normalization

SCHEMA_VERSION = 1
NUM_CHANNELS = 4
COMPRESSION = 'GZIP'
COMPRESSION_LEVEL = 1  # 2.5x faster than the default level, about 5 % larger files
_SHARD_NAME = re.compile(r'^(?P<list>.+)-(?P<k>\d{5})-of-(?P<n>\d{5})\.tfrecord$')


def shard_name(list_name, index, count):
    """File name of shard `index` (0-based) of `count`."""
    return '{}-{:05d}-of-{:05d}.tfrecord'.format(list_name, index, count)


def shard_glob(list_name):
    """Glob matching every shard of a list, whatever the shard count."""
    return '{}-*-of-*.tfrecord'.format(list_name)


def sidecar_path(records_dir, list_name):
    """Path of the JSON sidecar; `<list-name>.json` never matches the `<list-name>-*` glob."""
    return os.path.join(records_dir, list_name + '.json')


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def encode_slice(image, label, patient, index, mean, std):
    """Serialise one axial slice.

    Args:
      image: int16 array [height, width, 4].
      label: uint8 array [height, width].
      patient: patient id.
      index: slice index in the volume.
      mean, std: the volume's per-modality statistics (length 4).
    Returns:
      The serialised tf.train.Example.
    Raises:
      ValueError: wrong dtypes or shapes.
    """
    if image.dtype != np.int16 or image.ndim != 3 or image.shape[-1] != NUM_CHANNELS:
        raise ValueError('image slice must be int16 [H, W, 4], got {} {}'.format(image.dtype, image.shape))
    if label.dtype != np.uint8 or label.shape != image.shape[:2]:
        raise ValueError('label slice must be uint8 {}, got {} {}'.format(image.shape[:2], label.dtype, label.shape))
    features = {
        'image/raw': _bytes(image.astype('<i2').tobytes()),
        'image/height': _ints([image.shape[0]]),
        'image/width': _ints([image.shape[1]]),
        'image/mean': _floats(mean),
        'image/std': _floats(std),
        'label/raw': _bytes(label.tobytes()),
        'slice/patient': _bytes(patient.encode('utf-8')),
        'slice/index': _ints([index]),
        'slice/tumour': _ints([int(label.any())]),
        'schema/version': _ints([SCHEMA_VERSION]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)


_FEATURES = {
    'image/raw': tf.io.FixedLenFeature([], tf.string),
    'image/height': tf.io.FixedLenFeature([], tf.int64),
    'image/width': tf.io.FixedLenFeature([], tf.int64),
    'image/mean': tf.io.FixedLenFeature([NUM_CHANNELS], tf.float32),
    'image/std': tf.io.FixedLenFeature([NUM_CHANNELS], tf.float32),
    'label/raw': tf.io.FixedLenFeature([], tf.string),
    'slice/patient': tf.io.FixedLenFeature([], tf.string),
    'slice/index': tf.io.FixedLenFeature([], tf.int64),
    'slice/tumour': tf.io.FixedLenFeature([], tf.int64),
}


def parse_example(serialized):
    """Parse one serialised example into tensors.

    Returns:
      A dict with 'image' (float32 [H, W, 4], normalised by model.normalization),
      'raw' (float32 [H, W, 4], scanner intensities), 'label' (int32 [H, W]),
      'tumour' (int64), 'patient' (string) and 'slice' (int64).
    """
    parsed = tf.io.parse_single_example(serialized, _FEATURES)
    height = tf.cast(parsed['image/height'], tf.int32)
    width = tf.cast(parsed['image/width'], tf.int32)
    raw = tf.reshape(tf.io.decode_raw(parsed['image/raw'], tf.int16, little_endian=True),
                     [height, width, NUM_CHANNELS])
    raw = tf.cast(raw, tf.float32)
    label = tf.reshape(tf.io.decode_raw(parsed['label/raw'], tf.uint8), [height, width])
    return {
        'image': normalize(raw, parsed['image/mean'], parsed['image/std']),
        'raw': raw,
        'label': tf.cast(label, tf.int32),
        'tumour': parsed['slice/tumour'],
        'patient': parsed['slice/patient'],
        'slice': parsed['slice/index'],
    }


def parse_tumour_flag(serialized):
    """Only the `slice/tumour` flag of a serialised example (cheap, for filtering)."""
    return tf.io.parse_single_example(
        serialized, {'slice/tumour': _FEATURES['slice/tumour']})['slice/tumour']


def resolve_records(pattern):
    """Shard files matching a glob, checked against their sidecar.

    Args:
      pattern: a glob such as 'data/records/train-*'.
    Returns:
      (sorted shard paths, sidecar dict).
    Raises:
      InputError: no match, files that are not shards, a missing sidecar, a schema version
        other than SCHEMA_VERSION, or a shard set that differs from the sidecar's.
    """
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise InputError('{}: no TFRecord file matches'.format(pattern))
    names = {}
    for path in paths:
        match = _SHARD_NAME.match(os.path.basename(path))
        if not match:
            raise InputError('{}: not a shard name <list>-<k>-of-<n>.tfrecord'.format(path))
        names.setdefault((os.path.dirname(path), match.group('list')), []).append(os.path.basename(path))
    if len(names) != 1:
        raise InputError('{}: matches shards of several lists: {}'.format(
            pattern, ', '.join(sorted(name for _, name in names))))
    (directory, list_name), found = names.popitem()
    sidecar = read_sidecar(directory, list_name)
    expected = sorted(shard['file'] for shard in sidecar['shards'])
    if sorted(found) != expected:
        raise InputError('{}: shards on disk differ from {} (rerun create_pascal_tf_record.py)'.format(
            pattern, sidecar_path(directory, list_name)))
    return paths, sidecar


def read_sidecar(records_dir, list_name):
    """Load and check a sidecar; raises InputError when missing, unreadable or of another schema."""
    path = sidecar_path(records_dir, list_name)
    try:
        with open(path) as stream:
            sidecar = json.load(stream)
    except FileNotFoundError:
        raise InputError('{}: sidecar missing (rerun create_pascal_tf_record.py)'.format(path)) from None
    except ValueError as error:
        raise InputError('{}: not valid JSON ({})'.format(path, error)) from None
    version = sidecar.get('schema_version')
    if version != SCHEMA_VERSION:
        raise InputError('{}: records have schema version {}, this code reads version {} (rerun '
                         'create_pascal_tf_record.py)'.format(path, version, SCHEMA_VERSION))
    sidecar['normalization'] = stored_normalization(sidecar, path)
    return sidecar
