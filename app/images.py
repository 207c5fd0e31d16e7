"""Images in: uploaded bytes -> a checked RGB picture, and the gallery. No torch, no HTTP.

Uploads are read into memory and decoded there; nothing is ever written to disk. What Pillow can
open is not all we accept (issue 4, "Bad input"):

1. more than `max_bytes` bytes, or more than `max_pixels` pixels by the header (a decompression
   bomb: a tiny PNG can claim 100 000 × 100 000 pixels) -> 413, before any pixel is decoded;
2. not PNG/JPEG/WebP/GIF, or a file that ends early (truncated) -> 415;
3. an animated image (GIF, APNG, WebP with more than one frame) -> 415: the explorer reads one
   picture, and quietly taking the first frame would show attention over a frame the user never
   chose. A still GIF is fine;
4. EXIF orientation is applied (phone photos stand the right way up), then every mode becomes
   8-bit RGB: CMYK and palette by Pillow's conversion, 16-bit grey scaled to 8 bits, transparency
   composited on white.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.shapes import random_scene, render

log = logging.getLogger(__name__)
FORMATS = {"PNG", "JPEG", "WEBP", "GIF"}
WHITE = (255, 255, 255)
ORIENTATION = 0x0112  # the EXIF tag


class ImageRejected(ValueError):
    """An upload we do not read; `status` is the HTTP answer (413 too big, 415 not a usable image)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Picture:
    image: Image.Image  # RGB, upright
    name: str  # what the user called it (a file name) or the gallery's name: shown via textContent only
    format: str  # PNG, JPEG, WEBP, GIF, or "scene" / "photo" for the gallery
    width: int  # as uploaded (after EXIF rotation), before any resizing
    height: int


def upload_id(data: bytes) -> str:
    """Same bytes, same id: thirty students uploading the same file share one trace."""
    return "u-" + hashlib.sha256(data).hexdigest()[:24]


def read_upload(data: bytes, name: str, max_bytes: int, max_pixels: int, shrink_to: int = 0) -> Picture:
    """Bytes -> upright RGB Picture, or ImageRejected. `shrink_to`: if the picture is more than twice
    this on its short side, box-reduce it by an integer factor first (the model resizes it to its own
    size anyway; a 50-megapixel photo as float32 would take 600 MB in the image processor)."""
    # 1. Size in bytes, then the header: open() reads only the header, so a bomb costs nothing yet.
    if len(data) > max_bytes:
        raise ImageRejected(413, f"The file is {len(data) / 2**20:.1f} MiB; uploads are limited to {max_bytes / 2**20:.0f} MiB.")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected(415, "This file is not an image glassbox can read: upload a PNG, JPEG or WebP.") from None
    except Image.DecompressionBombError as e:  # Pillow's own guard, in case its limit is below ours
        raise ImageRejected(413, f"The image has too many pixels: {e}") from None
    if img.format not in FORMATS:
        raise ImageRejected(415, f"{img.format} images are not accepted: upload a PNG, JPEG or WebP.")
    w, h = img.size
    if w * h > max_pixels:
        raise ImageRejected(
            413, f"The image is {w} × {h} = {w * h / 1e6:.0f} megapixels; the limit is {max_pixels / 1e6:.0f} megapixels."
        )
    # 2. Animation: refuse rather than silently pick a frame (see the module docstring).
    if getattr(img, "n_frames", 1) > 1:
        raise ImageRejected(415, f"This is an animated {img.format} ({img.n_frames} frames): upload a single still image.")
    # 3. Decode. A file cut short raises OSError here ("image file is truncated"), a corrupt one others.
    try:
        if img.format == "JPEG" and shrink_to:
            img.draft("RGB", (2 * shrink_to, 2 * shrink_to))  # let libjpeg decode at 1/2..1/8 scale
        img.load()
    except Image.DecompressionBombError as e:
        raise ImageRejected(413, f"The image has too many pixels: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageRejected(415, f"The image could not be decoded (a truncated or damaged file?): {e}") from None
    fmt = img.format
    # 4. Upright, then RGB. EXIF orientations 5-8 turn the picture a quarter: its size as the user
    # sees it is the stored one swapped (a portrait phone photo is stored landscape).
    width, height = (h, w) if img.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8) else (w, h)
    img = to_rgb(ImageOps.exif_transpose(img))
    if shrink_to:
        factor = min(img.size) // (2 * shrink_to)
        if factor >= 2:
            img = img.reduce(factor)
    return Picture(image=img, name=name, format=fmt, width=width, height=height)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparent pixels become white (what a page behind them shows)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        # 16-bit grey spans 0..65535; 32-bit integer or float images have no fixed range: stretch theirs.
        top = 65535.0 if img.mode.startswith("I;16") else max(float(a.max()), 1.0)
        lo = 0.0 if img.mode.startswith("I;16") else min(float(a.min()), 0.0)
        img = Image.fromarray(np.clip((a - lo) / (top - lo) * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def png_data_url(pixels: np.ndarray, min_side: int = 256) -> str:
    """uint8 [H, W, 3] -> a PNG data: URL, enlarged by an integer factor with nearest neighbours so a
    64 px input shows its pixels sharp on the page (the browser would blur them)."""
    img = Image.fromarray(pixels)
    k = max(1, min_side // max(1, min(img.size)))
    if k > 1:
        img = img.resize((img.size[0] * k, img.size[1] * k), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------------------------
# The gallery: seeded shape scenes (app/shapes.py), plus scikit-image's bundled photos when that
# package is installed (the optional extra glassbox[photos]: it brings scipy and more, ~100 MB, for
# a few pictures); without it the gallery has scenes only.

SCENES = {  # id -> (name, seed, objects, noise, distractors): in-domain first, then harder ones
    "scene-1": ("one shape", 11, 1, 0.0, 0),
    "scene-2": ("one shape", 12, 1, 0.0, 0),
    "scene-3": ("one shape", 13, 1, 0.0, 0),
    "scene-4": ("one shape, noise and dots", 14, 1, 6.0, 3),
    "scene-5": ("two shapes (out of domain)", 15, 2, 0.0, 0),
    "scene-6": ("three shapes (out of domain)", 16, 3, 0.0, 0),
}
PHOTOS = {  # id -> skimage.data function: photos shipped inside the scikit-image wheel
    "photo-astronaut": "astronaut",
    "photo-chelsea": "chelsea",
    "photo-coffee": "coffee",
    "photo-rocket": "rocket",
}


def _skimage_data():
    try:
        from skimage import data  # optional, see above
    except ImportError:
        return None
    return data


@lru_cache(maxsize=len(PHOTOS))
def _photo(gid: str) -> Image.Image | None:
    """A sample photo, or None when scikit-image is missing or would have to download it (no internet)."""
    data = _skimage_data()
    if gid not in PHOTOS or data is None:
        return None
    try:
        return to_rgb(Image.fromarray(getattr(data, PHOTOS[gid])()))
    except Exception:  # noqa: BLE001 - a missing file, a pooch download refused offline: no photo
        log.info("scikit-image photo %s is not available", PHOTOS[gid])
        return None


def gallery() -> list[dict]:
    """id, name, kind and caption of every gallery picture."""
    items = []
    for gid, (name, seed, n, noise, dots) in SCENES.items():
        scene = random_scene(random.Random(seed), n_objects=n, noise=noise, n_distractors=dots)
        items.append({"id": gid, "name": name, "kind": "scene", "caption": scene.caption()})
    for gid, fn in PHOTOS.items():
        if _photo(gid) is not None:
            items.append({"id": gid, "name": fn, "kind": "photo", "caption": f"scikit-image sample photo “{fn}”"})
    return items


def gallery_picture(gid: str, size: int) -> Picture:
    """A gallery picture drawn (scenes) or loaded (photos) at `size` px; KeyError if there is none."""
    if gid in SCENES:
        name, seed, n, noise, dots = SCENES[gid]
        scene = random_scene(random.Random(seed), n_objects=n, noise=noise, n_distractors=dots)
        img, _ = render(scene, max(size, 32), seed=seed)
        return Picture(image=img, name=scene.caption(), format="scene", width=img.size[0], height=img.size[1])
    img = _photo(gid)
    if img is None:
        raise KeyError(gid)
    return Picture(image=img, name=f"scikit-image sample photo “{PHOTOS[gid]}”", format="photo", width=img.size[0], height=img.size[1])
