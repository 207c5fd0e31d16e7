"""Capture invariants, each checked against an independent recomputation from captured tensors."""

import numpy as np
import pytest
import torch

from app.capture.hooks import hook_count, hooked
from app.capture.text import capture, head_walkthrough, hook_names, logit_lens, next_tokens, softmax
from app.registry import ModelLoadError, load_gpt2
from tests.conftest import SHIPPED_GPT2

TEXT = "The animal didn't cross the street because it was too tired"


@pytest.fixture(scope="module")
def shipped():
    return load_gpt2(str(SHIPPED_GPT2))


@pytest.fixture(scope="module")
def tiny(tiny_gpt2_dir):
    return load_gpt2(str(tiny_gpt2_dir))


def recompute_pattern(q, k):
    T, dh = q.shape[1], q.shape[2]
    s = q @ k.transpose(0, 2, 1) / np.sqrt(dh)
    s = np.where(np.tril(np.ones((T, T), dtype=bool)), s, -np.inf)
    return softmax(s.astype(np.float64))


@pytest.mark.parametrize("which", ["shipped", "tiny"])
def test_pattern_equals_softmax_of_captured_q_k(which, request):
    tm = request.getfixturevalue(which)
    tr = capture(tm, TEXT if which == "shipped" else "the cat sat on the mat")
    for l in range(tr.n_layers):
        a = tr.pattern(l)
        q, k, v = (tr.acts[f"blocks.{l}.attn.hook_{n}"] for n in "qkv")
        assert np.abs(recompute_pattern(q, k) - a).max() < 1e-5
        assert np.allclose(a.sum(-1), 1, atol=1e-5)
        assert np.all(np.triu(a, k=1) == 0)
        assert np.abs(a @ v - tr.acts[f"blocks.{l}.attn.hook_z"]).max() < 1e-5


def test_hook_names_pinned(tiny):
    tr = capture(tiny, "the cat")
    assert list(tr.acts) == hook_names(2)
    assert hook_names(1) == [
        "hook_embed", "hook_pos_embed", "blocks.0.ln1.hook_normalized", "blocks.0.attn.hook_q",
        "blocks.0.attn.hook_k", "blocks.0.attn.hook_v", "blocks.0.attn.hook_pattern",
        "blocks.0.attn.hook_z", "blocks.0.attn.hook_result", "blocks.0.hook_resid_post",
    ]
    T, H, dh = len(tr.token_ids), 3, 8
    assert tr.acts["blocks.1.attn.hook_q"].shape == (H, T, dh)
    assert tr.acts["blocks.1.attn.hook_pattern"].shape == (H, T, T)
    assert tr.acts["blocks.1.hook_resid_post"].shape == (T, 24)


def test_residual_stream_matches_hidden_states(shipped):
    """resid_post of block l equals transformers' own hidden_states[l+1] (before ln_f for the last)."""
    tr = capture(shipped, TEXT)
    with torch.no_grad():
        hs = shipped.model(torch.tensor([tr.token_ids]), output_hidden_states=True).hidden_states
    for l in range(tr.n_layers - 1):
        assert np.abs(hs[l + 1][0].numpy() - tr.acts[f"blocks.{l}.hook_resid_post"]).max() < 1e-4
    emb = tr.acts["hook_embed"] + tr.acts["hook_pos_embed"]
    assert np.abs(hs[0][0].numpy() - emb).max() < 1e-5


def test_walkthrough_reproduces_the_head(shipped):
    tr = capture(shipped, TEXT)
    w = head_walkthrough(shipped, tr, 2, 1)
    assert np.abs(w["x"] @ w["wq"] + w["bq"] - w["q"]).max() < 1e-4
    assert np.abs(w["x"] @ w["wk"] + w["bk"] - w["k"]).max() < 1e-4
    assert np.abs(w["x"] @ w["wv"] + w["bv"] - w["v"]).max() < 1e-4
    assert np.abs(softmax(w["masked"].astype(np.float64)) - w["attention"]).max() < 1e-5
    assert np.abs(w["attention"] @ w["v"] - w["z"]).max() < 1e-5
    # concat(all heads' Z) · Wo + bo is the attention output the model added to the stream
    zs = tr.acts["blocks.2.attn.hook_z"]  # [head, pos, d_head]
    concat = zs.transpose(1, 0, 2).reshape(len(tr.token_ids), -1)
    wo = shipped.model.transformer.h[2].attn.c_proj.weight.detach().numpy()
    assert np.abs(concat @ wo + w["bo"] - w["out"]).max() < 1e-4


def test_logit_lens_last_layer_is_the_model_output(shipped):
    tr = capture(shipped, TEXT)
    lens = logit_lens(shipped, tr, 3)
    assert lens["layers"][0] == "embed" and len(lens["top"]) == tr.n_layers + 1
    top_final = lens["top"][-1][-1][0]
    p = softmax(tr.last_logits.astype(np.float64))
    assert top_final["id"] == int(p.argmax())
    assert abs(top_final["prob"] - p.max()) < 1e-4


def test_temperature_reshapes_without_rerun(shipped):
    tr = capture(shipped, TEXT)
    cold, hot = next_tokens(shipped, tr, 0.5, 5), next_tokens(shipped, tr, 2.0, 5)
    assert cold[0]["id"] == hot[0]["id"]  # the order never changes with temperature
    assert cold[0]["prob"] > hot[0]["prob"]
    assert abs(sum(t["prob"] for t in next_tokens(shipped, tr, 1.0, 50)) - 1) < 0.5


def test_no_hook_leaks_even_when_the_forward_raises(tiny):
    before = hook_count(tiny.model)
    capture(tiny, "the cat")
    assert hook_count(tiny.model) == before

    def boom(*_):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        with hooked([(tiny.model.transformer.h[0], "forward", boom)]):
            assert hook_count(tiny.model) == before + 1
            tiny.model(torch.tensor([[1, 2]]))
    assert hook_count(tiny.model) == before == 0


def test_captures_in_parallel_threads_keep_their_own_arrays(shipped):
    """The attention recorder is per context: two requests' captures running at once on one model
    (the server's worker threads) each get their own text's arrays, and a plain forward beside them
    records into neither."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [TEXT, "Once upon a time there was a little dog", "it was too small", "She smiled at the sun"]
    alone = {t: capture(shipped, t) for t in texts}

    def plain():
        with torch.no_grad():
            return shipped.model(torch.tensor([[1, 2, 3]]), use_cache=False).logits

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(capture, shipped, t) for t in texts * 3] + [pool.submit(plain) for _ in range(6)]
        results = [f.result() for f in futures]
    for tr in results[: len(texts) * 3]:
        ref = alone[tr.text]
        assert tr.token_ids == ref.token_ids
        for name in hook_names(ref.n_layers):
            np.testing.assert_array_equal(tr.acts[name], ref.acts[name], err_msg=name)
    assert hook_count(shipped.model) == 0


def test_a_model_not_loaded_with_the_recording_attention_is_refused(tiny_gpt2_dir):
    from transformers import GPT2LMHeadModel

    from app.registry import TextModel

    tm = load_gpt2(str(tiny_gpt2_dir))
    plain = TextModel(name="plain", source="x", tokenizer=tm.tokenizer,
                      model=GPT2LMHeadModel.from_pretrained(str(tiny_gpt2_dir), attn_implementation="eager").eval())
    with pytest.raises(RuntimeError, match="load it with app.registry.load_gpt2"):
        capture(plain, "the cat")
    assert hook_count(plain.model) == 0


def test_odd_text_survives(shipped):
    for text in ["🙂 emoji", "שלום עולם", "zero\u200bwidth", "<img src=x onerror=alert(1)>"]:
        tr = capture(shipped, text)
        assert shipped.tokenizer.decode(tr.token_ids) == text  # byte-level BPE loses nothing


def test_loading_errors_name_the_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_gpt2(str(tmp_path / "nope"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="missing model.safetensors"):
        load_gpt2(str(tmp_path))
