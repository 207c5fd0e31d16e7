"""Loads each served model once, at start-up: a Hub id ("gpt2", "distilgpt2") or a local folder.

Only safetensors weights are accepted (no pickle), and a request can only name a model that was
configured here: no path or Hub id ever comes from a request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A configured model could not be loaded; the message names the folder and what is missing."""


@dataclass
class TextModel:
    name: str
    source: str  # the Hub id or folder it came from
    model: object  # transformers.GPT2LMHeadModel
    tokenizer: object
    card_path: Path | None = None  # README.md model card, for local folders

    @property
    def config(self):
        return self.model.config

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@dataclass
class Registry:
    text: dict[str, TextModel] = field(default_factory=dict)

    def text_model(self, name: str | None) -> TextModel:
        if name is None:
            return next(iter(self.text.values()))
        try:
            return self.text[name]
        except KeyError:
            raise KeyError(f"Unknown model {name!r}; this server has: {', '.join(self.text)}") from None


def _check_folder(path: Path, needed: list[str]) -> None:
    if not path.is_dir():
        raise ModelLoadError(f"model folder {path} does not exist")
    missing = [n for n in needed if not (path / n).exists()]
    if missing:
        raise ModelLoadError(f"model folder {path} is missing {', '.join(missing)}")


def load_gpt2(name_or_path: str) -> TextModel:
    """Any GPT2LMHeadModel checkpoint. Eager attention, because the fused (SDPA) kernels return
    no attention weights and capture needs them exactly as the model computes them."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    path = Path(name_or_path)
    local = path.exists() or name_or_path.startswith((".", "/"))
    if local:
        _check_folder(path, ["config.json", "model.safetensors"])
    try:
        model = GPT2LMHeadModel.from_pretrained(name_or_path, attn_implementation="eager", use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load GPT-2 model {name_or_path!r}: {str(e).splitlines()[0]}") from e
    if model.config.model_type != "gpt2":
        raise ModelLoadError(f"{name_or_path!r} is a {model.config.model_type} model, not GPT-2")
    model.eval()
    name = path.name if local else name_or_path
    card = path / "README.md" if local and (path / "README.md").exists() else None
    log.info("loaded %s from %s", name, name_or_path)
    return TextModel(name=name, source=name_or_path, model=model, tokenizer=tokenizer, card_path=card)


def load_registry(settings) -> Registry:
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    reg = Registry()
    tm = load_gpt2(settings.gpt2)
    reg.text[tm.name] = tm
    return reg
