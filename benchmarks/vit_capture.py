"""ViT capture cost, side by side in one run (timing noise here is about ±30 %: read the ratios).

    python benchmarks/vit_capture.py [--repeats 7] [--threads N]

For the shipped model (64 px, 8 px patches, 4 layers) and a ViT-Base-sized model (224 px, 16 px
patches, 12 layers × 12 heads, 768 wide, 1,000 classes, random weights) it prints:
- capture / plain: glassbox's capture (the recording attention, a hook per block, arrays out) over a
  plain eager forward of the same model, both from the same PIL picture through the same image
  processor, medians of interleaved repeats;
- the bytes of each view's response (POST /api/vision/...) through the app in-process.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient  # noqa: E402
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor  # noqa: E402

from app.capture import vision as cv  # noqa: E402
from app.images import gallery_picture  # noqa: E402
from app.main import create_app  # noqa: E402
from app.registry import load_vit  # noqa: E402
from app.settings import ROOT, Settings  # noqa: E402

VIEWS = [  # (name, path, extra body)
    ("trace (picture + top classes)", "/api/vision/trace", {}),
    ("attention, one head [1+P, 1+P]", "/api/vision/attention", {"layer": 0, "head": 0}),
    ("rollout of CLS [L, 1+P]", "/api/vision/rollout", {}),
    ("heads (distance [L, H] + position similarity [P, P])", "/api/vision/heads", {}),
    ("patch (pixels, embedding, position, sum)", "/api/vision/patch", {"patch": 5}),
]


def vit_base_random(out: Path) -> Path:
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, num_labels=1000)
    ViTForImageClassification(cfg).save_pretrained(out, safe_serialization=True)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(out)
    return out


def settings(**kw) -> Settings:
    if "sd" in Settings.model_fields:
        kw.setdefault("sd", "")
    return Settings(gpt2=str(ROOT / "models" / "gpt2-tinystories"), **kw)


def bench(folder: Path, label: str, repeats: int) -> tuple[dict, list[tuple[str, int]]]:
    vm = load_vit(str(folder))
    side = cv.pair(vm.config.image_size)[0]
    pic = gallery_picture("scene-4", side)

    def plain():
        with torch.no_grad():
            vm.model(vm.processor(images=pic.image, return_tensors="pt")["pixel_values"])

    def captured():
        cv.capture(vm, pic.image, "scene-4", pic.name)

    plain(), captured()  # warm-up
    p, c = [], []
    for _ in range(repeats):  # interleaved, so drift (the other core, thermal) hits both alike
        t = time.perf_counter()
        plain()
        p.append(time.perf_counter() - t)
        t = time.perf_counter()
        captured()
        c.append(time.perf_counter() - t)
    tokens = 1 + (side // cv.pair(vm.config.patch_size)[0]) ** 2
    row = {"model": label, "tokens": tokens, "plain_ms": statistics.median(p) * 1e3,
           "capture_ms": statistics.median(c) * 1e3}
    row["ratio"] = row["capture_ms"] / row["plain_ms"]
    sizes = []
    with TestClient(create_app(settings(vit=str(folder)))) as client:
        for name, path, extra in VIEWS:
            r = client.post(path, json={"image": "scene-4", **extra})
            assert r.status_code == 200, r.text
            sizes.append((name, len(r.content)))
    return row, sizes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch decides)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(0)
    results = [bench(ROOT / "models" / "vit-shapes", "vit-shapes", args.repeats)]
    with tempfile.TemporaryDirectory() as d:
        results.append(bench(vit_base_random(Path(d) / "vit-base-random"), "ViT-Base/16 (random)", args.repeats))
    print(f"# {time.strftime('%Y-%m-%d')} · {platform.machine()} · {torch.get_num_threads()} torch threads · torch {torch.__version__}")
    print("| model | tokens | plain forward ms | capture ms | capture / plain |")
    print("|---|---:|---:|---:|---:|")
    for r, _ in results:
        print(f"| {r['model']} | {r['tokens']} | {r['plain_ms']:.1f} | {r['capture_ms']:.1f} | {r['ratio']:.2f} |")
    print()
    print("| view | " + " | ".join(f"{r['model']} bytes" for r, _ in results) + " |")
    print("|---|" + "---:|" * len(results))
    for i, (name, _, _) in enumerate(VIEWS):
        print(f"| {name} | " + " | ".join(f"{sizes[i][1]:,}" for _, sizes in results) + " |")


if __name__ == "__main__":
    main()
