"""ViT capture against independent recomputations: attention from the captured Q/K, the first
stream from the patch pixels, rollout, distances and position similarity by plain loops, and the
Hub-id loading path on a tiny random ViT."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from app.capture import vision as cv
from app.capture.hooks import hook_count
from app.images import gallery_picture
from app.registry import ModelLoadError, load_vit
from app.settings import ROOT

SHIPPED_VIT = ROOT / "models" / "vit-shapes"


@pytest.fixture(scope="module")
def tiny(tiny_vit_dir):
    return load_vit(str(tiny_vit_dir))


@pytest.fixture(scope="module")
def shipped():
    return load_vit(str(SHIPPED_VIT))


def trace_of(vm, gid="scene-5"):
    pic = gallery_picture(gid, 64)
    return cv.capture(vm, pic.image, gid, pic.name)


@pytest.fixture(scope="module", params=["tiny", "shipped"])
def both(request, tiny, shipped):
    vm = tiny if request.param == "tiny" else shipped
    return vm, trace_of(vm)


def test_hook_names_are_pinned(tiny):
    t = trace_of(tiny)
    assert list(t.acts) == cv.hook_names(2)
    assert cv.hook_names(1) == [
        "hook_patch_embed", "hook_pos_embed", "hook_embed",
        "blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v",
        "blocks.0.attn.hook_pattern", "blocks.0.hook_resid_post",
    ]
    # 24 px in 6 px patches: a 4 × 4 grid plus CLS; 3 heads of 8
    assert t.grid == (4, 4) and t.n_patches == 16
    assert t.acts["blocks.1.attn.hook_q"].shape == (3, 17, 8)
    assert t.pattern(1).shape == (3, 17, 17)
    assert t.acts["hook_patch_embed"].shape == (16, 24)
    assert t.acts["hook_pos_embed"].shape == (17, 24)
    assert t.labels == ["zero", "<b>one</b>", "two"]


def test_attention_equals_softmax_of_captured_q_k(both):
    """No causal mask in a ViT: every token sees every token."""
    _, t = both
    for l in range(t.n_layers):
        q = t.acts[f"blocks.{l}.attn.hook_q"].astype(np.float64)
        k = t.acts[f"blocks.{l}.attn.hook_k"].astype(np.float64)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(t.d_head)
        e = np.exp(s - s.max(-1, keepdims=True))
        expected = e / e.sum(-1, keepdims=True)
        np.testing.assert_allclose(t.pattern(l), expected, atol=1e-5)
        np.testing.assert_allclose(t.pattern(l).sum(-1), 1.0, atol=1e-5)
        assert (t.pattern(l) > 0).all()  # nothing masked


def test_q_k_v_come_from_the_layer_input(both):
    """Q = LN(stream before the block)·Wqᵀ + b, recomputed from the previous block's captured output."""
    vm, t = both
    for l in range(t.n_layers):
        block = vm.model.vit.layers[l]
        stream = t.acts["hook_embed"] if l == 0 else t.acts[f"blocks.{l - 1}.hook_resid_post"]
        with torch.no_grad():
            x = block.layernorm_before(torch.from_numpy(np.ascontiguousarray(stream)))
            for name, proj in (("q", block.attention.q_proj), ("k", block.attention.k_proj), ("v", block.attention.v_proj)):
                want = proj(x).view(-1, t.n_heads, t.d_head).transpose(0, 1).numpy()
                np.testing.assert_allclose(t.acts[f"blocks.{l}.attn.hook_{name}"], want, atol=1e-5)


def test_first_stream_is_patches_times_projection_plus_cls_and_positions(both):
    vm, t = both
    proj = vm.model.vit.embeddings.patch_embeddings.projection
    w = proj.weight.detach().numpy().reshape(t.d_model, -1)  # [d_model, 3·p·p]
    b = proj.bias.detach().numpy()
    for i in (0, t.n_patches // 2, t.n_patches - 1):
        np.testing.assert_allclose(t.acts["hook_patch_embed"][i], w @ cv.patch_pixels(t, i).ravel() + b, atol=1e-4)
    cls = vm.model.vit.embeddings.cls_token.detach().numpy()[0]
    tokens = np.concatenate([cls, t.acts["hook_patch_embed"]])
    np.testing.assert_allclose(t.acts["hook_embed"], tokens + t.acts["hook_pos_embed"], atol=1e-5)


def test_logits_are_the_plain_forward_and_hooks_are_gone(both):
    vm, t = both
    with torch.no_grad():
        plain = vm.model(torch.from_numpy(t.pixel_values[None])).logits[0].numpy()
    np.testing.assert_allclose(t.logits, plain, atol=1e-5)
    assert abs(t.probs.sum() - 1) < 1e-9
    assert hook_count(vm.model) == 0


def test_a_failing_forward_leaves_no_hook(tiny, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(tiny.model.vit.layers[1].mlp, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        trace_of(tiny)
    assert hook_count(tiny.model) == 0


def test_rollout_equals_the_matrix_product(both):
    _, t = both
    got = cv.rollout(t)
    N = t.n_patches + 1
    assert got.shape == (t.n_layers, N, N)
    # Independently: the product written out right to left with torch, in float64.
    mats = []
    for l in range(t.n_layers):
        a = torch.from_numpy(t.pattern(l).astype(np.float64)).mean(0)
        a = (a + torch.eye(N, dtype=torch.float64)) / 2
        mats.append(a / a.sum(-1, keepdim=True))
    for l in range(t.n_layers):
        want = torch.linalg.multi_dot(mats[: l + 1][::-1]) if l else mats[0]
        np.testing.assert_allclose(got[l], want.numpy(), atol=1e-5)
        np.testing.assert_allclose(got[l].sum(-1), 1.0, atol=1e-5)


def test_mean_attention_distance_by_loops(tiny):
    t = trace_of(tiny)
    got = cv.attention_distance(t)
    rows, cols = t.grid
    p = t.patch_size[0]
    assert got.shape == (t.n_layers, t.n_heads)
    for l in range(t.n_layers):
        for h in range(t.n_heads):
            total = 0.0
            for qi in range(t.n_patches):
                w = t.pattern(l)[h, 1 + qi, 1:].astype(np.float64)
                w = w / w.sum()
                qy, qx = divmod(qi, cols)
                total += sum(
                    w[ki] * p * math.hypot(qy - ki // cols, qx - ki % cols) for ki in range(t.n_patches)
                )
            assert got[l, h] == pytest.approx(total / t.n_patches, rel=1e-5)
    # bounded by the image's diagonal between patch centres
    assert (got >= 0).all() and (got <= p * math.hypot(rows - 1, cols - 1)).all()


def test_position_similarity(both):
    _, t = both
    s = cv.position_similarity(t)
    assert s.shape == (t.n_patches, t.n_patches)
    pos = t.acts["hook_pos_embed"][1:].astype(np.float64)
    i, j = 1, t.n_patches - 1
    cos = pos[i] @ pos[j] / (np.linalg.norm(pos[i]) * np.linalg.norm(pos[j]))
    assert s[i, j] == pytest.approx(cos, abs=1e-5)
    np.testing.assert_allclose(np.diag(s), 1.0, atol=1e-5)
    np.testing.assert_allclose(s, s.T, atol=1e-6)


def test_shipped_position_embeddings_learned_the_grid(shipped):
    """Neighbouring patches have more similar positions than the two ends of a row (ViT paper, Fig. 7).
    The shipped model learned this only weakly (about 0.42 against 0.37): shapes land anywhere."""
    t = trace_of(shipped)
    s = cv.position_similarity(t)
    rows, cols = t.grid
    near = np.mean([s[r * cols + c, r * cols + c + 1] for r in range(rows) for c in range(cols - 1)])
    far = np.mean([s[r * cols, r * cols + cols - 1] for r in range(rows)])
    assert near > far


def test_seen_image_round_trips_the_processor(shipped):
    pic = gallery_picture("scene-1", 64)
    t = cv.capture(shipped, pic.image, "scene-1", pic.name)
    diff = np.abs(t.seen.astype(int) - np.asarray(pic.image).astype(int))
    assert diff.max() <= 1  # 64 px in, 64 px model: only rounding


def test_hub_id_loads_through_the_hub_cache(tiny_vit_dir, tmp_path, monkeypatch):
    """A Hub id resolves through huggingface_hub's cache (offline here: a snapshot laid out as a
    download leaves it), by the same load_vit call as a folder."""
    import huggingface_hub.constants as hub

    repo = tmp_path / "hub" / "models--glassbox--tiny-vit"
    rev = "0" * 40
    shutil.copytree(tiny_vit_dir, repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    vm = load_vit("glassbox/tiny-vit")
    assert vm.name == "glassbox/tiny-vit" and vm.card_path is None
    assert vm.model.config._attn_implementation == "glassbox_vit"
    t = trace_of(vm)
    assert t.grid == (4, 4)


def test_load_errors_name_the_folder(tmp_path, tiny_vit_dir):
    with pytest.raises(ModelLoadError, match=str(tmp_path / "nope")):
        load_vit(str(tmp_path / "nope"))
    partial = tmp_path / "partial"
    shutil.copytree(tiny_vit_dir, partial)
    (partial / "preprocessor_config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"partial is missing preprocessor_config.json"):
        load_vit(str(partial))
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_vit_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        load_vit(str(pickled))


def test_captures_in_parallel_threads_keep_their_own_arrays(shipped):
    """Two requests' captures at once on one model (the server's worker threads): each trace holds
    its own picture's arrays, as if it had run alone."""
    from concurrent.futures import ThreadPoolExecutor

    ids = ["scene-1", "scene-2", "scene-3", "scene-4"]
    alone = {g: trace_of(shipped, g) for g in ids}
    with ThreadPoolExecutor(4) as pool:
        traces = list(pool.map(lambda g: trace_of(shipped, g), ids * 3))
    for t in traces:
        ref = alone[t.image_id]
        for name in cv.hook_names(ref.n_layers):
            np.testing.assert_array_equal(t.acts[name], ref.acts[name], err_msg=name)
        np.testing.assert_array_equal(t.logits, ref.logits)
    assert hook_count(shipped.model) == 0
