"""app.notebook: the same arrays, under the same names, as the server's download for the same input
(text, gallery picture, uploaded file, prompt), and a saved file that reads back as it was."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from app import notebook
from app.images import gallery_picture

SENTENCE = "the cat sat on the mat and the dog ran"  # within the tiny model's 32 tokens


def server_npz(client, path: str, body: dict) -> tuple[dict[str, np.ndarray], dict]:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    with np.load(io.BytesIO(r.content)) as npz:
        return {k: npz[k] for k in npz.files if k != "manifest.json"}, json.loads(npz["manifest.json"])


def same(ours: notebook.Exported, theirs: tuple[dict[str, np.ndarray], dict]) -> None:
    arrays, manifest = theirs
    assert list(ours) == list(arrays)
    for name, a in arrays.items():
        assert ours[name].dtype == a.dtype and ours[name].shape == a.shape, name
        np.testing.assert_allclose(ours[name], a, rtol=1e-5, atol=1e-6, err_msg=name)
    assert {**ours.manifest, "created": None} == {**manifest, "created": None}


def test_trace_text_equals_the_server_download(tiny_client, tiny_gpt2_dir):
    ours = notebook.trace_text(SENTENCE, model=str(tiny_gpt2_dir))
    same(ours, server_npz(tiny_client, "/api/text/export", {"text": SENTENCE}))
    assert ours["blocks.1.attn.hook_pattern"].shape == (3, len(ours["token_ids"]), len(ours["token_ids"]))


def test_trace_image_of_a_gallery_picture_equals_the_server_download(tiny_client):
    same(notebook.trace_image("scene-1"), server_npz(tiny_client, "/api/vision/export", {"image": "scene-1"}))


def test_trace_image_of_a_file_equals_the_upload(tiny_client, tmp_path):
    img = gallery_picture("scene-3", 200).image.rotate(20, expand=True, fillcolor=(40, 90, 200))
    path = tmp_path / "photo.png"
    img.save(path)
    up = tiny_client.post("/api/vision/upload?name=photo.png", content=path.read_bytes(), headers={"content-type": "image/png"})
    assert up.status_code == 200, up.text
    ours = notebook.trace_image(path)
    same(ours, server_npz(tiny_client, "/api/vision/export", {"image": up.json()["image"]}))
    # a PIL image or an array of the same pixels is read the same way (no file name, no upload id)
    for given in (Image.open(path), np.asarray(Image.open(path).convert("RGB"))):
        again = notebook.trace_image(given)
        np.testing.assert_allclose(again["blocks.0.attn.hook_pattern"], ours["blocks.0.attn.hook_pattern"], rtol=1e-5, atol=1e-6)


def test_trace_image_says_what_it_cannot_read():
    with pytest.raises(FileNotFoundError, match="neither a file nor a gallery id"):
        notebook.trace_image("no-such-picture")
    with pytest.raises(TypeError, match="not int"):
        notebook.trace_image(3)


def test_trace_prompt_equals_the_server_download(sd_client, tiny_sd_dir):
    body = {"prompt": "a blue circle", "seed": 4, "steps": 2, "guidance": 3.0, "scheduler": "ddim"}
    sd_client.post("/api/diffusion/run", json=body)  # the server exports cached runs only
    theirs = server_npz(sd_client, "/api/diffusion/export", body)
    ours = notebook.trace_prompt(body["prompt"], model=str(tiny_sd_dir), seed=4, steps=2, guidance=3.0, scheduler="ddim")
    same(ours, theirs)


def test_save_and_load_give_back_the_arrays_and_manifest(tiny_gpt2_dir, tmp_path):
    ours = notebook.trace_text("the cat sat", model=str(tiny_gpt2_dir))
    ours.save(tmp_path / "t.npz")
    back = notebook.load(tmp_path / "t.npz")
    assert back.manifest == ours.manifest and list(back) == list(ours)
    for name in ours:
        np.testing.assert_array_equal(back[name], ours[name])
    with np.load(tmp_path / "t.npz") as npz:  # plain numpy, no glassbox
        assert json.loads(npz["manifest.json"])["input"]["text"] == "the cat sat"
