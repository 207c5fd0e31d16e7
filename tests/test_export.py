"""app/export.py without a model: every hook name has a meaning, the manifest is made from the arrays
themselves, the file is numpy's own format (strided views included), and file names are safe."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from app import export
from app.capture import text as text_capture
from app.capture import vision as vision_capture


@pytest.mark.parametrize("capture", [text_capture, vision_capture], ids=["text", "vision"])
def test_every_hook_has_its_shape_and_meaning(capture):
    for name in capture.hook_names(12):
        assert capture.meaning(name).startswith("["), name
    with pytest.raises(KeyError):
        capture.meaning("blocks.0.mlp.hook_post")


def test_npz_is_numpys_format_with_the_manifest_beside():
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    arrays = {"blocks.0.attn.hook_q": base.transpose(1, 0, 2), "token_ids": np.array([5, 7], dtype=np.int64)}
    ex = export.exported(arrays, {"blocks.0.attn.hook_q": "[head, pos, d_head] q", "token_ids": "[pos] ids"},
                         {"family": "text", "model": "m"}, "f.npz")
    assert ex.manifest["arrays"]["blocks.0.attn.hook_q"] == {"shape": [3, 2, 4], "dtype": "float32", "meaning": "[head, pos, d_head] q"}
    data = ex.npz()
    assert sorted(zipfile.ZipFile(io.BytesIO(data)).namelist()) == ["blocks.0.attn.hook_q.npy", "manifest.json", "token_ids.npy"]
    with np.load(io.BytesIO(data)) as npz:  # no pickle needed
        np.testing.assert_array_equal(npz["blocks.0.attn.hook_q"], base.transpose(1, 0, 2))
        assert npz["token_ids"].dtype == np.int64
        assert json.loads(npz["manifest.json"]) == ex.manifest
    back = export.load(io.BytesIO(data))
    assert back.manifest == ex.manifest and list(back) == list(arrays)


def test_file_names_are_ascii_and_cut_at_a_word():
    name = export.file_name("text", "gpt2-tinystories", "Ünïcode <b>tags</b> and \"quotes\"; then a long tail of many words")
    assert name == "glassbox-text-gpt2-tinystories-n-code-b-tags-b-and-quotes-then-a-long.npz"
    assert name.isascii() and '"' not in name
    assert export.file_name("vision", "vit-shapes", "") == "glassbox-vision-vit-shapes.npz"
