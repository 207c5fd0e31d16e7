"""Export in Chromium against the real server, with the fixtures of test_pages_browser.py (every test
fails on a console error, a page error, a failed request, an unprovoked 4xx/5xx or a dialog): every
figure's modebar shows PNG and SVG downloads; the files are caught as downloads and read (the SVG as
XML, the PNG by its header, the trace with np.load, its numbers against the API's)."""

from __future__ import annotations

import base64
import io
import json
import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest
from PIL import Image

from app.wire import decode
from test_pages_browser import ARTIFACTS, SENTENCE, api, browser, page  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser

SVG_BUTTON = '.modebar-btn[data-title="Download this figure as SVG"]'
PNG_BUTTON = '.modebar-btn[data-title="Download this figure as PNG"]'

# Each page with Plotly figures, and one figure to wait for before looking at them all.
FIGURE_PAGES = [
    ("/text/attention", "heatmap"), ("/text/heads", "grid"), ("/text/next", "heatmap"), ("/text/compare", "chart-b"),
    ("/vision/patches", "embedding"), ("/vision/attention", "matrix"), ("/vision/rollout", "self-chart"),
    ("/vision/heads", "pos-sim"), ("/vision/prediction", "bars"), ("/diffusion/forward", "latents"),
]


def download(page, click) -> tuple[str, bytes]:
    """Do `click`, catch the file the page saves: (its suggested name, its bytes)."""
    with page.expect_download() as info:
        click()
    d = info.value
    assert d.failure() is None, d.failure()
    with open(d.path(), "rb") as f:
        return d.suggested_filename, f.read()


def svg_root(data: bytes) -> ET.Element:
    root = ET.fromstring(data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
    return root


def npz_of(data: bytes) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(io.BytesIO(data)) as npz:
        return {k: npz[k] for k in npz.files if k != "manifest.json"}, json.loads(npz["manifest.json"])


def wait_drawn(page, div: str) -> None:
    page.wait_for_function(f"() => document.querySelector('#{div} .main-svg') !== null")


@pytest.mark.parametrize("path,figure", FIGURE_PAGES, ids=[p for p, _ in FIGURE_PAGES])
def test_every_figure_shows_png_and_svg_downloads(page, path, figure):
    page.goto(path)
    wait_drawn(page, figure)
    page.wait_for_load_state("networkidle")
    figures = page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot')].filter((gd) => !gd._context.staticPlot).map((gd) => gd.id || '?')"
    )
    assert figure in figures
    for gd in figures:
        sel = f"#{gd} " if gd != "?" else ".js-plotly-plot "
        for button in (SVG_BUTTON, PNG_BUTTON):
            assert page.locator(sel + button).first.is_visible(), f"{path} #{gd}: {button} is not visible"
    assert page.locator(".modebar-btn[data-title='Download plot as a png']").count() == 0  # Plotly's own: replaced


def test_attention_svg_png_and_trace_downloads(page, live_server):
    layer, head = 2, 1
    page.goto("/text/attention?" + urlencode({"text": SENTENCE, "layer": layer, "head": head}))
    wait_drawn(page, "heatmap")
    page.wait_for_function("() => !document.getElementById('download-trace').disabled")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "export-attention.png"))
    name, svg = download(page, lambda: page.click(f"#heatmap {SVG_BUTTON}"))
    assert name == f"glassbox-attention-heatmap-L{layer}H{head}.svg"
    root = svg_root(svg)
    assert root.findall(".//{http://www.w3.org/2000/svg}image")  # the heatmap itself, as Plotly draws it
    ticks = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "0·The" in ticks and any(t and t.endswith("·tired") for t in ticks)

    name, png = download(page, lambda: page.click(f"#heatmap {PNG_BUTTON}"))
    assert name == f"glassbox-attention-heatmap-L{layer}H{head}.png"
    img = Image.open(io.BytesIO(png))
    box = page.locator("#heatmap .main-svg").first.bounding_box()
    assert img.format == "PNG" and img.width == pytest.approx(2 * box["width"], abs=4)  # twice the size on screen

    name, data = download(page, lambda: page.click("#download-trace"))
    assert name == "glassbox-text-gpt2-tinystories-the-animal-didn-t-cross-the-street.npz"
    arrays, manifest = npz_of(data)
    assert manifest["input"]["text"] == SENTENCE and set(manifest["arrays"]) == set(arrays)
    view = api(live_server, "/api/text/attention", {"text": SENTENCE, "layer": layer, "head": head}).json()
    np.testing.assert_allclose(decode(view["attention"]), arrays[f"blocks.{layer}.attn.hook_pattern"][head], rtol=2**-11, atol=2**-24)


def test_compare_downloads_each_text_trace(page):
    page.goto("/text/compare?" + urlencode({"a": "The cat sat", "b": "The dog ran far"}))
    page.wait_for_function("() => !document.getElementById('download-trace-b').disabled")
    for side, text in (("a", "The cat sat"), ("b", "The dog ran far")):
        _, data = download(page, lambda: page.click(f"#download-trace-{side}"))
        assert npz_of(data)[1]["input"]["text"] == text


def test_vision_figure_and_trace_downloads(page, live_server):
    page.goto("/vision/attention?" + urlencode({"image": "scene-2", "layer": 1, "head": 2}))
    wait_drawn(page, "image")
    page.wait_for_function("() => !document.getElementById('download-trace').disabled")
    name, svg = download(page, lambda: page.click(f"#image {SVG_BUTTON}"))
    assert name == "glassbox-vision-attention-image-L1H2-scene-2.svg"
    images = svg_root(svg).findall(".//{http://www.w3.org/2000/svg}image")
    assert any((im.get("href") or im.get("{http://www.w3.org/1999/xlink}href") or "").startswith("data:image/png") for im in images)

    name, data = download(page, lambda: page.click("#download-trace"))
    assert name == "glassbox-vision-vit-shapes-scene-2.npz"
    arrays, manifest = npz_of(data)
    assert manifest["input"]["image"] == "scene-2"
    view = api(live_server, "/api/vision/attention", {"image": "scene-2", "layer": 1, "head": 2}).json()
    np.testing.assert_allclose(decode(view["attention"]), arrays["blocks.1.attn.hook_pattern"][2], rtol=2**-11, atol=2**-24)


def test_diffusion_trace_and_picture_downloads(page, live_server):
    body = {"prompt": "a small blue circle", "seed": 7, "steps": 2, "guidance": 4}
    page.goto("/diffusion/generate?" + urlencode(body))
    page.wait_for_function("() => !document.getElementById('download-trace').disabled", timeout=120_000)
    name, data = download(page, lambda: page.click("#download-trace"))
    assert name.startswith("glassbox-diffusion-") and name.endswith("seed-7.npz")
    arrays, manifest = npz_of(data)
    assert manifest["input"]["prompt"] == body["prompt"] and arrays["latent"].shape[0] == manifest["config"]["unet_calls"]
    # the run the page showed, replayed from the server's cache: the same latents
    with httpx.stream("POST", live_server + "/api/diffusion/run", json=body, timeout=120) as r:
        steps = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ") and '"latent"' in line]
    assert len(steps) == arrays["latent"].shape[0]
    for i, s in enumerate(steps):
        np.testing.assert_allclose(decode(s["latent"]), arrays["latent"][i], rtol=2**-11, atol=2**-24)

    page.wait_for_function("() => !document.querySelector('#latent-img + .picture-download').disabled")
    page.screenshot(path=str(ARTIFACTS / "export-diffusion.png"), full_page=True)
    name, png = download(page, lambda: page.click("#latent-img + .picture-download"))
    assert name.startswith("glassbox-diffusion-generate-latent-img-seed7") and name.endswith(".png")
    src = page.evaluate("() => document.getElementById('latent-img').src")
    assert png == base64.b64decode(src.split(",", 1)[1])  # exactly the picture shown


def test_forward_pictures_download_as_shown(page):
    page.goto("/diffusion/forward?" + urlencode({"scene": 3, "t": 400}))
    page.wait_for_function("() => document.getElementById('noisy').src.startsWith('data:image/png')")
    name, png = download(page, lambda: page.click("#noisy + .picture-download"))
    assert name == "glassbox-diffusion-forward-noisy-scene3-t400-seed0.png"
    shown = np.asarray(Image.open(io.BytesIO(png)))
    src = page.evaluate("() => document.getElementById('noisy').src")
    expected = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
    np.testing.assert_array_equal(shown, expected)
