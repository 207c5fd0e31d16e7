"""The one place where hooks are added to a model and removed again.

Hooks are global state on a shared model (TransformerLens calls this out): a hook left behind by one
request would record into the next. So every capture goes through `hooked`, whose `finally`
removes exactly the handles it added, whether the forward pass returned or raised.

A hook on a shared model also fires for every other thread's forward pass through that module
(two requests captured at once by the server's workers). So each capture marks its own context
(a ContextVar, per thread) and its hooks act only on a forward run in that context: concurrent
captures on one model each record their own input and nothing else.

Attention is recorded without module hooks, the way transformers means it to be changed: the
models are loaded with an attention implementation of ours (`recording_attention`, registered in
transformers' AttentionInterface), which is the family's own eager attention and also hands Q, K,
V, the weights and the output to the capture running in the same context. `hooked(...,
attention=fn)` sets that recorder and unsets it in the same `finally`; a forward with no capture
running records nothing. One function call per layer instead of four hooked modules keeps a small
model's capture near its plain forward (a hooked module costs ~15 µs here: register, torch's slow
call path, the callback, remove).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

import numpy as np
import torch
from torch import nn

Kind = Literal["forward", "pre", "forward_kwargs"]


class _Capture:
    """The capture running in a context: its identity, and its attention recorder if it has one."""

    __slots__ = ("attention",)

    def __init__(self, attention: Callable | None):
        self.attention = attention


_running: ContextVar[_Capture | None] = ContextVar("glassbox_capture", default=None)


def recording_attention(name: str, eager: Callable) -> str:
    """Register `name` as a transformers attention implementation: `eager` (the model family's own
    eager attention function) that also calls the running capture's recorder with
    (module, query, key, value, weights, output). Load models with attn_implementation=name."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    def attend(module, query, key, value, attention_mask, **kwargs):
        output, weights = eager(module, query, key, value, attention_mask, **kwargs)
        run = _running.get()
        if run is not None and run.attention is not None:
            run.attention(module, query, key, value, weights, output)
        return output, weights

    AttentionInterface.register(name, attend)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["eager"])  # eager's additive mask
    return name


def _only_in(run: _Capture, fn: Callable) -> Callable:
    def guarded(*args, **kwargs):  # another thread's forward through a module we hooked: not ours
        if _running.get() is run:
            return fn(*args, **kwargs)
        return None

    return guarded


@contextmanager
def hooked(hooks: Iterable[tuple[nn.Module, Kind, Callable]], attention: Callable | None = None) -> Iterator[None]:
    """hooks: (module, kind, fn) triples; fn has torch's hook signature for that kind
    ("forward_kwargs": a forward hook that also receives the call's keyword arguments).
    attention: the recorder `recording_attention` calls during the block.
    Both act only on forward passes run in this context (this thread, inside the block)."""
    run = _Capture(attention)
    token = _running.set(run)
    handles = []
    try:
        for module, kind, fn in hooks:
            fn = _only_in(run, fn)
            if kind == "forward":
                handles.append(module.register_forward_hook(fn))
            elif kind == "forward_kwargs":
                handles.append(module.register_forward_hook(fn, with_kwargs=True))
            else:
                handles.append(module.register_forward_pre_hook(fn))
        yield
    finally:
        _running.reset(token)
        for h in handles:
            h.remove()


def float32_view(t: torch.Tensor) -> np.ndarray:
    """What a hook recorded, as float32 numpy: a view of a float32 tensor (no copy; wire.encode packs
    strides), a converted copy of any other (float16 on a GPU)."""
    return (t if t.dtype == torch.float32 else t.float()).numpy()


def meaning(meanings: dict[str, str], name: str) -> str:
    """A hook's shape and meaning from a family's table keyed with the layer written {l}
    ("blocks.3.attn.hook_q" -> meanings["blocks.{l}.attn.hook_q"])."""
    return meanings[re.sub(r"^blocks\.\d+\.", "blocks.{l}.", name)]


def hook_count(model: nn.Module) -> int:
    """Hooks currently on any submodule: tests use it to show nothing leaks. transformers' own output
    recorders (installed once, the first time a model is asked for its attentions or hidden states,
    and idle unless asked) are the library's, not a capture's, and are not counted."""
    return sum(
        not getattr(fn, "__module__", "").startswith("transformers.")
        for m in model.modules()
        for fn in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
    )
