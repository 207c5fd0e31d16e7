"""Capture for ViT (any transformers ViTForImageClassification): one forward pass with hooks -> VisionTrace.

Hook points are named as in TransformerLens, with their shapes (batch of one dropped; N = 1 + P
tokens: CLS first, then the P patches row by row):

    hook_patch_embed                  [patch, d_model]   each p×p×3 patch through the patch projection
    hook_pos_embed                    [N, d_model]       the learned position embeddings (row 0: CLS's)
    hook_embed                        [N, d_model]       CLS + patch embeddings + positions: the first stream
    blocks.{l}.attn.hook_q / _k / _v  [head, N, d_head]  from q_proj / k_proj / v_proj, as the attention reads them
    blocks.{l}.attn.hook_pattern      [head, query, key] softmax(QKᵀ/√d): no mask, every token sees every token
    blocks.{l}.hook_resid_post        [N, d_model]       the residual stream after the block

Derived views are computed here and nowhere else, lazily, and kept with the trace: attention
rollout (`rollout`), each head's mean attention distance (`attention_distance`) and the cosine
similarity of the position embeddings (`position_similarity`).
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers.models.vit import modeling_vit as _vit

from app.capture.hooks import float32_view, hooked, recording_attention
from app.capture.hooks import meaning as hook_meaning

# The attention implementation ViT models are loaded with (app.registry): ViT's own eager
# attention, which also hands Q, K, V and the weights to a running capture.
ATTENTION = recording_attention("glassbox_vit", _vit.eager_attention_forward)


def hook_names(n_layers: int) -> list[str]:
    """Every name a trace holds, in the order the forward pass makes them."""
    names = ["hook_patch_embed", "hook_pos_embed", "hook_embed"]
    for l in range(n_layers):
        names += [
            f"blocks.{l}.attn.hook_q",
            f"blocks.{l}.attn.hook_k",
            f"blocks.{l}.attn.hook_v",
            f"blocks.{l}.attn.hook_pattern",
            f"blocks.{l}.hook_resid_post",
        ]
    return names


# What each hook holds, with its shape: the manifest of an exported trace (app/export.py) reads these.
# Keyed by name with the layer written {l}; the module docstring shows the same table.
MEANINGS = {
    "hook_patch_embed": "[patch, d_model] each p×p×3 patch through the patch projection",
    "hook_pos_embed": "[N, d_model] the learned position embeddings (row 0: CLS's); N = 1 + patches",
    "hook_embed": "[N, d_model] CLS + patch embeddings + positions: the first residual stream",
    "blocks.{l}.attn.hook_q": "[head, N, d_head] queries, from q_proj",
    "blocks.{l}.attn.hook_k": "[head, N, d_head] keys, from k_proj",
    "blocks.{l}.attn.hook_v": "[head, N, d_head] values, from v_proj",
    "blocks.{l}.attn.hook_pattern": "[head, query, key] attention: softmax(QKᵀ/√d_head), no mask; token 0 is CLS",
    "blocks.{l}.hook_resid_post": "[N, d_model] the residual stream after the block",
}


def meaning(name: str) -> str:
    return hook_meaning(MEANINGS, name)


def pair(x) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


@dataclass
class VisionTrace:
    model: str
    image_id: str
    name: str  # the upload's file name or the gallery picture's caption (user text: escape when shown)
    image_size: tuple[int, int]  # (height, width) of the model's input, pixels
    patch_size: tuple[int, int]
    grid: tuple[int, int]  # (rows, cols) of patches; P = rows · cols
    n_layers: int
    n_heads: int
    d_head: int
    d_model: int
    labels: list[str]  # class names, id2label order
    pixel_values: np.ndarray  # [3, H, W] what the model reads (resized, normalised)
    normalisation: tuple  # (mean, std, rescale factor) of the processor, to undo for `seen`
    acts: dict[str, np.ndarray]  # hook name -> float32 array, shapes as in the module docstring
    logits: np.ndarray  # [classes]
    original: dict = field(default_factory=dict)  # format, width, height as uploaded
    derived: dict = field(default_factory=dict)  # lazily computed views, cached with the trace

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.acts.values()) + 2 * self.pixel_values.nbytes + self.logits.nbytes  # + `seen`

    @property
    def seen(self) -> np.ndarray:
        """[H, W, 3] uint8: pixel_values un-normalised, the picture as the model sees it (for the page,
        so made when a page first asks, not during the capture)."""
        return _cached(self, "seen", lambda: unnormalise(self.normalisation, self.pixel_values))

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def probs(self) -> np.ndarray:
        z = self.logits.astype(np.float64)
        e = np.exp(z - z.max())
        return e / e.sum()

    def pattern(self, layer: int) -> np.ndarray:
        return self.acts[f"blocks.{layer}.attn.hook_pattern"]


def prepare(vm, image) -> torch.Tensor:
    """PIL RGB -> pixel_values [1, 3, H, W] by the checkpoint's own image processor (resize, rescale,
    normalise), so an upload is read exactly as the model was trained to read pictures."""
    shape = _shape(vm)
    pv = vm.processor(images=image, return_tensors="pt")["pixel_values"]
    want = shape.image_size
    if tuple(pv.shape[-2:]) != want:
        raise ValueError(f"{vm.name}'s image processor makes {tuple(pv.shape[-2:])} px inputs; the model expects {want}.")
    return pv if pv.dtype == shape.dtype else pv.to(shape.dtype)


def normalisation(processor) -> tuple:
    """(mean, std, rescale factor) that the processor applied; None where it did not."""
    norm = getattr(processor, "do_normalize", False)
    return (processor.image_mean if norm else None, processor.image_std if norm else None,
            processor.rescale_factor if getattr(processor, "do_rescale", False) else None)


def unnormalise(norm: tuple, pv: np.ndarray) -> np.ndarray:
    """[3, H, W] pixel_values -> [H, W, 3] uint8, inverting the processor's normalise and rescale."""
    mean, std, rescale = norm
    x = pv.astype(np.float32)  # exact enough for 0..255, and a third of the time of float64
    if mean is not None:
        x = x * np.asarray(std, dtype=np.float32).reshape(-1, 1, 1) + np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    if rescale is not None:
        x = x / rescale
    return np.clip(x.transpose(1, 2, 0) + 0.5, 0, 255).astype(np.uint8)


@functools.cache
def _layer_names(n_layers: int) -> list[tuple[str, ...]]:
    """Per layer: the names of q, k, v, pattern and resid_post (made once, not per capture)."""
    return [tuple(f"blocks.{l}.attn.hook_{x}" for x in ("q", "k", "v", "pattern")) + (f"blocks.{l}.hook_resid_post",)
            for l in range(n_layers)]


@dataclass(frozen=True)
class _Shape:
    """What a capture reads of a model that never changes once loaded: read once per model, since a
    transformers config's attribute reads cost microseconds each and this forward is ~3 ms."""

    layer_of: dict  # id(attention module) -> layer
    n_heads: int
    d_model: int
    n_layers: int
    image_size: tuple[int, int]
    patch_size: tuple[int, int]
    labels: list
    dtype: torch.dtype  # the model's (float16 on a GPU); model.dtype walks the parameters each time


_shapes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> _Shape


def _shape(vm) -> _Shape:
    got = _shapes.get(vm.model)
    if got is None:
        cfg = vm.config
        got = _shapes[vm.model] = _Shape(
            layer_of={id(block.attention): l for l, block in enumerate(vm.model.vit.layers)},
            n_heads=cfg.num_attention_heads, d_model=cfg.hidden_size, n_layers=cfg.num_hidden_layers,
            image_size=pair(cfg.image_size), patch_size=pair(cfg.patch_size), labels=vm.labels,
            dtype=vm.model.dtype)
    return got


@torch.no_grad()
def capture(vm, image, image_id: str, name: str, original: dict | None = None) -> VisionTrace:
    """1. preprocess; 2. forward once, recording the attention through ATTENTION and the stream with a
    hook per block; 3. gather a trace. (Kept lean: on the shipped model the whole forward is ~4 ms,
    so every per-call step counts against the 1.10 × plain target.)"""
    model, shape = vm.model, _shape(vm)
    pixel_values = prepare(vm, image)
    H, D, L, layer_of = shape.n_heads, shape.d_model, shape.n_layers, shape.layer_of
    vit = model.vit
    attn: list = [None] * L  # per layer (q, k, v, weights), each [1, head, N, ·]
    resid: list = [None] * (L + 1)  # the stream: the embeddings, then each block's output
    patches = []

    def attention(module, q, k, v, weights, _out):
        attn[layer_of[id(module)]] = (q, k, v, weights)

    def stream(l):
        def fn(_module, inp, out):
            if l == 0:
                resid[0] = inp[0]  # the first block's input is the embeddings' output
            resid[l + 1] = out

        return fn

    hooks = [(vit.embeddings.patch_embeddings, "forward", lambda _m, _i, out: patches.append(out))]
    hooks += [(block, "forward", stream(l)) for l, block in enumerate(vit.layers)]
    with hooked(hooks, attention=attention):
        logits = model(pixel_values).logits[0]
    if attn[0] is None:
        raise RuntimeError(f"{vm.name} did not run glassbox's attention: load it with app.registry.load_vit")

    def np32(t: torch.Tensor) -> np.ndarray:  # without the batch axis
        return float32_view(t)[0]

    arrays: dict[str, np.ndarray] = {
        "hook_patch_embed": np32(patches[0]),
        # The position embeddings are a parameter, not an activation: a view of it, read here.
        "hook_pos_embed": np32(vit.embeddings.position_embeddings.detach()),
        "hook_embed": np32(resid[0]),
    }
    for l, names in enumerate(_layer_names(L)):
        for n, t in zip(names, (*attn[l], resid[l + 1])):
            arrays[n] = np32(t)
    (ih, iw), (ph, pw) = shape.image_size, shape.patch_size
    dh = D // H
    pv = pixel_values[0].float().numpy()
    return VisionTrace(
        model=vm.name,
        image_id=image_id,
        name=name,
        image_size=(ih, iw),
        patch_size=(ph, pw),
        grid=(ih // ph, iw // pw),
        n_layers=L,
        n_heads=H,
        d_head=dh,
        d_model=D,
        labels=shape.labels,
        pixel_values=pv,
        normalisation=normalisation(vm.processor),
        acts=arrays,
        logits=logits.float().numpy(),
        original=original or {},
    )


# ---------------------------------------------------------------------------------------------
# Derived views: computed once per trace, from the captured arrays only.


def _cached(trace: VisionTrace, key, compute):
    if key not in trace.derived:
        trace.derived[key] = compute()
    return trace.derived[key]


def rollout(trace: VisionTrace) -> np.ndarray:
    """Attention rollout after each layer, [layer, N, N] (Abnar & Zuidema 2020, §3): per layer the
    mean of the heads plus the residual connection as an identity, 0.5·mean_h(A) + 0.5·I, rows
    renormalised to sum to 1; then the product through the layers, R_l = Â_l · R_(l-1), R_(-1) = I.
    Row i of R_l: how much of each input token token i carries after layer l."""

    def compute():
        N = trace.n_patches + 1
        eye = np.eye(N)
        r = eye
        out = np.empty((trace.n_layers, N, N), np.float32)
        for l in range(trace.n_layers):
            a = 0.5 * trace.pattern(l).astype(np.float64).mean(axis=0) + 0.5 * eye
            a /= a.sum(axis=-1, keepdims=True)
            r = a @ r
            out[l] = r
        return out

    return _cached(trace, "rollout", compute)


def patch_centres(trace: VisionTrace) -> np.ndarray:
    """[P, 2] (y, x) of each patch's centre in input pixels, row by row as the tokens are."""
    rows, cols = trace.grid
    ph, pw = trace.patch_size
    yy, xx = np.meshgrid((np.arange(rows) + 0.5) * ph, (np.arange(cols) + 0.5) * pw, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def attention_distance(trace: VisionTrace) -> np.ndarray:
    """Each head's mean attention distance in input pixels, [layer, head] (the ViT paper's Fig. 7,
    Dosovitskiy et al. 2021): for every query patch, the distance to each key patch weighted by the
    attention it pays, averaged over query patches. CLS is neither a query nor a key here (it has no
    place in the image); each patch's attention over the patches is renormalised to sum to 1."""

    def compute():
        c = patch_centres(trace)
        dist = np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))  # [P, P]
        out = np.empty((trace.n_layers, trace.n_heads), np.float32)
        for l in range(trace.n_layers):
            a = trace.pattern(l)[:, 1:, 1:].astype(np.float64)  # [head, P, P]
            a /= a.sum(axis=-1, keepdims=True)
            out[l] = (a * dist).sum(-1).mean(-1)
        return out

    return _cached(trace, "distance", compute)


def position_similarity(trace: VisionTrace) -> np.ndarray:
    """Cosine similarity between the patches' position embeddings, [P, P] (the ViT paper's Fig. 7,
    centre): row i reshaped to the patch grid shows which places patch i's position resembles."""

    def compute():
        pos = trace.acts["hook_pos_embed"][1:].astype(np.float64)
        unit = pos / np.maximum(np.linalg.norm(pos, axis=-1, keepdims=True), 1e-12)
        return (unit @ unit.T).astype(np.float32)

    return _cached(trace, "pos_sim", compute)


def patch_pixels(trace: VisionTrace, patch: int) -> np.ndarray:
    """Patch i's pixels as the model reads them, [3, p, p]: flattened in this order (channel, row,
    column) and multiplied by the projection's weight [d_model, 3·p·p], plus its bias, they give
    hook_patch_embed[i] (the projection is a p×p convolution with stride p)."""
    rows, cols = trace.grid
    ph, pw = trace.patch_size
    r, c = divmod(patch, cols)
    return trace.pixel_values[:, r * ph : (r + 1) * ph, c * pw : (c + 1) * pw]


def top_classes(trace: VisionTrace, k: int) -> list[dict]:
    probs = trace.probs
    top = np.argsort(-probs)[:k]
    return [
        {"id": int(i), "label": trace.labels[i], "prob": float(probs[i]), "logit": float(trace.logits[i])} for i in top
    ]
