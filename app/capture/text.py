"""Capture for GPT-2 (any transformers GPT2LMHeadModel): one forward pass with hooks -> TextTrace.

Hook points are named as in TransformerLens, with their shapes (batch of one dropped):

    hook_embed                        [pos, d_model]     token embedding (wte)
    hook_pos_embed                    [pos, d_model]     position embedding (wpe)
    blocks.{l}.ln1.hook_normalized    [pos, d_model]     X, the input of the attention's c_attn
    blocks.{l}.attn.hook_q / _k / _v  [head, pos, d_head] split from c_attn's output, as the attention reads them
    blocks.{l}.attn.hook_pattern      [head, query_pos, key_pos]  softmax(QKᵀ/√d + mask)
    blocks.{l}.attn.hook_z            [head, pos, d_head] pattern · V, the input of c_proj
    blocks.{l}.attn.hook_result       [pos, d_model]     concat(Z) · Wo + bo
    blocks.{l}.hook_resid_post        [pos, d_model]     the residual stream after the block
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers.models.gpt2 import modeling_gpt2 as _gpt2

from app.capture.hooks import float32_view, hooked, recording_attention
from app.capture.hooks import meaning as hook_meaning

# The attention implementation GPT-2 models are loaded with (app.registry): GPT-2's own eager
# attention, which also hands Q, K, V, the weights and Z to a running capture.
ATTENTION = recording_attention("glassbox_gpt2", _gpt2.eager_attention_forward)


def hook_names(n_layers: int) -> list[str]:
    """Every name a trace holds, in the order the forward pass makes them."""
    names = ["hook_embed", "hook_pos_embed"]
    for l in range(n_layers):
        names += [
            f"blocks.{l}.ln1.hook_normalized",
            f"blocks.{l}.attn.hook_q",
            f"blocks.{l}.attn.hook_k",
            f"blocks.{l}.attn.hook_v",
            f"blocks.{l}.attn.hook_pattern",
            f"blocks.{l}.attn.hook_z",
            f"blocks.{l}.attn.hook_result",
            f"blocks.{l}.hook_resid_post",
        ]
    return names


# What each hook holds, with its shape: the manifest of an exported trace (app/export.py) reads these.
# Keyed by name with the layer written {l}; the module docstring shows the same table.
MEANINGS = {
    "hook_embed": "[pos, d_model] token embedding (wte)",
    "hook_pos_embed": "[pos, d_model] position embedding (wpe)",
    "blocks.{l}.ln1.hook_normalized": "[pos, d_model] X, the input of the attention's c_attn (after ln_1)",
    "blocks.{l}.attn.hook_q": "[head, pos, d_head] queries, split from c_attn's output",
    "blocks.{l}.attn.hook_k": "[head, pos, d_head] keys, split from c_attn's output",
    "blocks.{l}.attn.hook_v": "[head, pos, d_head] values, split from c_attn's output",
    "blocks.{l}.attn.hook_pattern": "[head, query_pos, key_pos] attention: softmax(QKᵀ/√d_head + causal mask)",
    "blocks.{l}.attn.hook_z": "[head, pos, d_head] pattern · V, each head's output before c_proj",
    "blocks.{l}.attn.hook_result": "[pos, d_model] concat(Z) · Wo + bo, the attention's output",
    "blocks.{l}.hook_resid_post": "[pos, d_model] the residual stream after the block",
}


def meaning(name: str) -> str:
    return hook_meaning(MEANINGS, name)


class TextTooLong(ValueError):
    pass


@dataclass
class TextTrace:
    model: str
    text: str
    token_ids: list[int]
    tokens: list[str]
    n_layers: int
    n_heads: int
    d_head: int
    d_model: int
    acts: dict[str, np.ndarray]  # hook name -> float32 array, shapes as in the module docstring
    last_logits: np.ndarray  # [vocab] the model's logits for the token after the text
    derived: dict = field(default_factory=dict)  # lazily computed views (logit lens), cached with the trace

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.acts.values()) + self.last_logits.nbytes

    def pattern(self, layer: int) -> np.ndarray:
        return self.acts[f"blocks.{layer}.attn.hook_pattern"]


def tokenize(tm, text: str) -> list[int]:
    ids = tm.tokenizer(text)["input_ids"]
    n_ctx = tm.config.n_positions
    if len(ids) > n_ctx:
        raise TextTooLong(f"The text is {len(ids)} tokens long; {tm.name} reads at most {n_ctx}. Shorten it.")
    return ids


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    # Decoded one by one: what the token stands for ("Ġthe" -> " the"). A character split over two
    # byte-level tokens (some emoji) shows as "�" in each half; that is what the model sees.
    return tokenizer.batch_decode([[i] for i in ids])


@torch.no_grad()
def capture(tm, text: str) -> TextTrace:
    """1. tokenize; 2. forward once, recording every block (the attention through ATTENTION, the
    rest with two hooks per block); 3. gather arrays into a trace."""
    model, cfg = tm.model, tm.config
    ids = tokenize(tm, text)
    if not ids:
        raise ValueError("The text is empty: type a few words.")
    H, D = cfg.n_head, cfg.n_embd
    dh = D // H
    acts: dict[str, torch.Tensor] = {}
    tr = model.transformer
    layer_of = {id(block.attn): l for l, block in enumerate(tr.h)}

    def attention(module, q, k, v, weights, z):  # q, k, v, weights [1, head, pos, ·]; z [1, pos, head, d_head]
        l = layer_of[id(module)]
        acts.update({f"blocks.{l}.attn.hook_{n}": t for n, t in zip(("q", "k", "v", "pattern", "z"), (q, k, v, weights, z))})

    def attn_ends(l):  # the attention's input is ln_1's output, X; its output is concat(Z)·Wo + bo
        def fn(_module, inp, out):
            acts[f"blocks.{l}.ln1.hook_normalized"], acts[f"blocks.{l}.attn.hook_result"] = inp[0], out[0]

        return fn

    def resid_post(l):
        def fn(_module, _inp, out):
            acts[f"blocks.{l}.hook_resid_post"] = out[0] if isinstance(out, tuple) else out

        return fn

    hooks = []
    for l, block in enumerate(tr.h):
        hooks += [(block.attn, "forward", attn_ends(l)), (block, "forward", resid_post(l))]
    input_ids = torch.tensor([ids])
    with hooked(hooks, attention=attention):
        # Only the last position's logits are kept (the logit lens unembeds the stream itself), so the
        # unembedding runs on one position: with a 50k vocabulary that is most of the forward's cost.
        out = model(input_ids, use_cache=False, logits_to_keep=1)
    if "blocks.0.attn.hook_pattern" not in acts:
        raise RuntimeError(f"{tm.name} did not run glassbox's attention: load it with app.registry.load_gpt2")
    # The embeddings are lookups: the rows of wte and wpe the model added.
    acts["hook_embed"] = tr.wte.weight[input_ids[0]]
    acts["hook_pos_embed"] = tr.wpe.weight[: len(ids)]

    # Views, no copies (wire.encode packs strides); numpy's views cost a fraction of torch's on
    # arrays this small.
    arrays: dict[str, np.ndarray] = {}
    for name in hook_names(cfg.n_layer):
        a = float32_view(acts[name])
        if a.ndim >= 3 and a.shape[0] == 1:
            a = a[0]
        if name.endswith("hook_z"):  # [pos, head, d_head] -> [head, pos, d_head]
            a = a.transpose(1, 0, 2)
        arrays[name] = a
    return TextTrace(
        model=tm.name,
        text=text,
        token_ids=ids,
        tokens=token_texts(tm.tokenizer, ids),
        n_layers=cfg.n_layer,
        n_heads=H,
        d_head=dh,
        d_model=D,
        acts=arrays,
        last_logits=out.logits[0, -1].float().clone().numpy(),  # a copy: a view would keep all [pos, vocab] logits cached
    )


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def next_tokens(tm, trace: TextTrace, temperature: float, k: int) -> list[dict]:
    """Top-k of softmax(logits / T) from the logits already computed: no new forward pass, so a
    temperature slider answers at once (as Transformer Explainer does)."""
    probs = softmax(trace.last_logits.astype(np.float64) / temperature)
    top = np.argsort(-probs)[:k]
    texts = token_texts(tm.tokenizer, top.tolist())
    return [
        {"id": int(i), "text": t, "prob": float(probs[i]), "logit": float(trace.last_logits[i])}
        for i, t in zip(top, texts)
    ]


def sample_next(tm, trace: TextTrace, temperature: float, seed: int | None) -> dict:
    probs = softmax(trace.last_logits.astype(np.float64) / temperature)
    rng = np.random.default_rng(seed)
    i = int(rng.choice(len(probs), p=probs / probs.sum()))
    return {"id": i, "text": tm.tokenizer.decode([i]), "prob": float(probs[i])}


def head_walkthrough(tm, trace: TextTrace, layer: int, head: int) -> dict[str, np.ndarray]:
    """The math of one head with the model's own numbers: the weights are sliced from c_attn
    (a Conv1D: x @ W + b, W is [d_model, 3·d_model]) and c_proj; the activations are the captured ones."""
    attn = tm.model.transformer.h[layer].attn
    D, dh = trace.d_model, trace.d_head
    W = attn.c_attn.weight.detach().float().numpy()
    cols = slice(head * dh, (head + 1) * dh)
    b = attn.c_attn.bias.detach().float().numpy()
    wq, wk, wv = W[:, cols], W[:, D:][:, cols], W[:, 2 * D :][:, cols]
    bq, bk, bv = b[cols], b[D:][cols], b[2 * D :][cols]
    q = trace.acts[f"blocks.{layer}.attn.hook_q"][head]
    k = trace.acts[f"blocks.{layer}.attn.hook_k"][head]
    v = trace.acts[f"blocks.{layer}.attn.hook_v"][head]
    scores = q @ k.T
    scaled = scores / math.sqrt(dh)
    T = scores.shape[0]
    masked = np.where(np.tril(np.ones((T, T), dtype=bool)), scaled, -np.inf).astype(np.float32)
    return {
        "x": trace.acts[f"blocks.{layer}.ln1.hook_normalized"],
        "wq": wq,
        "wk": wk,
        "wv": wv,
        "bq": bq,
        "bk": bk,
        "bv": bv,
        "q": q,
        "k": k,
        "v": v,
        "scores": scores,
        "scaled": scaled,
        "masked": masked,
        "attention": trace.pattern(layer)[head],
        "z": trace.acts[f"blocks.{layer}.attn.hook_z"][head],
        "wo": attn.c_proj.weight.detach().float().numpy()[cols, :],
        "bo": attn.c_proj.bias.detach().float().numpy(),
        "out": trace.acts[f"blocks.{layer}.attn.hook_result"],
    }


@torch.no_grad()
def logit_lens(tm, trace: TextTrace, k: int) -> dict:
    """What the model would predict after each layer: the residual stream through the final layer
    norm and the unembedding (nostalgebraist 2020). Row "embed" is the stream before any block."""
    key = ("lens", k)
    if key in trace.derived:
        return trace.derived[key]
    ln_f, unembed = tm.model.transformer.ln_f, tm.model.lm_head
    streams = [trace.acts["hook_embed"] + trace.acts["hook_pos_embed"]]
    streams += [trace.acts[f"blocks.{l}.hook_resid_post"] for l in range(trace.n_layers)]
    top = []
    for l, s in enumerate(streams):
        x = torch.from_numpy(s)
        # The block hooks see the stream before ln_f, so the last row equals the model's own logits.
        probs = torch.softmax(unembed(ln_f(x)).float(), dim=-1)
        p, i = probs.topk(k, dim=-1)
        top.append(
            [
                [{"id": int(ii), "text": tm.tokenizer.decode([int(ii)]), "prob": float(pp)} for pp, ii in zip(prow, irow)]
                for prow, irow in zip(p, i)
            ]
        )
    result = {"layers": ["embed"] + [str(l) for l in range(trace.n_layers)], "top": top}
    trace.derived[key] = result
    return result
