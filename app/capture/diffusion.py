"""Capture for Stable Diffusion 1.x pipelines (any `StableDiffusionPipeline`).

Attention is recorded the way diffusers means it to be changed: by attention processors
(`unet.set_attn_processor`), not by monkey-patching. `RecordingProcessor` computes the softmax
explicitly where it must record it (cross-attention: tokens are few, so the [pixels, tokens] maps
are cheap) and uses fused SDPA everywhere else, because recording self-attention costs far more
(MODEL-NOTES: 6× per step at 64 px). The training recipe uses the same processor for its grounding
loss, so what is trained is exactly what the page shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


class RecordingProcessor:
    """Records attention probabilities into `sink[name]` as [batch, heads, queries, keys].

    cross: record cross-attention (queries = latent pixels, keys = prompt tokens);
    self_attn: also record self-attention (on request only: [pixels, pixels] per head);
    detach: False keeps the graph (training's grounding loss), True for capture.
    """

    def __init__(self, name: str, sink: dict[str, list[torch.Tensor]], *, cross: bool = True,
                 self_attn: bool = False, detach: bool = True):
        self.name, self.sink, self.cross, self.self_attn, self.detach = name, sink, cross, self_attn, detach
        self.fused = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        is_cross = encoder_hidden_states is not None
        if not (self.cross if is_cross else self.self_attn):
            return self.fused(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, _, _ = hidden_states.shape
        context = encoder_hidden_states if is_cross else hidden_states
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if is_cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        query, key, value = (attn.head_to_batch_dim(t) for t in (query, key, value))
        probs = attn.get_attention_scores(query, key, attention_mask)  # [batch*heads, queries, keys]
        rec = probs.view(batch, attn.heads, probs.shape[1], probs.shape[2])
        self.sink.setdefault(self.name, []).append(rec.detach() if self.detach else rec)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def cross_attention_layers(unet) -> list[str]:
    """Names of the UNet's cross-attention layers (attn2 of each transformer block), in forward order."""
    return [name for name in unet.attn_processors if name.endswith("attn2.processor")]


@contextmanager
def recording(unet, *, self_attn: bool = False, detach: bool = True) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Install recording processors on every attention layer; restore the previous ones on exit,
    whether the run finished or raised (the same promise as hooks.hooked)."""
    previous = unet.attn_processors
    sink: dict[str, list[torch.Tensor]] = {}
    unet.set_attn_processor({
        name: RecordingProcessor(name.removesuffix(".processor"), sink, self_attn=self_attn, detach=detach)
        for name in previous
    })
    try:
        yield sink
    finally:
        unet.set_attn_processor(previous)
