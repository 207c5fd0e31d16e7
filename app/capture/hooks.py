"""The one place where hooks are added to a model and removed again.

Hooks are global state on a shared model (TransformerLens calls this out): a hook left behind by one
request would record into the next. So every capture goes through `hooked`, whose `finally`
removes exactly the handles it added, whether the forward pass returned or raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
import re
from contextlib import contextmanager
from typing import Literal

from torch import nn

Kind = Literal["forward", "pre", "forward_kwargs"]


@contextmanager
def hooked(hooks: Iterable[tuple[nn.Module, Kind, Callable]]) -> Iterator[None]:
    """hooks: (module, kind, fn) triples; fn has torch's hook signature for that kind
    ("forward_kwargs": a forward hook that also receives the call's keyword arguments)."""
    handles = []
    try:
        for module, kind, fn in hooks:
            if kind == "forward":
                handles.append(module.register_forward_hook(fn))
            elif kind == "forward_kwargs":
                handles.append(module.register_forward_hook(fn, with_kwargs=True))
            else:
                handles.append(module.register_forward_pre_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


def meaning(meanings: dict[str, str], name: str) -> str:
    """A hook's shape and meaning from a family's table keyed with the layer written {l}
    ("blocks.3.attn.hook_q" -> meanings["blocks.{l}.attn.hook_q"])."""
    return meanings[re.sub(r"^blocks\.\d+\.", "blocks.{l}.", name)]


def hook_count(model: nn.Module) -> int:
    """Hooks currently on any submodule: tests use it to show nothing leaks."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
