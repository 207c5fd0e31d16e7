"""glassbox's capture against TransformerLens, an independent implementation of GPT-2: the same
weights (converted by TL's own code, as benchmarks/peers.py does) and the same token ids must give
the same attention patterns. Runs only where the [bench] extra is installed (pip install -e ".[bench]")."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pytest.importorskip("transformer_lens.HookedTransformer", reason="the [bench] extra (transformer-lens<4) is not installed")

from app.capture.text import capture  # noqa: E402
from app.registry import load_gpt2  # noqa: E402
from app.settings import ROOT  # noqa: E402


def peers_module():
    spec = importlib.util.spec_from_file_location("peers", ROOT / "benchmarks" / "peers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_attention_equals_transformer_lens(tiny_gpt2_dir):
    tm = load_gpt2(str(tiny_gpt2_dir))
    tl = peers_module().hooked_transformer(tm.model)
    text = "the cat sat on the mat and a dog ran to the park"
    trace = capture(tm, text)
    ids = trace.token_ids
    assert len(ids) > 5
    with torch.no_grad():
        _, cache = tl.run_with_cache(torch.tensor([ids]))  # ids, not the string: no BOS prepended
    L, H = tm.config.n_layer, tm.config.n_head
    for l in range(L):
        ours, theirs = trace.pattern(l), cache["pattern", l][0].numpy()
        assert ours.shape == theirs.shape == (H, len(ids), len(ids))
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
        # Queries and keys too (TL's [pos, head, d_head]; fold_ln and centering leave them as they are).
        for name in ("q", "k"):
            np.testing.assert_allclose(trace.acts[f"blocks.{l}.attn.hook_{name}"],
                                       cache[name, l][0].transpose(0, 1).numpy(), rtol=1e-4, atol=1e-4)
