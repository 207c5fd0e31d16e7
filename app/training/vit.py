"""Recipe for the shipped image model, models/vit-shapes/.

    glassbox train vit          # resumes from runs/vit/ckpt.pt

Steps: 1. draw the training set once (seeded scenes of one shape each, from app/shapes.py) and a
held-out set with another seed; 2. train a small ViTForImageClassification (64 px, 8 px patches:
an 8 × 8 grid that reads well on a page); 3. measure held-out accuracy and how much of the last
layer's CLS attention falls on the patches the shape touches; write the folder and its card.

What mattered (MODEL-NOTES): a fixed light background with random shape colours; noise and small
grey distractors ramp up over training, so the model first learns shapes, then to ignore clutter.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from app.shapes import SHAPES, random_scene, render
from app.training.schedule import warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class Recipe:
    image_size: int = 64
    patch_size: int = 8
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    mlp: int = 256
    n_train: int = 40_000
    n_heldout: int = 2_000
    batch_size: int = 128
    steps: int = 3000
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.05
    max_noise: float = 6.0
    max_distractors: int = 3
    seed: int = 1
    heldout_seed: int = 2


def draw_set(n: int, seed: int, r: Recipe, ramp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images [n, H, W, 3] uint8, labels [n], masks [n, H, W]. With ramp, clutter grows with the
    index (the training order is shuffled per epoch, but later epochs see more of everything)."""
    rng = random.Random(seed)
    imgs = np.empty((n, r.image_size, r.image_size, 3), np.uint8)
    masks = np.empty((n, r.image_size, r.image_size), bool)
    labels = np.empty(n, np.int64)
    for i in tqdm(range(n), desc=f"drawing {n} scenes", unit="img", leave=False):
        level = i / n if ramp else rng.random()
        scene = random_scene(
            rng,
            noise=rng.uniform(0, r.max_noise * level),
            n_distractors=rng.randint(0, round(r.max_distractors * level)),
        )
        img, m = render(scene, r.image_size, seed=seed * 1_000_003 + i)
        imgs[i], masks[i], labels[i] = np.asarray(img), m[0], SHAPES.index(scene.objects[0].shape)
    return imgs, labels, masks


def to_pixels(imgs: np.ndarray) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> float [n, 3, H, W] normalised as the shipped ViTImageProcessor does (mean = std = 0.5)."""
    return (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5


def image_processor(r: Recipe):
    """What serving applies to any uploaded image: resize (bicubic) and normalise like to_pixels."""
    from transformers import ViTImageProcessor

    return ViTImageProcessor(
        do_resize=True, size={"height": r.image_size, "width": r.image_size}, resample=3,
        do_normalize=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )


def build_model(r: Recipe):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=r.image_size,
        patch_size=r.patch_size,
        num_channels=3,
        hidden_size=r.hidden,
        num_hidden_layers=r.layers,
        num_attention_heads=r.heads,
        intermediate_size=r.mlp,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=len(SHAPES),
        id2label=dict(enumerate(SHAPES)),
        label2id={s: i for i, s in enumerate(SHAPES)},
    )
    model = ViTForImageClassification(config)
    model.set_attn_implementation("sdpa")  # fused to train; capture loads it with eager attention
    return model


def lr_at(step: int, r: Recipe) -> float:
    return warmup_cosine(step, lr=r.lr, warmup=r.warmup, total=r.steps, floor=0.02)


@torch.no_grad()
def evaluate(model, imgs: np.ndarray, labels: np.ndarray, masks: np.ndarray, r: Recipe) -> dict:
    """Accuracy, and the share of the last layer's CLS attention (mean of heads) on the patches
    that the shape touches, against that share under uniform attention."""
    model.eval()
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    g = r.image_size // r.patch_size
    correct, on_shape, uniform = 0, 0.0, 0.0
    for s in range(0, len(imgs), 250):
        x = to_pixels(imgs[s : s + 250])
        out = model(pixel_values=x, output_attentions=True)
        correct += (out.logits.argmax(-1).numpy() == labels[s : s + 250]).sum()
        cls = out.attentions[-1][:, :, 0, 1:].mean(1).numpy()  # [n, P] CLS -> patches
        touched = masks[s : s + 250].reshape(-1, g, r.patch_size, g, r.patch_size).any(axis=(2, 4)).reshape(len(x), -1)
        on_shape += (cls * touched).sum()
        uniform += touched.mean(1).sum()
    model.set_attn_implementation(impl)
    model.train()
    n = len(imgs)
    return {"accuracy": correct / n, "cls_on_shape": on_shape / n, "uniform_on_shape": uniform / n}


def train(out: Path | None = None, steps: int | None = None) -> Path:
    from app.settings import get_settings

    s = get_settings()
    r = Recipe()
    if steps:
        r.steps = steps
    out = out or s.models_dir / "vit-shapes"
    run_dir = s.runs_dir / "vit"
    run_dir.mkdir(parents=True, exist_ok=True)
    if s.torch_threads:
        torch.set_num_threads(s.torch_threads)
    torch.manual_seed(r.seed)

    # 1. Data, drawn once (seeded, so a resumed run draws the same sets).
    t0 = time.time()
    imgs, labels, _ = draw_set(r.n_train, r.seed, r, ramp=True)
    h_imgs, h_labels, h_masks = draw_set(r.n_heldout, r.heldout_seed, r, ramp=False)
    log.info("drew %d + %d scenes in %.0f s", r.n_train, r.n_heldout, time.time() - t0)
    x_all, y_all = to_pixels(imgs), torch.from_numpy(labels)
    probe = slice(0, 500)

    # 2. Train, resumable.
    model = build_model(r)
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    stats = {"curve": [], "evals": [], "elapsed_s": 0.0}
    step = 0
    ckpt = run_dir / "ckpt.pt"
    if ckpt.exists():
        ck = torch.load(ckpt, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, stats = ck["step"], ck["stats"]
    model.train()
    start = time.time() - stats["elapsed_s"]
    bar = tqdm(range(step, r.steps), initial=step, total=r.steps, desc="vit", unit="step")
    for step in bar:
        gen = torch.Generator().manual_seed(r.seed * 100_003 + step)
        idx = torch.randint(0, len(x_all), (r.batch_size,), generator=gen)
        x = x_all[idx]
        flip = torch.rand(r.batch_size, generator=gen) < 0.5  # mirror images are the same shapes
        x[flip] = x[flip].flip(-1)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, r)
        loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        done = step + 1
        if done % 20 == 0:
            stats["curve"].append((done, loss.item()))
        if done % 250 == 0 or done == r.steps:
            ev = evaluate(model, h_imgs[probe], h_labels[probe], h_masks[probe], r)
            stats["evals"].append((done, ev["accuracy"], ev["cls_on_shape"]))
            log.info("step %d held-out(500) acc %.3f cls-on-shape %.2f", done, ev["accuracy"], ev["cls_on_shape"])
            stats["elapsed_s"] = time.time() - start
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": done, "stats": stats}, ckpt)

    # 3. Measure on all held-out scenes and write the folder.
    stats["elapsed_s"] = time.time() - start
    final = evaluate(model, h_imgs, h_labels, h_masks, r)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    image_processor(r).save_pretrained(out)
    write_card(out, r, stats, final, sum(p.numel() for p in model.parameters()))
    log.info("held-out accuracy %.4f, CLS attention on the shape %.2f", final["accuracy"], final["cls_on_shape"])
    return out


def write_card(out: Path, r: Recipe, stats: dict, final: dict, params: int) -> None:
    evals = "\n".join(f"| {s} | {a:.3f} | {c:.2f} |" for s, a, c in stats["evals"])
    card = f"""---
library_name: transformers
pipeline_tag: image-classification
---
# vit-shapes

A small Vision Transformer (`ViTForImageClassification`, {params / 1e6:.2f}M parameters: {r.layers} layers,
{r.heads} heads, width {r.hidden}; {r.image_size} px images cut into {r.patch_size} px patches, an
{r.image_size // r.patch_size} × {r.image_size // r.patch_size} grid plus CLS) trained by glassbox from scratch to
name the shape in a picture: {", ".join(SHAPES)}. It is **not** Google's ViT: to look inside the real one,
serve `google/vit-base-patch16-224`.

## Data
Drawn by `app/shapes.py` (no downloads): one shape of a random colour, size, position and rotation on a
light background; Gaussian pixel noise (up to {r.max_noise:g}/255) and up to {r.max_distractors} small grey dots
ramp up through the {r.n_train:,} training scenes (seed {r.seed}). Held-out: {r.n_heldout:,} scenes drawn with
seed {r.heldout_seed}, clutter at random levels. Training also mirrors half the images.

## Training
Command: `glassbox train vit` (recipe: `app/training/vit.py`), {stats['elapsed_s'] / 60:.1f} minutes on 2 CPU cores.

```json
{json.dumps(asdict(r), indent=2)}
```

| step | held-out accuracy (500) | CLS attention on the shape |
|---:|---:|---:|
{evals}

## Held-out results ({r.n_heldout:,} scenes)
- **accuracy {final['accuracy']:.4f}**
- last layer's CLS attention (mean of heads) on the patches the shape touches: **{final['cls_on_shape']:.2f}**
  of its mass, where uniform attention would give {final['uniform_on_shape']:.2f}
"""
    (out / "README.md").write_text(card, encoding="utf-8")
