"""The shape module: images, masks and captions agree with each other and with geometry."""

import math
import random

import numpy as np
import pytest

from app.shapes import COLOURS, SHAPES, Scene, Shape, random_scene, render


def test_circle_mask_area_is_pi_r_squared():
    img, masks = render(Scene([Shape("circle", "red", 0.5, 0.5, 0.3)]), 64)
    assert masks.shape == (1, 64, 64)
    assert abs(masks[0].sum() - math.pi * (0.3 * 64) ** 2) / (math.pi * (0.3 * 64) ** 2) < 0.03


@pytest.mark.parametrize("shape", SHAPES)
def test_mask_pixels_have_the_object_colour_and_the_rest_is_background(shape):
    img, masks = render(Scene([Shape(shape, "blue", 0.5, 0.5, 0.3, rotation=20)]), 64)
    a = np.asarray(img).astype(int)
    inside = a[masks[0]]
    assert len(inside) > 150
    assert np.abs(np.median(inside, axis=0) - COLOURS["blue"]).max() <= 2
    outside = a[~masks[0]]
    assert (np.abs(outside - 245).max(axis=1) <= 2).mean() > 0.9  # edges aside, untouched background


def test_ring_has_a_hole():
    _, masks = render(Scene([Shape("ring", "green", 0.5, 0.5, 0.3)]), 64)
    assert not masks[0][32, 32] and masks[0][32, 32 + int(0.3 * 64 * 0.8)]


def test_caption_names_shape_colour_size_and_the_region_of_the_centre():
    assert Shape("star", "red", 0.1, 0.1, 0.17).words() == "a small red star at the top left"
    assert Shape("heart", "orange", 0.5, 0.5, 0.3).words() == "a large orange heart in the centre"
    assert Shape("arrow", "purple", 0.9, 0.5, 0.3).words() == "a large purple arrow at the right"


def test_scenes_are_seeded_and_objects_stay_inside_and_apart():
    a = [random_scene(random.Random(7), n_objects=2).caption() for _ in range(2)]
    assert a[0] == a[1]
    rng = random.Random(1)
    for _ in range(200):
        sc = random_scene(rng, n_objects=2)
        o, p = sc.objects
        assert math.hypot(o.cx - p.cx, o.cy - p.cy) >= o.radius + p.radius
        for s in sc.objects:
            assert s.radius <= s.cx <= 1 - s.radius and s.radius <= s.cy <= 1 - s.radius
    _, masks = render(sc, 32)
    assert not np.any(masks[0] & masks[1])
