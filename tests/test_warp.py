"""model/warp.py: rotation and zoom about the image centre."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from model import warp


def run(tensor):
    with tf.Graph().as_default(), tf.Session() as session:
        return session.run(tensor())


@pytest.mark.parametrize('height, width', [(6, 6), (4, 8)])
def test_a_quarter_turn_moves_every_pixel_and_its_inverse_restores_them(height, width):
    images = np.random.RandomState(0).rand(2, height, width, 3).astype(np.float32)
    turned, back = run(lambda: (
        warp.warp(tf.constant(images), warp.centre_transform(90.0, 1.0, height, width)),
        warp.warp(warp.warp(tf.constant(images), warp.centre_transform(90.0, 1.0, height, width)),
                  warp.centre_transform(-90.0, 1.0, height, width))))
    centre_y, centre_x = (height - 1) / 2.0, (width - 1) / 2.0
    for y in range(height):
        for x in range(width):   # output (x, y) samples input (centre_x - (y - centre_y), centre_y + (x - centre_x))
            source_y, source_x = int(centre_y + x - centre_x), int(centre_x - y + centre_y)
            inside = 0 <= source_y < height and 0 <= source_x < width
            expected = images[:, source_y, source_x] if inside else 0.0
            np.testing.assert_allclose(turned[:, y, x], expected, atol=1e-6)
    if height == width:
        np.testing.assert_allclose(turned, np.rot90(images, 1, axes=(1, 2)), atol=1e-6)
        np.testing.assert_allclose(back, images, atol=1e-6)


def test_a_zoom_by_two_magnifies_about_the_centre():
    images = np.zeros((1, 9, 9, 1), np.float32)
    images[0, 3, 5, 0] = 1.0          # one pixel up and right of the centre (4, 4) ...
    zoomed = run(lambda: warp.warp(tf.constant(images), warp.centre_transform(0.0, 2.0, 9, 9), 'NEAREST'))
    assert zoomed[0, 2, 6, 0] == 1.0  # ... lands twice as far from it
    assert zoomed[0, 4, 4, 0] == 0.0
