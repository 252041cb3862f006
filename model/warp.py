"""Rotation and zoom of image batches about their centre, by one projective resampling.

Used by the training augmentation (model.input).
Outside the source image the result is zero, the intensity of non-brain voxels after
normalisation.
"""
import math

import tensorflow.compat.v1 as tf


def centre_transform(degrees, scale, height, width):
    """The [1, 8] transform of a rotation by `degrees` and a zoom by `scale` about the centre of
    a height x width image; numbers or scalar float32 tensors.

    As ImageProjectiveTransformV3 expects, it maps each output pixel (x, y) to the input position
    it is sampled from, so centre_transform(-d, 1, ...) undoes centre_transform(d, 1, ...).
    """
    angle = degrees * math.pi / 180.0
    centre_y, centre_x = (height - 1.0) / 2.0, (width - 1.0) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    transform = tf.stack([cos, -sin, centre_x - cos * centre_x + sin * centre_y,
                          sin, cos, centre_y - sin * centre_x - cos * centre_y, 0.0, 0.0])
    return tf.reshape(tf.cast(transform, tf.float32), [1, 8])


def warp(images, transform, interpolation='BILINEAR'):
    """float32 images [N, H, W, C] resampled by `transform` ('BILINEAR' or 'NEAREST'), zero outside;
    the result keeps the images' static shape."""
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transform, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation=interpolation, fill_mode='CONSTANT')
    warped.set_shape(images.shape)
    return warped
