"""The architecture map against the models themselves: block counts from the config, module paths
that exist in named_modules(), parameter counts recomputed from the tensors, every capture point on
exactly one node (the module the capture reads it from), the UNet's skip edges checked against a
real forward pass. On the shipped checkpoints, the tiny random ones of tests/conftest.py and models
of other sizes built here."""

from __future__ import annotations

import dataclasses
from collections import Counter
from urllib.parse import parse_qs, urlparse

import pytest
import torch

from app import architecture
from app.capture import diffusion as diffusion_capture
from app.capture import text as text_capture
from app.capture import vision as vision_capture
from app.registry import DiffusionModel, TextModel, VisionModel, load_gpt2, load_sd, load_vit
from app.settings import ROOT


def numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def resolve(roots: dict, name: str):
    """A node's module (or parameter) by its path, looked up in named_modules() / named_parameters()."""
    if "" in roots:  # a model: paths from its root
        root, rest = roots[""], name
    else:  # a pipeline: the first part names the component
        prefix, _, rest = name.partition(".")
        root = roots[prefix]
    modules = dict(root.named_modules())
    if rest in modules:
        return modules[rest]
    return dict(root.named_parameters())[rest]


def check_modules_and_params(graph, roots: dict, total: int) -> None:
    """Every named node is a real module or parameter and its count is sum(p.numel()) over it; a
    group holds no more than its module; the top-level modules, shared tensors once, make the total."""
    by_id = {n.id: n for n in graph.nodes}
    for n in graph.nodes:
        if n.name is None:
            assert n.params == 0, n.id
            continue
        m = resolve(roots, n.name)
        assert n.params == (m.numel() if isinstance(m, torch.nn.Parameter) else numel(m)), n.name
        kids = [by_id[c] for row in n.rows for c in row if c is not None]
        assert all(k.parent == n.id for k in kids)
        assert sum(k.params for k in kids) <= n.params, n.name
    assert graph.params == total
    assert sum(n.params for n in graph.nodes if n.parent is None and not n.tied) == total
    placed = {c for n in graph.nodes for row in n.rows for c in row if c is not None}
    placed |= {c for row in graph.rows for c in row if c is not None}
    assert placed == set(by_id)  # every node is drawn, once a child of its parent
    for e in graph.edges:
        assert e.source in by_id and e.target in by_id


def check_hooks(graph, expected: list[str]) -> Counter:
    on_nodes = Counter(h for n in graph.nodes for h in n.hooks)
    assert graph.hooks == expected
    assert on_nodes == Counter(expected) and set(on_nodes.values()) == {1}
    return on_nodes


def node_with_hook(graph, hook: str):
    return next(n for n in graph.nodes if hook in n.hooks)


def query(link: str) -> tuple[str, dict]:
    u = urlparse(link)
    return u.path, {k: v[0] for k, v in parse_qs(u.query).items()}


# ---------------------------------------------------------------------------------------------
# GPT-2


def odd_gpt2() -> TextModel:
    """Another size than any checkpoint: 3 layers × 5 heads of 4, a 44-wide MLP, an untied unembedding."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50, n_positions=16, n_embd=20, n_layer=3, n_head=5, n_inner=44, tie_word_embeddings=False)
    return TextModel(name="odd-gpt2", source="memory", model=GPT2LMHeadModel(cfg).eval(), tokenizer=None)


@pytest.fixture(scope="module", params=["shipped", "tiny", "odd"])
def tm(request, tiny_gpt2_dir):
    if request.param == "odd":
        return odd_gpt2()
    return load_gpt2(str(ROOT / "models" / "gpt2-tinystories" if request.param == "shipped" else tiny_gpt2_dir))


def test_gpt2_blocks_sizes_and_params_follow_the_model(tm):
    g = architecture.text_graph(tm)
    cfg, tr = tm.config, tm.model.transformer
    blocks = [n for n in g.nodes if n.kind == "block"]
    assert len(blocks) == cfg.n_layer == len([n for n in g.nodes if n.kind == "attention"])
    assert [b.layer for b in blocks] == list(range(cfg.n_layer))
    check_modules_and_params(g, {"": tm.model}, tm.n_params)
    for l, b in enumerate(blocks):
        assert resolve({"": tm.model}, b.name) is tr.h[l]
        kids = [g.node(c) for c in b.rows[0]]
        assert sum(k.params for k in kids) == b.params == numel(tr.h[l])  # nothing in a block left out
        attn = next(k for k in kids if k.kind == "attention")
        assert resolve({"": tm.model}, attn.name) is tr.h[l].attn
        assert attn.facts == {"heads": cfg.n_head, "d_head": cfg.n_embd // cfg.n_head}
        assert attn.shapes["pattern"] == [cfg.n_head, "pos", "pos"]
        assert next(k for k in kids if k.kind == "mlp").facts["d_mlp"] == (cfg.n_inner or 4 * cfg.n_embd)
    assert g.config["vocab"] == cfg.vocab_size and g.config["context"] == cfg.n_positions
    head = next(n for n in g.nodes if n.kind == "head")
    assert head.shapes["out"] == ["pos", cfg.vocab_size]
    tied = tm.model.lm_head.weight is tr.wte.weight
    assert head.tied == ("transformer.wte" if tied else None)
    assert g.params == sum(p.numel() for p in tm.model.parameters())  # tied: once


def test_gpt2_every_hook_is_on_the_module_capture_reads(tm):
    g = architecture.text_graph(tm)
    L = tm.config.n_layer
    check_hooks(g, text_capture.hook_names(L))
    tr, roots = tm.model.transformer, {"": tm.model}
    assert resolve(roots, node_with_hook(g, "hook_embed").name) is tr.wte
    assert resolve(roots, node_with_hook(g, "hook_pos_embed").name) is tr.wpe
    for l in range(L):
        for h in ("q", "k", "v", "pattern", "z", "result"):
            assert resolve(roots, node_with_hook(g, f"blocks.{l}.attn.hook_{h}").name) is tr.h[l].attn
        assert resolve(roots, node_with_hook(g, f"blocks.{l}.ln1.hook_normalized").name) is tr.h[l].ln_1
        assert resolve(roots, node_with_hook(g, f"blocks.{l}.hook_resid_post").name) is tr.h[l]


def test_gpt2_links_open_the_layer(tm):
    g = architecture.text_graph(tm)
    for n in g.nodes:
        if n.kind == "attention":
            assert query(n.link) == ("/text/attention", {"model": tm.name, "layer": str(n.layer)})
    assert query(g.node("lm_head").link)[0] == "/text/next"


# ---------------------------------------------------------------------------------------------
# ViT


def odd_vit() -> VisionModel:
    """A non-square ViT: 20 × 30 px in 5 px patches (4 × 6), 3 layers × 3 heads of 5, 5 classes."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=[20, 30], patch_size=5, hidden_size=15, num_hidden_layers=3, num_attention_heads=3,
                    intermediate_size=22, num_labels=5)
    return VisionModel(name="odd-vit", source="memory", model=ViTForImageClassification(cfg).eval(), processor=None)


@pytest.fixture(scope="module", params=["shipped", "tiny", "odd"])
def vm(request, tiny_vit_dir):
    if request.param == "odd":
        return odd_vit()
    return load_vit(str(ROOT / "models" / "vit-shapes" if request.param == "shipped" else tiny_vit_dir))


def test_vit_blocks_patches_and_params_follow_the_model(vm):
    g = architecture.vision_graph(vm)
    cfg, vit, roots = vm.config, vm.model.vit, {"": vm.model}
    (ih, iw), (ph, pw) = vision_capture.pair(cfg.image_size), vision_capture.pair(cfg.patch_size)
    P = (ih // ph) * (iw // pw)
    blocks = [n for n in g.nodes if n.kind == "block"]
    assert len(blocks) == cfg.num_hidden_layers
    check_modules_and_params(g, roots, vm.n_params)
    for l, b in enumerate(blocks):
        assert resolve(roots, b.name) is vit.layers[l]
        kids = [g.node(c) for c in b.rows[0]]
        assert sum(k.params for k in kids) == b.params
        attn = next(k for k in kids if k.kind == "attention")
        assert attn.shapes["pattern"] == [cfg.num_attention_heads, P + 1, P + 1]
        assert query(attn.link) == ("/vision/attention", {"model": vm.name, "layer": str(l)})
    emb = g.node("vit.embeddings")
    assert sum(g.node(c).params for c in emb.rows[0]) == emb.params  # patches + CLS + positions
    assert g.node("vit.embeddings.position_embeddings").shapes["value"] == [1, P + 1, cfg.hidden_size]
    assert g.node("classifier").shapes["out"] == [cfg.num_labels] and g.config["patches"] == P


def test_vit_every_hook_is_on_the_module_capture_reads(vm):
    g = architecture.vision_graph(vm)
    check_hooks(g, vision_capture.hook_names(vm.config.num_hidden_layers))
    vit, roots = vm.model.vit, {"": vm.model}
    assert resolve(roots, node_with_hook(g, "hook_patch_embed").name) is vit.embeddings.patch_embeddings
    assert resolve(roots, node_with_hook(g, "hook_pos_embed").name) is vit.embeddings.position_embeddings
    assert resolve(roots, node_with_hook(g, "hook_embed").name) is vit.embeddings
    for l in range(vm.config.num_hidden_layers):
        assert resolve(roots, node_with_hook(g, f"blocks.{l}.attn.hook_pattern").name) is vit.layers[l].attention


# ---------------------------------------------------------------------------------------------
# Stable Diffusion


def other_unet_sd(tiny_sd_dir) -> DiffusionModel:
    """The tiny pipeline with another UNet: three levels, two ResBlocks a level, two transformer blocks in
    each spatial transformer, a plain down block last and a plain up block first."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    pipe = load_sd(str(tiny_sd_dir), "cpu").pipe
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(8, 16, 16), norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=pipe.text_encoder.config.hidden_size, attention_head_dim=2, transformer_layers_per_block=2,
    ).eval()
    other = StableDiffusionPipeline(**{**pipe.components, "unet": unet}, requires_safety_checker=False)
    return DiffusionModel(name="other-unet", source="memory", pipe=other)


@pytest.fixture(scope="module", params=["shipped", "tiny", "other"])
def dm(request, tiny_sd_dir):
    if request.param == "other":
        return other_unet_sd(tiny_sd_dir)
    return load_sd(str(ROOT / "models" / "sd-shapes" if request.param == "shipped" else tiny_sd_dir), "cpu")


def sd_roots(dm) -> dict:
    return {"text_encoder": dm.pipe.text_encoder, "unet": dm.pipe.unet, "vae": dm.pipe.vae}


def classes_in(module, name: str) -> int:
    return sum(type(m).__name__ == name for m in module.modules())


def test_sd_cross_attention_nodes_are_the_captured_layers(dm):
    g = architecture.diffusion_graph(dm)
    unet = dm.pipe.unet
    cross = diffusion_capture.attention_layers(unet)
    nodes = [n for n in g.nodes if n.kind == "cross_attention"]
    assert len(nodes) == len(cross) == g.config["cross-attention layers"]
    assert sorted(n.name for n in nodes) == sorted(f"unet.{c}" for c in cross)
    d_ctx = dm.pipe.text_encoder.config.hidden_size
    for n in nodes:
        m = dict(unet.named_modules())[n.name.removeprefix("unet.")]
        assert m.to_k.in_features == m.to_v.in_features == d_ctx  # K and V are read from the prompt
        assert n.shapes["K, V from"] == [dm.pipe.tokenizer.model_max_length, d_ctx]
        assert query(n.link) == ("/diffusion/generate", {"model": dm.name})
        assert any(e.source == "text_encoder" and e.target == n.id and e.kind == "context" for e in g.edges)
    selfs = [n for n in g.nodes if n.kind == "self_attention"]
    assert sorted(n.name for n in selfs) == sorted(f"unet.{c}" for c in diffusion_capture.attention_layers(unet, cross=False))


def test_sd_blocks_and_params_follow_the_pipeline(dm):
    g = architecture.diffusion_graph(dm)
    pipe = dm.pipe
    unet, te = pipe.unet, pipe.text_encoder
    check_modules_and_params(g, sd_roots(dm), dm.n_params)
    kinds = Counter(n.kind for n in g.nodes)
    assert kinds["resblock"] == classes_in(unet, "ResnetBlock2D")
    assert kinds["transformer"] == classes_in(unet, "Transformer2DModel")
    assert kinds["sample"] == classes_in(unet, "Downsample2D") + classes_in(unet, "Upsample2D")
    assert kinds["vae_block"] == len(pipe.vae.encoder.down_blocks) + len(pipe.vae.decoder.up_blocks) + 2  # + two mid blocks
    unet_blocks = [n for n in g.nodes if n.kind == "block" and n.parent == "unet"]
    assert len(unet_blocks) == len(unet.config.down_block_types) + len(unet.config.up_block_types) + 1
    assert len([n for n in g.nodes if n.parent == "text_encoder" and n.kind == "block"]) == te.config.num_hidden_layers
    s, S = unet.config.sample_size, dm.image_size
    assert g.node("vae.encoder").shapes == {"in": [3, S, S], "out": [2 * pipe.vae.config.latent_channels, s, s]}
    assert g.node("vae.decoder").shapes["out"] == [3, S, S]
    assert g.node("unet").rows[-1][1] == "unet.mid_block"  # the bottom of the U


def test_sd_skip_edges_are_what_each_up_resblock_reads(dm):
    """Run the UNet once: each up ResBlock's input ends with exactly the output of its skip edge's source."""
    g = architecture.diffusion_graph(dm)
    unet = dm.pipe.unet
    modules = {f"unet.{k}": m for k, m in unet.named_modules()}
    skips = [e for e in g.edges if e.kind == "skip"]
    up_resnets = [n.id for n in g.nodes if n.kind == "resblock" and ".up_blocks." in n.id]
    assert sorted(e.target for e in skips) == sorted(up_resnets)  # one skip each
    outs, ins = {}, {}

    def keep_out(name):
        return lambda _m, _a, out: outs.__setitem__(name, out[0] if isinstance(out, tuple) else getattr(out, "sample", out))

    handles = [modules[e.source].register_forward_hook(keep_out(e.source)) for e in skips]
    handles += [modules[e.target].register_forward_pre_hook(lambda _m, a, n=e.target: ins.__setitem__(n, a[0])) for e in skips]
    try:
        c, s = unet.config.in_channels, unet.config.sample_size
        ctx = torch.randn(1, dm.pipe.tokenizer.model_max_length, dm.pipe.text_encoder.config.hidden_size)
        with torch.no_grad():
            unet(torch.randn(1, c, s, s), 10, encoder_hidden_states=ctx)
    finally:
        for h in handles:
            h.remove()
    for e in skips:
        src = outs[e.source]
        assert torch.equal(ins[e.target][:, -src.shape[1]:], src), (e.source, e.target)


def test_sd_every_capture_point_is_on_one_node(dm):
    g = architecture.diffusion_graph(dm)
    unet = dm.pipe.unet
    check_hooks(g, architecture.diffusion_hooks(unet))
    for name in diffusion_capture.attention_layers(unet) + diffusion_capture.attention_layers(unet, cross=False):
        assert node_with_hook(g, name).name == f"unet.{name}"
    # Every array a diffusion Step records has a home (the per-layer maps are the attention layers').
    step_arrays = {f.name for f in dataclasses.fields(diffusion_capture.Step)} - {"index", "timestep", "layers", "self_attn"}
    assert set(architecture.STEP_ARRAYS) == step_arrays
    assert node_with_hook(g, "model_input").name == "unet.conv_in"
    assert node_with_hook(g, "noise_cond").name == "unet.conv_out"


# --- the map's words in the page's language ------------------------------------------------------


@pytest.mark.parametrize("family", ["text", "vision", "diffusion"])
def test_the_maps_words_are_in_the_catalogue_and_served_in_spanish(sd_client, family):
    """Every label, fact name, edge label and config name of the map is a catalogue entry (its numbers
    as {0}, {1}…), and ?lang=es serves each one as the catalogue translates it; the structure is the same."""
    from app import architecture as arch
    from app.i18n import gettext_for, read_catalog

    ids = {m.id for m in read_catalog("es") if m.id}
    en = sd_client.get(f"/api/{family}/architecture", params={"lang": "en"}).json()
    es = sd_client.get(f"/api/{family}/architecture", params={"lang": "es"}).json()
    tr = gettext_for("es")
    assert [n["id"] for n in en["nodes"]] == [n["id"] for n in es["nodes"]] and en["rows"] == es["rows"]
    words = [k for k in en["config"]]
    for a, b in zip(en["nodes"], es["nodes"]):
        words += [a["label"], *a["facts"]]
        assert b["label"] == arch.say(tr, a["label"])
        assert list(b["facts"]) == [arch.say(tr, k) for k in a["facts"]]
        assert list(b["shapes"]) == [arch.say(tr, k) for k in a["shapes"]]
        words += list(a["shapes"])
        assert list(a["shapes"].values()) == list(b["shapes"].values())  # the sizes themselves stay
        assert (a["hooks"], a["name"], a["link"]) == (b["hooks"], b["name"], b["link"])
    words += [e["label"] for e in en["edges"] if e["label"]]
    missing = sorted({arch.template(w) for w in words} - ids)
    assert not missing, f"map words not in the catalogue: {missing}"
    changed = sum(a["label"] != b["label"] for a, b in zip(en["nodes"], es["nodes"]))
    assert changed > len(en["nodes"]) // 2  # most labels really change language
