"""glassbox in a notebook: trace a text, a picture or a prompt with the code the server runs (the
registry's loaders, the capture modules, app.export) and get the arrays its "Download trace (.npz)"
gives, under the same hook names.

    from app.notebook import trace_text
    t = trace_text("The cat sat on the mat")
    t["blocks.0.attn.hook_pattern"].shape     # (4, 6, 6): [head, query_pos, key_pos]
    t.manifest["arrays"]["blocks.0.attn.hook_pattern"]["meaning"]
    t.save("cat.npz")                         # the same file as the page's download

A model is a folder or a Hub id, as for `glassbox serve` (safetensors only), loaded once per process.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from app import export
from app.capture import diffusion as diffusion_capture
from app.capture import text as text_capture
from app.capture import vision as vision_capture
from app.export import Exported, load
from app.images import Picture, gallery_picture, read_upload, upload_id
from app.registry import load_gpt2, load_sd, load_vit
from app.settings import Settings

__all__ = ["trace_text", "trace_image", "trace_prompt", "load", "Exported"]

DEFAULT = Settings()  # the shipped models (or GLASSBOX_GPT2 / _VIT / _SD), and the server's upload bounds


@lru_cache(maxsize=None)
def text_model(model: str):
    return load_gpt2(model)


@lru_cache(maxsize=None)
def vision_model(model: str):
    return load_vit(model)


@lru_cache(maxsize=None)
def diffusion_model(model: str, device: str = "auto"):
    return load_sd(model, device)


def trace_text(text: str, model: str = DEFAULT.gpt2) -> Exported:
    """A GPT-2 trace of `text`: every hook ([head, query_pos, key_pos] patterns ...), token_ids, logits."""
    tm = text_model(str(model))
    return export.text(tm, text_capture.capture(tm, text))


def trace_image(image, model: str = DEFAULT.vit) -> Exported:
    """A ViT trace of `image`: a file path (read as an upload is: EXIF turned upright, made RGB), a
    PIL image, an [H, W, 3] uint8 array, or a gallery id such as "scene-1" (GET /api/vision/gallery)."""
    vm = vision_model(str(model))
    pic, image_id = picture(image, vision_capture.pair(vm.config.image_size)[0])
    original = {"format": pic.format, "width": pic.width, "height": pic.height}
    return export.vision(vm, vision_capture.capture(vm, pic.image, image_id, pic.name, original))


def picture(image, side: int) -> tuple[Picture, str]:
    """The picture and its id, read exactly as the server reads a gallery id or an upload."""
    if isinstance(image, str) and not Path(image).exists():
        try:
            return gallery_picture(image, side), image
        except KeyError:
            raise FileNotFoundError(f"{image!r} is neither a file nor a gallery id") from None
    if isinstance(image, (str, Path)):
        data, name = Path(image).read_bytes(), Path(image).name
    else:
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise TypeError(f"trace_image takes a path, a PIL image, a uint8 array or a gallery id, not {type(image).__name__}")
        buf = io.BytesIO()  # lossless: as if the picture were uploaded as a PNG file
        image.save(buf, format="PNG")
        data, name = buf.getvalue(), "picture.png"
    return read_upload(data, name, DEFAULT.upload_max_bytes, DEFAULT.upload_max_pixels, side), upload_id(data)


def trace_prompt(prompt: str, model: str = DEFAULT.sd, *, negative: str = "", seed: int = 0, steps: int = 20,
                 guidance: float = 5.0, scheduler: str = "default", device: str = "auto") -> Exported:
    """A Stable Diffusion run, every step recorded: latents, noise predictions, x̂₀, word maps and
    cross-attention per step, and the image. The same settings give the same numbers as the server's
    run (on the same device); schedulers: app.capture.diffusion.SCHEDULERS."""
    dm = diffusion_model(str(model), device)
    req = diffusion_capture.Request(prompt=prompt, negative=negative, seed=seed, steps=steps, guidance=guidance,
                                    scheduler=scheduler)
    with dm.lock:  # the attention processors are the pipeline's state: one run at a time
        trace = diffusion_capture.run(dm, req, previews="none")  # previews are for the page, not exported
    return export.diffusion(dm, trace)
