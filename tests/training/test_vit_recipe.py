"""The ViT recipe's data: labels match the drawn shapes, and its normalisation is the shipped processor's."""

import numpy as np
from app.shapes import SHAPES
from app.training.vit import Recipe, draw_set, image_processor, to_pixels


def test_training_pixels_equal_what_the_processor_gives_at_serving_time():
    r = Recipe()
    imgs, labels, masks = draw_set(8, 3, r, ramp=True)
    served = image_processor(r)(list(imgs), return_tensors="np")["pixel_values"]
    assert np.abs(served - to_pixels(imgs).numpy()).max() < 1e-5
    assert set(labels) <= set(range(len(SHAPES))) and masks.any(axis=(1, 2)).all()


def test_sets_are_seeded():
    r = Recipe()
    a, b = draw_set(4, 9, r, ramp=False), draw_set(4, 9, r, ramp=False)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(draw_set(4, 10, r, ramp=False)[0], a[0])
