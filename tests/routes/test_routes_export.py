"""The export endpoints: the .npz each answers opens with plain numpy, its manifest lists every array
with its shape, and its numbers are the ones the views of the same trace send (decoded here from the
float16 wire independently of app.wire): attention of every layer and head, ViT patterns and pixels,
a diffusion run's streamed latents, x̂₀, noise and word maps."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from app.capture import text as text_capture
from app.capture import vision as vision_capture

SENTENCE = "The animal didn't cross the street because it was too tired"
RUN = {"prompt": "a red star at the top left", "seed": 3, "steps": 3, "guidance": 5.0}


def f16(arr: dict) -> np.ndarray:
    assert arr["dtype"] == "float16"
    return np.frombuffer(base64.b64decode(arr["data"]), dtype="<f2").astype(np.float32).reshape(arr["shape"])


def near_f16(exported: np.ndarray, wire: np.ndarray) -> None:
    """The float32 export against the float16 view: equal up to float16's rounding (2⁻¹¹ relative)."""
    assert exported.dtype == np.float32 and exported.shape == wire.shape
    np.testing.assert_allclose(wire, exported, rtol=2**-11, atol=2**-24)


def load(r) -> tuple[dict[str, np.ndarray], dict]:
    """The answer as a notebook reads the file: np.load, no pickle, manifest.json as bytes."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"].startswith('attachment; filename="glassbox-')
    with np.load(io.BytesIO(r.content)) as npz:  # allow_pickle is False by default
        manifest = json.loads(npz["manifest.json"])
        arrays = {k: npz[k] for k in npz.files if k != "manifest.json"}
    return arrays, manifest


def check_manifest(arrays: dict[str, np.ndarray], manifest: dict, family: str) -> None:
    assert manifest["format"] == "glassbox-trace/1" and manifest["family"] == family
    assert manifest["glassbox"] and manifest["created"].endswith("+00:00")
    assert set(manifest["arrays"]) == set(arrays)
    for name, a in arrays.items():
        entry = manifest["arrays"][name]
        assert entry["shape"] == list(a.shape) and entry["dtype"] == str(a.dtype), name
        assert entry["meaning"].startswith("["), name  # every meaning opens with the array's axes


@pytest.fixture(scope="module")
def text_export(client):
    return load(client.post("/api/text/export", json={"text": SENTENCE}))


def test_text_export_holds_every_hook_and_the_manifest_says_what_each_is(client, text_export):
    arrays, manifest = text_export
    check_manifest(arrays, manifest, "text")
    trace = client.post("/api/text/trace", json={"text": SENTENCE}).json()
    L = trace["n_layers"]
    assert list(arrays)[: len(text_capture.hook_names(L))] == text_capture.hook_names(L)
    assert manifest["model"] == trace["model"] and manifest["input"]["text"] == SENTENCE
    assert manifest["input"]["tokens"] == [t["text"] for t in trace["tokens"]]
    assert arrays["token_ids"].tolist() == [t["id"] for t in trace["tokens"]]
    assert manifest["arrays"]["blocks.1.attn.hook_pattern"]["meaning"].startswith("[head, query_pos, key_pos]")
    # the next-token logits: the ones the trace's top 10 reports
    for cand in trace["top"]:
        assert arrays["logits"][cand["id"]] == pytest.approx(cand["logit"], rel=1e-5)
    assert int(np.argmax(arrays["logits"])) == trace["top"][0]["id"]


def test_text_export_attention_equals_the_attention_view_for_every_head(client, text_export):
    arrays, manifest = text_export
    cfg = manifest["config"]
    for layer in range(cfg["n_layers"]):
        pattern = arrays[f"blocks.{layer}.attn.hook_pattern"]
        assert pattern.shape == (cfg["n_heads"], len(arrays["token_ids"]), len(arrays["token_ids"]))
        for head in range(cfg["n_heads"]):
            view = client.post("/api/text/attention", json={"text": SENTENCE, "layer": layer, "head": head}).json()
            near_f16(pattern[head], f16(view["attention"]))


def test_text_export_q_k_v_equal_the_head_view(client, text_export):
    arrays, _ = text_export
    view = client.post("/api/text/head", json={"text": SENTENCE, "layer": 2, "head": 3}).json()
    for name in ("q", "k", "v", "z"):
        near_f16(arrays[f"blocks.2.attn.hook_{name}"][3], f16(view[name]))
    near_f16(arrays["blocks.2.ln1.hook_normalized"], f16(view["x"]))


def test_text_export_of_a_bad_text_says_why(client):
    r = client.post("/api/text/export", json={"text": ""})
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = client.post("/api/text/export", json={"text": "x", "model": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_vision_export_patterns_and_pixels_equal_the_views(client):
    arrays, manifest = load(client.post("/api/vision/export", json={"image": "scene-1"}))
    check_manifest(arrays, manifest, "vision")
    trace = client.post("/api/vision/trace", json={"image": "scene-1"}).json()
    assert manifest["input"]["image"] == "scene-1" and manifest["model"] == trace["model"]
    assert list(arrays)[: len(vision_capture.hook_names(trace["n_layers"]))] == vision_capture.hook_names(trace["n_layers"])
    for layer in range(trace["n_layers"]):
        for head in [*range(trace["n_heads"]), None]:
            view = client.post("/api/vision/attention", json={"image": "scene-1", "layer": layer, "head": head}).json()
            pattern = arrays[f"blocks.{layer}.attn.hook_pattern"]
            near_f16(pattern.mean(axis=0) if head is None else pattern[head], f16(view["attention"]))
    p = client.post("/api/vision/patch", json={"image": "scene-1", "patch": 5}).json()
    ph, pw = trace["patch_size"]
    r, c = p["row"], p["col"]
    near_f16(arrays["pixel_values"][:, r * ph : (r + 1) * ph, c * pw : (c + 1) * pw], f16(p["pixels"]))
    near_f16(arrays["hook_patch_embed"][5], f16(p["embedding"]))
    assert arrays["image"].dtype == np.uint8 and arrays["image"].shape == (*trace["image_size"], 3)
    probs = np.exp(arrays["logits"] - arrays["logits"].max())
    probs /= probs.sum()
    assert trace["top"][0]["label"] == manifest["labels"][int(np.argmax(probs))]
    assert trace["top"][0]["prob"] == pytest.approx(float(probs.max()), rel=1e-5)


def test_vision_export_of_an_unknown_picture_is_404(client):
    r = client.post("/api/vision/export", json={"image": "u-0123456789abcdef01234567"})
    assert r.status_code == 404 and "upload it again" in r.json()["detail"]


def streamed_steps(sd_client, body: dict) -> tuple[dict, list[dict]]:
    text = sd_client.post("/api/diffusion/run", json=body).text
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    assert events[-1][0] == "done", events[-1]
    return events[0][1], [d for e, d in events if e == "step"]


def test_diffusion_export_is_404_until_the_run_is_cached_and_never_runs_it(sd_client):
    streams = sd_client.app.state.streams
    computed = streams.computed
    r = sd_client.post("/api/diffusion/export", json={**RUN, "seed": 99})
    assert r.status_code == 404 and "run it" in r.json()["detail"]
    assert streams.computed == computed and streams.pending == 0


def test_diffusion_export_equals_the_streamed_run(sd_client):
    head, steps = streamed_steps(sd_client, RUN)
    computed = sd_client.app.state.streams.computed
    arrays, manifest = load(sd_client.post("/api/diffusion/export", json=RUN))
    assert sd_client.app.state.streams.computed == computed  # read from the cache, not run again
    check_manifest(arrays, manifest, "diffusion")
    assert manifest["input"]["prompt"] == RUN["prompt"] and manifest["input"]["seed"] == RUN["seed"]
    n = len(steps)
    assert n == head["steps"] and arrays["latent"].shape[0] == n and arrays["timestep"].tolist() == [s["timestep"] for s in steps]
    for i, s in enumerate(steps):
        for name in ("latent", "x0", "noise", "noise_cond", "noise_uncond"):
            near_f16(arrays[name][i], f16(s[name]))
        # the stream sends the real tokens' maps and the padding's summed into one
        words = f16(s["words"])
        T = head["n_tokens"]
        near_f16(arrays["words"][i, :T], words[:T])
        if words.shape[0] > T:
            np.testing.assert_allclose(words[T], arrays["words"][i, T:].sum(0), rtol=2e-3, atol=1e-3)
    layers = [k for k in arrays if k.startswith("cross_attention.")]
    assert layers and all(arrays[k].dtype == np.float16 and arrays[k].shape[0] == n for k in layers)
    view = sd_client.post("/api/diffusion/layers", json={**RUN, "step": 1}).json()
    for name, arr in view["layers"].items():
        np.testing.assert_array_equal(arrays[f"cross_attention.{name}"][1].astype(np.float32), f16(arr))
    assert arrays["image"].dtype == np.uint8 and arrays["image"].shape == (head["image_size"], head["image_size"], 3)
