"""The ViT API through TestClient: views against the capture, and every kind of bad upload with the
status it must get (413 too big, 415 not a usable image) or, where it can be read, the pixels it
must become (EXIF orientation honoured, transparency on white, 16-bit and CMYK converted)."""

from __future__ import annotations

import base64
import io
import math
import os

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import ROOT, Settings
from app.wire import decode

SHIPPED_VIT = ROOT / "models" / "vit-shapes"
RED, BLUE = (220, 30, 30), (30, 30, 220)


def settings(**kw) -> Settings:
    if "sd" in Settings.model_fields:  # serve no diffusion model here
        kw.setdefault("sd", "")
    return Settings(**kw)


@pytest.fixture(scope="module")
def vc(tiny_gpt2_dir):
    with TestClient(create_app(settings(gpt2=str(tiny_gpt2_dir), vit=str(SHIPPED_VIT)))) as c:
        yield c


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def halves(w: int = 64, h: int = 64, top=RED, bottom=BLUE, mode="RGB") -> Image.Image:
    """Top half one colour, bottom half the other."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2], a[h // 2 :] = top, bottom
    return Image.fromarray(a).convert(mode)


def upload(c, data: bytes, name: str = "x.png", ctype: str = "image/png"):
    return c.post("/api/vision/upload", params={"name": name}, content=data, headers={"Content-Type": ctype})


def seen(r) -> np.ndarray:
    """The picture the model saw, from the answer's data URL, at model resolution."""
    body = r.json()
    raw = base64.b64decode(body["image_url"].split(",", 1)[1])
    img = Image.open(io.BytesIO(raw)).convert("RGB")
    h, w = body["image_size"]
    return np.asarray(img.resize((w, h), Image.Resampling.NEAREST)).astype(int)


def assert_error(r, status: int, *words: str):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail", "request_id"} and body["request_id"] == r.headers["x-request-id"]
    for w in words:
        assert w in body["detail"], body["detail"]


# ---------------------------------------------------------------------------------------------
# Views


def test_models_lists_the_vit(vc):
    v = vc.get("/api/models").json()["vision"]
    assert [m["name"] for m in v] == ["vit-shapes"]
    assert v[0]["image_size"] == [64, 64] and v[0]["patch_size"] == [8, 8] and v[0]["n_labels"] == 8
    assert vc.get(v[0]["card_url"]).text.startswith("---")


def test_gallery_and_trace(vc):
    items = vc.get("/api/vision/gallery").json()["items"]
    assert len(items) >= 6 and items[0]["kind"] == "scene"
    r = vc.post("/api/vision/trace", json={"image": items[0]["id"]})
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["grid"] == [8, 8] and t["n_layers"] == 4 and t["n_heads"] == 4
    assert t["image_url"].startswith("data:image/png;base64,")
    assert len(t["top"]) == 8 and sum(c["prob"] for c in t["top"]) == pytest.approx(1, abs=1e-6)
    # gallery scene 1 is an arrow; the model gets it
    assert items[0]["caption"].endswith("arrow in the centre") and t["top"][0]["label"] == "arrow"
    assert t["name"] == items[0]["caption"] and t["image"] == items[0]["id"]


def test_real_photos_from_scikit_image(vc):
    """./run.sh installs the [photos] extra: the gallery then holds real photos, read offline from the
    scikit-image wheel, and the model reads one like any picture (outside what it learned)."""
    if not os.environ.get("CI"):  # CI installs it through ./run.sh and must never skip this
        pytest.importorskip("skimage")
    from skimage import data

    items = vc.get("/api/vision/gallery").json()["items"]
    photos = [i for i in items if i["kind"] == "photo"]
    assert {p["id"] for p in photos} >= {"photo-astronaut", "photo-coffee"}
    t = vc.post("/api/vision/trace", json={"image": "photo-astronaut"}).json()
    assert sum(c["prob"] for c in t["top"]) == pytest.approx(1, abs=1e-6)
    # what the model sees is the photo squeezed to 64 × 64: compare with an independent resize
    shown = Image.open(io.BytesIO(base64.b64decode(t["image_url"].split(",", 1)[1]))).convert("RGB")
    seen = np.asarray(shown.resize((64, 64), Image.BOX), np.float32)  # the page's picture is the 64 px input, enlarged
    ref = np.asarray(Image.fromarray(data.astronaut()).resize((64, 64), Image.BILINEAR), np.float32)
    assert np.abs(seen - ref).mean() < 12
    other = np.asarray(Image.fromarray(data.coffee()).resize((64, 64), Image.BILINEAR), np.float32)
    assert np.abs(seen - other).mean() > 2 * np.abs(seen - ref).mean()  # the comparison can tell photos apart


def test_attention_head_and_mean(vc):
    heads = [decode(vc.post("/api/vision/attention", json={"image": "scene-2", "layer": 3, "head": h}).json()["attention"])
             for h in range(4)]
    mean = decode(vc.post("/api/vision/attention", json={"image": "scene-2", "layer": 3}).json()["attention"])
    assert heads[0].shape == (65, 65)
    np.testing.assert_allclose(heads[1].sum(-1), 1, atol=5e-3)
    np.testing.assert_allclose(mean, np.mean(heads, axis=0), atol=2e-3)
    assert not np.allclose(heads[0], heads[1])


def test_rollout_rows(vc):
    r = decode(vc.post("/api/vision/rollout", json={"image": "scene-2"}).json()["rollout"])
    assert r.shape == (4, 65)
    np.testing.assert_allclose(r.sum(-1), 1, atol=5e-3)
    # The first layer's rollout keeps at least half of CLS on itself (the identity term).
    assert r[0, 0] >= 0.5 - 1e-3
    p = decode(vc.post("/api/vision/rollout", json={"image": "scene-2", "source": 10}).json()["rollout"])
    assert p[0, 10] >= 0.5 - 1e-3


def test_heads_view(vc):
    h = vc.post("/api/vision/heads", json={"image": "scene-2"}).json()
    d = decode(h["distance"])
    assert d.shape == (4, 4) and (d > 0).all() and (d <= h["max_distance"]).all()
    assert h["max_distance"] == pytest.approx(8 * 7 * math.sqrt(2))
    s = decode(h["position_similarity"])
    assert s.shape == (64, 64)
    np.testing.assert_allclose(np.diag(s), 1, atol=1e-3)


def test_patch_view_is_pixels_times_projection(vc):
    from app.registry import load_vit

    proj = load_vit(str(SHIPPED_VIT)).model.vit.embeddings.patch_embeddings.projection
    p = vc.post("/api/vision/patch", json={"image": "scene-3", "patch": 13}).json()
    assert (p["row"], p["col"]) == (1, 5)
    pixels = decode(p["pixels"])
    assert pixels.shape == (3, 8, 8)
    w = proj.weight.detach().numpy().reshape(128, -1)
    np.testing.assert_allclose(decode(p["embedding"]), w @ pixels.ravel() + proj.bias.detach().numpy(), atol=0.05)
    np.testing.assert_allclose(decode(p["stream"]), decode(p["embedding"]) + decode(p["position"]), atol=0.02)


def test_view_errors(vc):
    assert_error(vc.post("/api/vision/trace", json={"image": "scene-99"}), 404, "gallery")
    assert_error(vc.post("/api/vision/trace", json={"image": "../etc/passwd"}), 422, "image")
    assert_error(vc.post("/api/vision/attention", json={"image": "scene-1", "layer": 4}), 422, "layers 0–3")
    assert_error(vc.post("/api/vision/attention", json={"image": "scene-1", "layer": 0, "head": 9}), 422, "heads 0–3")
    assert_error(vc.post("/api/vision/patch", json={"image": "scene-1", "patch": 64}), 422, "64 patches")
    assert_error(vc.post("/api/vision/rollout", json={"image": "scene-1", "source": 65}), 422, "CLS")
    assert_error(vc.post("/api/vision/trace", json={"image": "u-" + "0" * 24}), 404, "upload it again")
    assert_error(vc.post("/api/vision/trace", json={"image": "scene-1", "model": "vit-huge"}), 404, "vit-shapes")


# ---------------------------------------------------------------------------------------------
# Uploads


@pytest.mark.parametrize("fmt,ctype", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")])
def test_upload_formats(vc, fmt, ctype):
    r = upload(vc, encoded(halves(), fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {})), f"pic.{fmt.lower()}", ctype)
    assert r.status_code == 200, r.text
    px = seen(r)
    assert np.abs(px[5, 32] - RED).max() < 40 and np.abs(px[60, 32] - BLUE).max() < 40
    assert r.json()["original"] == {"format": fmt, "width": 64, "height": 64}
    assert r.json()["name"] == f"pic.{fmt.lower()}"
    # the views then work on the upload's id
    a = vc.post("/api/vision/attention", json={"image": r.json()["image"], "layer": 0, "head": 0})
    assert a.status_code == 200


def test_same_bytes_share_one_trace(vc):
    data = encoded(halves(top=(10, 200, 10)), "PNG")
    first = upload(vc, data).json()["image"]
    computed = vc.app.state.runner.computed
    second = upload(vc, data, name="again.png").json()["image"]
    assert first == second and vc.app.state.runner.computed == computed


def test_exif_orientation_is_honoured(vc):
    """Stored landscape, left red and right blue, with orientation 6 (turn 90° clockwise to view):
    upright it is portrait with red on top, as a phone shows it."""
    a = np.zeros((32, 64, 3), np.uint8)
    a[:, :32], a[:, 32:] = RED, BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    r = upload(vc, encoded(Image.fromarray(a), "JPEG", quality=95, exif=exif), "phone.jpg", "image/jpeg")
    assert r.status_code == 200, r.text
    assert r.json()["original"] == {"format": "JPEG", "width": 32, "height": 64}
    px = seen(r)
    assert np.abs(px[4, 32] - RED).max() < 40, px[4, 32]
    assert np.abs(px[60, 32] - BLUE).max() < 40, px[60, 32]


def test_rgba_transparency_becomes_white(vc):
    a = np.zeros((64, 64, 4), np.uint8)
    a[:32] = (*RED, 255)  # top opaque red, bottom fully transparent (black underneath)
    r = upload(vc, encoded(Image.fromarray(a, "RGBA"), "PNG"))
    assert r.status_code == 200, r.text
    px = seen(r)
    assert np.abs(px[4, 32] - RED).max() < 10 and (px[60, 32] > 245).all()


def test_palette_with_transparency_becomes_white(vc):
    img = halves().convert("P", palette=Image.Palette.ADAPTIVE, colors=2)  # two entries: no dithering
    r = upload(vc, encoded(img, "PNG", transparency=img.getpixel((0, 63))))  # the blue half transparent
    assert r.status_code == 200, r.text
    assert (seen(r)[60, 32] > 245).all()


def test_sixteen_bit_grey(vc):
    a = np.zeros((64, 64), np.uint16)
    a[:32] = 16384  # a quarter of full scale on top (a plain 8-bit cast would clip it to white), black below
    r = upload(vc, encoded(Image.fromarray(a), "PNG"))
    assert r.status_code == 200, r.text
    px = seen(r)
    assert (abs(px[4, 32] - 64) <= 2).all() and (px[60, 32] < 5).all()


def test_grey_and_cmyk(vc):
    r = upload(vc, encoded(halves().convert("L"), "PNG"))
    assert r.status_code == 200, r.text
    px = seen(r)
    assert px[4, 32, 0] == px[4, 32, 1] == px[4, 32, 2]  # grey in, grey out
    cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # full magenta + yellow: red
    r = upload(vc, encoded(cmyk, "JPEG", quality=95), "print.jpg", "image/jpeg")
    assert r.status_code == 200, r.text
    px = seen(r)
    assert px[32, 32, 0] > 200 and px[32, 32, 1] < 60 and px[32, 32, 2] < 60


def test_not_an_image_is_415(vc):
    assert_error(upload(vc, b"%PDF-1.7 definitely not a picture", "doc.pdf", "application/pdf"), 415, "not an image")
    assert_error(upload(vc, b""), 415, "empty")
    assert_error(upload(vc, encoded(halves(), "BMP"), "x.bmp", "image/bmp"), 415, "BMP")


def test_truncated_is_415(vc):
    data = encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "PNG")
    assert_error(upload(vc, data[: len(data) // 2]), 415, "truncated")
    jpeg = encoded(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    assert_error(upload(vc, jpeg[: len(jpeg) // 2], "cut.jpg", "image/jpeg"), 415, "truncated")


def test_animated_gif_is_415_and_a_still_gif_works(vc):
    frames = [halves(top=c) for c in (RED, BLUE, (0, 200, 0))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert_error(upload(vc, data, "anim.gif", "image/gif"), 415, "animated", "3 frames")


def test_over_20_mib_is_413(vc):
    data = encoded(halves(), "PNG") + b"\0" * (20 * 2**20)
    assert_error(upload(vc, data), 413, "20 MiB")


def test_decompression_bomb_is_413(vc):
    """8,000 × 8,000 one-bit pixels compress to a few kB: 64 megapixels, refused by the header alone."""
    data = encoded(Image.new("1", (8000, 8000)), "PNG")
    assert len(data) < 200_000
    assert_error(upload(vc, data, "bomb.png"), 413, "64 megapixels")


def test_limits_are_settings(tiny_gpt2_dir):
    with TestClient(create_app(settings(gpt2=str(tiny_gpt2_dir), vit=str(SHIPPED_VIT), upload_max_bytes=1000,
                                        upload_max_pixels=1000))) as c:
        assert_error(upload(c, encoded(halves(), "PNG") + b"\0" * 1000), 413, "limit")
        assert_error(upload(c, encoded(halves(), "PNG")), 413, "megapixels")


def test_any_vit_checkpoint_is_served(tiny_gpt2_dir, tiny_vit_dir):
    """A random ViT of another size (24 px, 6 px patches, 3 heads) behind the same routes."""
    with TestClient(create_app(settings(gpt2=str(tiny_gpt2_dir), vit=str(tiny_vit_dir)))) as c:
        m = c.get("/api/models").json()["vision"][0]
        assert m["image_size"] == [24, 24] and m["patch_size"] == [6, 6] and m["n_heads"] == 3
        t = c.post("/api/vision/trace", json={"image": "scene-1"}).json()
        assert t["grid"] == [4, 4]
        assert {c_["label"] for c_ in t["top"]} == {"zero", "<b>one</b>", "two"}
        a = decode(c.post("/api/vision/attention", json={"image": "scene-1", "layer": 1, "head": 2}).json()["attention"])
        assert a.shape == (17, 17)
        r = upload(c, encoded(halves(300, 200), "PNG"))
        assert r.status_code == 200 and r.json()["original"]["width"] == 300


def test_an_upload_never_touches_the_disk(vc, monkeypatch):
    """Every way to write a file is booby-trapped while an upload is read, decoded and traced."""
    import builtins
    import os
    import tempfile

    def trap(*a, **k):
        raise AssertionError(f"an upload tried to open a file: {a[:1]}")

    for mod, name in ((builtins, "open"), (os, "open"), (io, "open"), (tempfile, "SpooledTemporaryFile"),
                      (tempfile, "NamedTemporaryFile"), (tempfile, "TemporaryFile"), (tempfile, "mkstemp")):
        monkeypatch.setattr(mod, name, trap)
    r = upload(vc, encoded(halves(top=(0, 90, 200)), "JPEG", quality=90), "kept.jpg", "image/jpeg")
    assert r.status_code == 200, r.text


def test_openapi_documents_the_upload(vc):
    spec = vc.get("/openapi.json").json()
    assert "image/*" in spec["paths"]["/api/vision/upload"]["post"]["requestBody"]["content"]
    assert {"/api/vision/trace", "/api/vision/attention", "/api/vision/rollout", "/api/vision/heads",
            "/api/vision/patch", "/api/vision/gallery"} <= set(spec["paths"])
