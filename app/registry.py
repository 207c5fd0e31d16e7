"""Loads each served model once, at start-up: a Hub id ("gpt2", "distilgpt2") or a local folder.

Only safetensors weights are accepted (no pickle), and a request can only name a model that was
configured here: no path or Hub id ever comes from a request.
"""

from __future__ import annotations

import logging
import threading
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
class DiffusionModel:
    name: str
    source: str
    pipe: object  # diffusers.StableDiffusionPipeline, shared: runs on it are serialised (processors are module state)
    card_path: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    preview_map: object = None  # numpy [5, 3], fitted on first use by capture.diffusion.preview_map

    @property
    def image_size(self) -> int:
        return self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    @property
    def n_params(self) -> int:
        return sum(p.numel() for m in (self.pipe.unet, self.pipe.vae, self.pipe.text_encoder) for p in m.parameters())


@dataclass
class VisionModel:
    name: str
    source: str
    model: object  # transformers.ViTForImageClassification
    processor: object  # its image processor (resize, rescale, normalise), from the same checkpoint
    card_path: Path | None = None

    @property
    def config(self):
        return self.model.config

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def labels(self) -> list[str]:
        id2label = self.config.id2label or {}
        return [str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(self.config.num_labels)]


@dataclass
class Registry:
    text: dict[str, TextModel] = field(default_factory=dict)
    vision: dict[str, VisionModel] = field(default_factory=dict)
    diffusion: dict[str, DiffusionModel] = field(default_factory=dict)

    def diffusion_model(self, name: str | None) -> DiffusionModel:
        return _pick(self.diffusion, name, "This server runs no Stable Diffusion model (start it with --sd NAME_OR_PATH).")

    def vision_model(self, name: str | None) -> VisionModel:
        return _pick(self.vision, name, "This server runs no ViT model (start it with --vit NAME_OR_PATH).")

    def text_model(self, name: str | None) -> TextModel:
        return _pick(self.text, name, "This server runs no GPT-2 model.")


class UnknownModel(LookupError):
    """A request named a model this server was not started with (the app answers 404)."""


def _pick(models: dict, name: str | None, none_served: str):
    """The served model called `name`, or the first one when name is None."""
    if not models:
        raise UnknownModel(none_served)
    if name is None:
        return next(iter(models.values()))
    try:
        return models[name]
    except KeyError:
        raise UnknownModel(f"Unknown model {name!r}; this server has: {', '.join(models)}") from None


def _check_folder(path: Path, needed: list[str]) -> None:
    if not path.is_dir():
        raise ModelLoadError(f"model folder {path} does not exist")
    missing = [n for n in needed if not (path / n).exists()]
    if missing:
        raise ModelLoadError(f"model folder {path} is missing {', '.join(missing)}")


def _locate(name_or_path: str, needed: list[str]) -> tuple[Path, bool]:
    """The folder (checked for the files it needs) or a Hub id: (path, is_local)."""
    path = Path(name_or_path)
    local = path.exists() or name_or_path.startswith((".", "/"))
    if local:
        _check_folder(path, needed)
    return path, local


def _name_and_card(name_or_path: str, path: Path, local: bool) -> tuple[str, Path | None]:
    """A served model's name (its folder's, or the Hub id) and its README model card, if local."""
    card = path / "README.md" if local and (path / "README.md").exists() else None
    return (path.name if local else name_or_path), card


def _load_transformers(name_or_path: str, what: str, model_type: str, needed: list[str], load):
    """(model in eval mode, its tokenizer or processor, name, model card) from `load()`, any failure
    a ModelLoadError that names the checkpoint, and a model of another type refused."""
    path, local = _locate(name_or_path, needed)
    try:
        model, companion = load()
    except Exception as e:  # noqa: BLE001 - a corrupt file raises anything (SafetensorError, KeyError...)
        raise ModelLoadError(f"could not load {what} model {name_or_path!r}: {str(e).splitlines()[0]}") from e
    if model.config.model_type != model_type:
        raise ModelLoadError(f"{name_or_path!r} is a {model.config.model_type} model, not {what}")
    model.eval()
    name, card = _name_and_card(name_or_path, path, local)
    log.info("loaded %s from %s", name, name_or_path)
    return model, companion, name, card


def load_gpt2(name_or_path: str) -> TextModel:
    """Any GPT2LMHeadModel checkpoint. Its attention is GPT-2's eager attention (the fused SDPA
    kernels return no attention weights; capture needs them exactly as the model computes them),
    registered as glassbox's recording attention (app.capture.hooks)."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from app.capture.text import ATTENTION

    model, tokenizer, name, card = _load_transformers(
        name_or_path, "GPT-2", "gpt2", ["config.json", "model.safetensors"],
        lambda: (GPT2LMHeadModel.from_pretrained(name_or_path, attn_implementation=ATTENTION, use_safetensors=True),
                 AutoTokenizer.from_pretrained(name_or_path)))
    return TextModel(name=name, source=name_or_path, model=model, tokenizer=tokenizer, card_path=card)


def load_sd(name_or_path: str, device: str = "auto") -> DiffusionModel:
    """Any Stable Diffusion 1.x pipeline folder or Hub id (unet, vae, text_encoder, tokenizer,
    scheduler), without a safety checker. float16 on a GPU, float32 on the CPU."""
    from diffusers import StableDiffusionPipeline

    path, local = _locate(name_or_path, ["model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"])
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            name_or_path, safety_checker=None, requires_safety_checker=False, use_safetensors=True, torch_dtype=dtype
        ).to(device)
    except Exception as e:  # noqa: BLE001 - a corrupt file raises anything (SafetensorError, KeyError...)
        raise ModelLoadError(f"could not load Stable Diffusion pipeline {name_or_path!r}: {str(e).splitlines()[0]}") from e
    name, card = _name_and_card(name_or_path, path, local)
    log.info("loaded %s from %s on %s", name, name_or_path, device)
    return DiffusionModel(name=name, source=name_or_path, pipe=pipe, card_path=card)


def load_vit(name_or_path: str) -> VisionModel:
    """Any ViTForImageClassification checkpoint (google/vit-base-patch16-224, models/vit-shapes) with
    its image processor. Its attention is ViT's eager attention (the fused SDPA kernels return no
    attention weights; capture needs them exactly as the model computes them), registered as
    glassbox's recording attention (app.capture.hooks)."""
    from transformers import AutoImageProcessor, ViTForImageClassification

    from app.capture.vision import ATTENTION

    model, processor, name, card = _load_transformers(
        name_or_path, "ViT", "vit", ["config.json", "model.safetensors", "preprocessor_config.json"],
        lambda: (ViTForImageClassification.from_pretrained(name_or_path, attn_implementation=ATTENTION, use_safetensors=True),
                 AutoImageProcessor.from_pretrained(name_or_path)))
    return VisionModel(name=name, source=name_or_path, model=model, processor=processor, card_path=card)


def load_registry(settings) -> Registry:
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    reg = Registry()
    tm = load_gpt2(settings.gpt2)
    reg.text[tm.name] = tm
    if settings.vit:
        vm = load_vit(settings.vit)
        reg.vision[vm.name] = vm
    default_sd = type(settings).model_fields["sd"].default
    # The shipped SD folder is optional until it is committed; a folder the user names is not.
    if settings.sd and (settings.sd != default_sd or Path(default_sd).exists()):
        dm = load_sd(settings.sd, settings.device)
        reg.diffusion[dm.name] = dm
    return reg
