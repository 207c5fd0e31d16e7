"""A trace as numpy's .npz: what the server sends as "Download trace" and what app.notebook returns.

An .npz is a zip of .npy arrays; `np.load` opens it in any notebook without glassbox or pickle. The
arrays keep the capture's hook names (blocks.0.attn.hook_pattern ...), in float32 as captured; a
`manifest.json` member says what the file holds: the model, the input, the glassbox version and
date, and for every array its shape, dtype and meaning. np.load hands a member that is not an array
back as its bytes:

    npz = np.load("trace.npz")
    manifest = json.loads(npz["manifest.json"])
    pattern = npz["blocks.0.attn.hook_pattern"]      # [head, query_pos, key_pos]

No torch and no HTTP here: the routes and the notebook API both build an Exported from a trace.
"""

from __future__ import annotations

import io
import json
import re
import tomllib
import zipfile
from datetime import UTC, datetime
from importlib import metadata

import numpy as np

from app.capture import diffusion as diffusion_capture
from app.capture import text as text_capture
from app.capture import vision as vision_capture
from app.settings import ROOT

FORMAT = "glassbox-trace/1"
MANIFEST = "manifest.json"

# Arrays that are not hooks: what each holds, with its shape.
TEXT_EXTRAS = {
    "token_ids": "[pos] int64, the text's token ids (the manifest's input.tokens are their texts)",
    "logits": "[vocab] the model's logits for the token after the text",
}
VISION_EXTRAS = {
    "pixel_values": "[3, H, W] what the model reads: resized, rescaled and normalised by the checkpoint's image processor",
    "image": "[H, W, 3] uint8, pixel_values un-normalised: the picture as the model sees it",
    "logits": "[class] the classifier's logits (the manifest's labels name the classes)",
}
DIFFUSION_ARRAYS = {  # every step's arrays stacked: the first axis is the UNet call (the step)
    "timestep": "[step] the scheduler's timestep t of each UNet call",
    "model_input": "[step, 4, h, w] x_t as the UNet saw it (scaled by the scheduler)",
    "noise_cond": "[step, 4, h, w] ε predicted with the prompt",
    "noise_uncond": "[step, 4, h, w] ε predicted with the negative (empty) prompt; = noise_cond without guidance",
    "noise": "[step, 4, h, w] the guided ε the scheduler used: uncond + guidance · (cond − uncond)",
    "x0": "[step, 4, h, w] the predicted clean latent x̂₀ = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t",
    "latent": "[step, 4, h, w] the latent after the step (x_t−1); the last one is the image's",
    "words": "[step, token, h, w] cross-attention to each of input.tokens (the first input.n_tokens are the prompt's, "
    "with start and end; the rest padding): mean of layers and heads, at the latent's size; each pixel sums to 1",
    "image": "[H, W, 3] uint8, the pipeline's own output image",
}
LAYER = "[step, head, pixels, token] float16 (as captured): this cross-attention layer's softmax, pixels row by row"


class Exported(dict):
    """Array name -> np.ndarray, as a trace is exported; `manifest` says what each array is, `npz()`
    gives the file's bytes, `save(path)` writes it, `filename` is the name the server suggests."""

    def __init__(self, arrays: dict[str, np.ndarray], manifest: dict, filename: str):
        super().__init__(arrays)
        self.manifest = manifest
        self.filename = filename

    def npz(self) -> bytes:
        """The .npz file: one .npy per array (what np.savez writes), then manifest.json."""
        buf = io.BytesIO()
        # Stored, as np.savez stores: deflate saves a quarter of the bytes (measured on a 221-token
        # GPT-2 trace, mostly the causal zeros) at 15× the CPU, on a server a whole class shares.
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for name, a in self.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(a), allow_pickle=False)
            zf.writestr(MANIFEST, json.dumps(self.manifest, indent=1, ensure_ascii=False))
        return buf.getvalue()

    def save(self, path) -> None:
        with open(path, "wb") as f:
            f.write(self.npz())


def exported(arrays: dict[str, np.ndarray], meanings: dict[str, str], info: dict, filename: str) -> Exported:
    """Arrays with their manifest: `info` (family, model, input, config) and each array's shape,
    dtype and meaning, listed from the arrays themselves so that the two always agree."""
    manifest = {
        "format": FORMAT,
        "glassbox": version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **info,
        "arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype), "meaning": meanings[k]} for k, a in arrays.items()},
        "read_with": "npz = numpy.load(path); json.loads(npz['manifest.json']); npz['<array name>']",
    }
    return Exported(arrays, manifest, filename)


def load(file) -> Exported:
    """Read back an exported .npz (a path or a file object): its arrays and its manifest."""
    with np.load(file) as npz:
        manifest = json.loads(npz[MANIFEST])
        arrays = {k: npz[k] for k in npz.files if k != MANIFEST}
    return Exported(arrays, manifest, getattr(file, "name", str(file)))


def version() -> str:
    try:
        return metadata.version("glassbox")
    except metadata.PackageNotFoundError:  # run from a checkout that was never pip-installed
        return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def file_name(family: str, model: str, label: str) -> str:
    """glassbox-text-gpt2-tinystories-the-animal-didn-t-cross.npz: ASCII only (a header carries it)."""
    words = slug(label)
    if len(words) > 40:
        words = words[:41].rsplit("-", 1)[0]  # whole words only
    return "-".join(p for p in ("glassbox", family, slug(model), words) if p) + ".npz"


def slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def text(tm, trace: text_capture.TextTrace) -> Exported:
    """A GPT-2 trace: every hook, the token ids and the next-token logits."""
    arrays = {name: f32(a) for name, a in trace.acts.items()}
    arrays["token_ids"] = np.asarray(trace.token_ids, dtype=np.int64)
    arrays["logits"] = f32(trace.last_logits)
    meanings = {name: text_capture.meaning(name) for name in trace.acts} | TEXT_EXTRAS
    info = {
        "family": "text", "model": trace.model, "source": tm.source,
        "input": {"text": trace.text, "tokens": trace.tokens},
        "config": {"n_layers": trace.n_layers, "n_heads": trace.n_heads, "d_head": trace.d_head,
                   "d_model": trace.d_model, "n_ctx": tm.config.n_positions},
    }
    return exported(arrays, meanings, info, file_name("text", trace.model, trace.text[:60]))


def vision(vm, trace: vision_capture.VisionTrace) -> Exported:
    """A ViT trace: every hook, the picture as the model reads and sees it, and the logits."""
    arrays = {name: f32(a) for name, a in trace.acts.items()}
    arrays["pixel_values"] = f32(trace.pixel_values)
    arrays["image"] = trace.seen
    arrays["logits"] = f32(trace.logits)
    meanings = {name: vision_capture.meaning(name) for name in trace.acts} | VISION_EXTRAS
    info = {
        "family": "vision", "model": trace.model, "source": vm.source,
        "input": {"image": trace.image_id, "name": trace.name, "original": trace.original},
        "labels": trace.labels,
        "config": {"image_size": list(trace.image_size), "patch_size": list(trace.patch_size), "grid": list(trace.grid),
                   "n_layers": trace.n_layers, "n_heads": trace.n_heads, "d_head": trace.d_head, "d_model": trace.d_model},
    }
    return exported(arrays, meanings, info, file_name("vision", trace.model, trace.image_id))


def diffusion(dm, trace: diffusion_capture.Trace) -> Exported:
    """A finished Stable Diffusion run: every step's latents, noise predictions, x̂₀ and word maps
    stacked on a first axis, each cross-attention layer likewise (float16), and the image."""
    steps = trace.steps
    arrays = {"timestep": np.asarray([s.timestep for s in steps], dtype=np.float32)}
    for name in ("model_input", "noise_cond", "noise_uncond", "noise", "x0", "latent", "words"):
        arrays[name] = f32(np.stack([getattr(s, name) for s in steps]))
    arrays["image"] = trace.image
    meanings = dict(DIFFUSION_ARRAYS)
    for layer in steps[0].layers if steps else ():
        arrays[f"cross_attention.{layer}"] = np.stack([s.layers[layer] for s in steps])
        meanings[f"cross_attention.{layer}"] = LAYER
    req = trace.request
    info = {
        "family": "diffusion", "model": trace.model, "source": dm.source,
        "input": {"prompt": req.prompt, "negative": req.negative, "seed": req.seed, "steps": req.steps,
                  "guidance": req.guidance, "scheduler": req.scheduler, "tokens": trace.tokens,
                  "n_tokens": trace.n_tokens, "truncated": trace.truncated},
        "config": {"image_size": trace.image_size, "latent_size": trace.latent_size,
                   "scaling_factor": trace.scaling_factor, "unet_calls": len(steps)},
    }
    return exported(arrays, meanings, info, file_name("diffusion", trace.model, f"{req.prompt[:40]} seed {req.seed}"))
