"""Coloured geometric shapes: (shape, colour, size, position) -> image + caption + object masks.

The data of the image models (issue 4: the ViT classifies the shape; issue 5: Stable Diffusion draws
it from the caption) and the ground truth their attention is judged against (the masks). Drawn with
Pillow at 4× and box-downsampled, so edges are anti-aliased at 32–64 px; seeded, no downloads.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "ring", "arrow")
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 210),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 170),
    "orange": (240, 130, 20),
}
SIZES = {"small": (0.16, 0.22), "large": (0.26, 0.34)}  # radius as a fraction of the image side
# 3 × 3 regions of the image; "centre" is the middle one.
POSITIONS = {
    (col, row): name
    for (col, row), name in zip(
        [(c, r) for r in range(3) for c in range(3)],
        ["top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right"],
    )
}
BACKGROUND = (245, 245, 245)
SUPERSAMPLE = 4


@dataclass
class Shape:
    shape: str
    colour: str
    cx: float  # centre, fractions of the image side (0..1)
    cy: float
    radius: float  # fraction of the image side
    rotation: float = 0.0  # degrees

    @property
    def size(self) -> str:
        return "small" if self.radius < (SIZES["small"][1] + SIZES["large"][0]) / 2 else "large"

    @property
    def position(self) -> str:
        return POSITIONS[(min(int(self.cx * 3), 2), min(int(self.cy * 3), 2))]

    def words(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} at the {self.position}".replace("at the centre", "in the centre")


@dataclass
class Scene:
    objects: list[Shape]
    background: tuple[int, int, int] = BACKGROUND
    noise: float = 0.0  # std of Gaussian pixel noise, in 0..255 units
    distractors: list[tuple[float, float, float]] = field(default_factory=list)  # small grey dots (x, y, r)

    def caption(self) -> str:
        return " and ".join(o.words() for o in self.objects)


def outline(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    """The polygon of a shape (not circle or ring), in pixels, rotated by rot degrees about its centre."""
    if shape == "square":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        pts = [(x * 0.8, y * 0.8) for x, y in pts]  # a square of "radius" r fills about as much as a circle
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (math.radians(-90 + 120 * i) for i in range(3))]
    elif shape == "star":
        pts = [
            ((1.0 if i % 2 == 0 else 0.45) * math.cos(a), (1.0 if i % 2 == 0 else 0.45) * math.sin(a))
            for i, a in enumerate(math.radians(-90 + 36 * i) for i in range(10))
        ]
    elif shape == "cross":
        w = 0.33
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
    elif shape == "heart":
        # the classic parametric heart, scaled to fit the unit circle
        pts = []
        for i in range(48):
            t = 2 * math.pi * i / 48
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            pts.append((x / 17, (y + 2.5) / 17))
    elif shape == "arrow":
        pts = [(-1, -0.3), (0.2, -0.3), (0.2, -0.75), (1, 0), (0.2, 0.75), (0.2, 0.3), (-1, 0.3)]
    else:
        raise ValueError(f"no outline for {shape!r}; shapes are {', '.join(SHAPES)}")
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _draw(draw: ImageDraw.ImageDraw, o: Shape, side: int, fill, hole) -> None:
    cx, cy, r = o.cx * side, o.cy * side, o.radius * side
    if o.shape in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        if o.shape == "ring":
            ri = r * 0.55
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=hole)
    else:
        draw.polygon(outline(o.shape, cx, cy, r, o.rotation), fill=fill)


def render(scene: Scene, size: int, seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """The RGB image and one mask per object ([n_objects, size, size] bool: the pixels it covers,
    later objects drawn over earlier ones)."""
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), scene.background)
    draw = ImageDraw.Draw(img)
    for x, y, r in scene.distractors:
        draw.ellipse([(x - r) * big, (y - r) * big, (x + r) * big, (y + r) * big], fill=(200, 200, 200))
    masks = []
    for o in scene.objects:
        _draw(draw, o, big, COLOURS[o.colour], scene.background)
        m = Image.new("L", (big, big), 0)
        _draw(ImageDraw.Draw(m), o, big, 255, 0)
        masks.append(m)
    img = img.resize((size, size), Image.Resampling.BOX)
    arr_masks = np.stack([np.asarray(m.resize((size, size), Image.Resampling.BOX)) >= 128 for m in masks])
    for i in range(len(arr_masks)):  # what a later object covers is no longer the earlier one's
        for later in arr_masks[i + 1 :]:
            arr_masks[i] &= ~later
    if scene.noise:
        rng = np.random.default_rng(seed)
        a = np.asarray(img, dtype=np.float32) + rng.normal(0, scene.noise, (size, size, 3))
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return img, arr_masks


def random_scene(
    rng: random.Random,
    n_objects: int = 1,
    shapes: tuple[str, ...] = SHAPES,
    colours: tuple[str, ...] = tuple(COLOURS),
    noise: float = 0.0,
    n_distractors: int = 0,
) -> Scene:
    """Objects at random sizes, positions and rotations, kept inside the image and apart."""
    objects: list[Shape] = []
    while len(objects) < n_objects:
        size = rng.choice(list(SIZES))
        r = rng.uniform(*SIZES[size]) * (0.8 if n_objects > 1 else 1.0)
        cx, cy = rng.uniform(r, 1 - r), rng.uniform(r, 1 - r)
        if any(math.hypot(cx - o.cx, cy - o.cy) < r + o.radius for o in objects):
            continue
        objects.append(Shape(rng.choice(shapes), rng.choice(colours), cx, cy, r, rng.uniform(0, 360)))
    distractors = [(rng.random(), rng.random(), rng.uniform(0.01, 0.025)) for _ in range(n_distractors)]
    return Scene(objects, noise=noise, distractors=distractors)
