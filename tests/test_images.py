"""app/images.py without HTTP: the gallery (and its optional photos) and the mode conversions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app import images


def test_gallery_scenes_are_seeded():
    a = images.gallery_picture("scene-4", 64)
    b = images.gallery_picture("scene-4", 64)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and a.image.size == (64, 64)
    assert a.name == next(i["caption"] for i in images.gallery() if i["id"] == "scene-4")
    with pytest.raises(KeyError):
        images.gallery_picture("scene-99", 64)


def test_photos_appear_only_when_scikit_image_can_give_them(monkeypatch):
    class FakeData:  # stands in for skimage.data: one photo loads, one would need a download
        @staticmethod
        def astronaut():
            return np.full((40, 30, 3), 200, np.uint8)

        @staticmethod
        def chelsea():
            raise OSError("would download from the internet")

    images._photo.cache_clear()
    monkeypatch.setattr(images, "_skimage_data", lambda: FakeData)
    try:
        ids = [i["id"] for i in images.gallery()]
        assert "photo-astronaut" in ids and "photo-chelsea" not in ids and "photo-coffee" not in ids
        pic = images.gallery_picture("photo-astronaut", 64)
        assert pic.image.size == (30, 40) and pic.format == "photo"
        with pytest.raises(KeyError):
            images.gallery_picture("photo-chelsea", 64)
    finally:
        images._photo.cache_clear()


def test_without_scikit_image_the_gallery_is_scenes(monkeypatch):
    images._photo.cache_clear()
    monkeypatch.setattr(images, "_skimage_data", lambda: None)
    try:
        assert {i["kind"] for i in images.gallery()} == {"scene"}
    finally:
        images._photo.cache_clear()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "LAB", "HSV"])
def test_every_mode_becomes_rgb(mode):
    img = Image.new("RGB", (8, 8), (200, 100, 50)).convert(mode) if mode not in ("I", "I;16", "F") else Image.new(mode, (8, 8))
    out = images.to_rgb(img)
    assert out.mode == "RGB" and out.size == (8, 8)
