"""Every colour the pages draw with must stay readable with a colour-vision deficiency (a class of 30
has one or two students with one). The scripts are read as text: each `colorscale` must name an
allowed scale, the shared palettes in static/js/common.js are checked by simulating protanopia,
deuteranopia and tritanopia (Machado, Oliveira & Fernandes 2009, severity 1) and measuring the colour
difference left (CIELAB ΔE*76), and no scale known to fail (rainbows, red-green) may appear at all."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from app.settings import ROOT

JS = sorted((ROOT / "static" / "js").glob("*.js"))
COMMON = (ROOT / "static" / "js" / "common.js").read_text()
CSS = (ROOT / "static" / "css" / "style.css").read_text()

# Scales that fail a colour-blind reader: rainbows (no order in lightness, red and green at equal
# lightness) and red-to-green diverging scales. Plotly's and matplotlib's names, any case.
UNSAFE_SCALES = ["jet", "rainbow", "portland", "picnic", "hsv", "turbo", "spectral", "rdylgn", "nipy_spectral", "gist_rainbow"]
# The only names a `colorscale` may use: Plotly's two built-in colour-blind-safe sequential scales,
# and common.js's constants (each checked below by its values).
SAFE_NAMES = {"Viridis", "Cividis"}
SAFE_CONSTANTS = {"SEQUENTIAL", "DIVERGING", "SEE_THROUGH", "CLEAR"}

# Machado et al. 2009, severity 1.0, applied to linear RGB.
CVD = {
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]]),
}
# ΔE*76 below which two colours are easily taken for each other (about 2.3 is "just noticeable").
APART = 12.0
# ColorBrewer's RdBu (11 classes), blue end first: the reference DIVERGING must equal.
RDBU = ["#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f"]


def rgb(colour: str) -> np.ndarray:
    """'#rrggbb', '#rgb' or 'rgb(a)(r, g, b[, a])' -> [0, 1]^3."""
    colour = colour.strip()
    if colour.startswith("#"):
        h = colour[1:]
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        return np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)]) / 255
    m = re.match(r"rgba?\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)", colour)
    assert m, colour
    return np.array([int(m.group(i)) for i in (1, 2, 3)]) / 255


def lab(c: np.ndarray, deficiency: str | None = None) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour, as seen with `deficiency` (None: normal vision)."""
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    if deficiency:
        lin = np.clip(CVD[deficiency] @ lin, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def delta(a: str, b: str, deficiency: str | None) -> float:
    return float(np.linalg.norm(lab(rgb(a), deficiency) - lab(rgb(b), deficiency)))


def js_const(name: str) -> str:
    """The source of `export const NAME = ...;` in common.js."""
    m = re.search(rf"export const {name} = (.*?);\n", COMMON, re.S)
    assert m, f"common.js has no export const {name}"
    return m.group(1)


def colours_in(src: str) -> list[str]:
    return re.findall(r'"(#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3}|rgba?\([^)]*\))"', src)


VIRIDIS = [
    "#%02x%02x%02x" % tuple(int(v) for v in stop)
    for stop in re.findall(r"\[(\d+), (\d+), (\d+)\]", re.search(r"const VIRIDIS = (\[.*?\]);", COMMON, re.S).group(1))
]
CATEGORICAL = colours_in(js_const("CATEGORICAL"))
MARK = colours_in(js_const("MARK"))[0]


def test_no_unsafe_scale_is_named_anywhere():
    for path in JS:
        for name in re.findall(r"""["']([A-Za-z_]+)["']""", path.read_text()):
            assert name.lower() not in UNSAFE_SCALES, f"{path.name} names the {name} colour scale (not colour-blind safe)"


def test_every_colorscale_is_an_allowed_one():
    seen = 0
    for path in JS:
        for m in re.finditer(r"colorscale\s*[:=]\s*([^,;}\n]+)", path.read_text()):
            expr = m.group(1)
            names = re.findall(r"""["']([^"']*)["']""", expr)
            constants = re.findall(r"\b[A-Z][A-Z_]+\b", expr)
            assert names or constants, f"{path.name}: colorscale {expr!r} is neither a named scale nor a common.js constant"
            for n in names:
                assert n in SAFE_NAMES, f"{path.name}: colorscale {n!r} is not one of {sorted(SAFE_NAMES)}"
            for c in constants:
                assert c in SAFE_CONSTANTS, f"{path.name}: colorscale {c} is not one of {sorted(SAFE_CONSTANTS)}"
            seen += 1
    assert seen >= 8  # the pages do draw heatmaps: the pattern still finds them


def test_sequential_is_viridis():
    assert js_const("SEQUENTIAL") == '"Viridis"'


def test_diverging_is_colorbrewer_rdbu_and_its_ends_stay_apart():
    stops = re.findall(r'\[([\d.]+), "(#[0-9a-f]{6})"\]', js_const("DIVERGING"))
    assert [c for _, c in stops] == RDBU
    assert [float(x) for x, _ in stops] == pytest.approx(np.linspace(0, 1, 11).tolist())
    for deficiency in [None, *CVD]:
        # each negative stop against its positive mirror: the sign is never lost
        for i in range(5):
            assert delta(RDBU[i], RDBU[10 - i], deficiency) > APART, (RDBU[i], RDBU[10 - i], deficiency)
        # lightness rises to the white middle from both ends, so |value| reads as lightness too
        light = [lab(rgb(c), deficiency)[0] for c in RDBU]
        assert all(np.diff(light[:6]) > 0) and all(np.diff(light[5:]) < 0), deficiency


def test_see_through_is_viridis_fading_out_and_clear_is_clear():
    src = (ROOT / "static" / "js" / "diffusion.js").read_text()
    see = re.search(r"const SEE_THROUGH = (\[.*?\]);", src).group(1)
    stops = re.findall(r'\[([\d.]+), "rgba\((\d+),\s*(\d+),\s*(\d+),\s*([\d.]+)\)"\]', see)
    assert len(stops) >= 3
    vir = np.array([rgb(c) for c in VIRIDIS])
    for x, r, g, b, _a in stops:
        want = np.array([np.interp(float(x) * 10, np.arange(11), vir[:, k]) for k in range(3)])
        assert np.abs(np.array([int(r), int(g), int(b)]) / 255 - want).max() < 0.03, (x, r, g, b)
    for path in JS:
        for clear in re.findall(r"const CLEAR = (\[.*?\]);", path.read_text()):
            assert all(float(a) == 0 for a in re.findall(r"rgba\([^)]*,\s*([\d.]+)\)", clear)), path.name


@pytest.mark.parametrize("deficiency", [None, *CVD])
def test_categorical_palette_is_told_apart(deficiency):
    assert len(CATEGORICAL) >= 7
    for a, b in itertools.combinations(CATEGORICAL, 2):
        assert delta(a, b, deficiency) > APART, f"{a} and {b} look alike with {deficiency or 'normal vision'}"


def test_a_red_green_pair_would_fail():
    """The test's own check: D3's red and green (Plotly's default colours) are caught, Okabe-Ito's are not."""
    assert delta("#d62728", "#2ca02c", "deuteranopia") < APART < delta("#d62728", "#2ca02c", None)
    assert delta("#d55e00", "#009e73", "deuteranopia") > APART


@pytest.mark.parametrize("deficiency", [None, *CVD])
def test_the_mark_stands_out_on_both_scales_and_beside_blue(deficiency):
    """MARK outlines the followed cell, row or patch on Viridis and on RdBu heatmaps, and sits beside
    CATEGORICAL[0] in the rollout's bars; the CSS's --mark (the lens table's border) is the same."""
    css_marks = {m.lower() for m in re.findall(r"--mark:\s*(#[0-9a-fA-F]{6})", CSS)}
    assert css_marks == {MARK}
    for v in VIRIDIS + RDBU:
        assert delta(MARK, v, deficiency) > APART, (MARK, v, deficiency)
    assert delta(MARK, CATEGORICAL[0], deficiency) > APART


def test_every_palette_array_in_the_scripts_is_told_apart():
    """Any array of plain colour strings in a script (a palette someone adds) passes the same check."""
    for path in JS:
        for arr in re.findall(r"\[((?:\s*\"#[0-9a-fA-F]{3,6}\"\s*,?)+)\]", path.read_text()):
            colours = colours_in(arr)
            for deficiency in CVD:
                for a, b in itertools.combinations(colours, 2):
                    if delta(a, b, None) > APART:  # colours meant to differ must still differ
                        assert delta(a, b, deficiency) > APART, f"{path.name}: {a} and {b} look alike with {deficiency}"
