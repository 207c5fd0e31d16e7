"""glassbox beside its peers, measured side by side in one run (timing noise here is about ±30 %: read the ratios).

    pip install -e ".[bench]"          # once: bertviz and transformer-lens (this script installs nothing)
    python benchmarks/peers.py [--repeats 5] [--lengths 16 64 256] [--steps 20] [--threads N] [--profile]

Every peer gets the same weights (loaded from the same folder), the same token ids and the same
settings as glassbox; nothing is downloaded (BertViz and TransformerLens are handed local objects).
Three copies of each model are loaded so that none is slowed by another's hooks: the one glassbox
serves (its recording attention), the floor (Hugging Face's eager attention, only ever called plain)
and the peers' (output_attentions=True installs transformers' own output recorders on a model for good).

1. BertViz (head view, model view) on the shipped GPT-2 and a GPT-2-small-sized one (12 layers × 12
   heads × 768, random weights, built in a temp dir): the HF forward with output_attentions plus
   `head_view(..., html_action="return")` / `model_view(...)`, its time and HTML bytes, against
   glassbox through the app in-process (fastapi TestClient), every request uncached:
   - first heatmap: POST /api/text/attention for layer 0 head 0 (tokenise, capture, encode);
   - all heads: the L·H responses of POST /api/text/attention, one per (layer, head), the first one
     computing the trace and the rest served from the cache: every head's full T × T matrix, the same
     numbers BertViz's HTML embeds, at float16;
   - grid: POST /api/text/grid, every head in one response, average-pooled to at most 48 × 48 (what
     glassbox's all-heads page asks for).
2. TransformerLens: a HookedTransformer built from the same HF module (config written out, weights
   through TL's own convert_gpt2_weights, TL's default processing: fold_ln, center_writing_weights,
   center_unembed, fold_value_biases), `run_with_cache` on the same ids (a tensor: no BOS added)
   against glassbox's capture; the attention patterns compared value by value, in float32 (capture)
   and as they arrive on the wire (float16).
3. Plain diffusers: models/sd-shapes, the same prompt, seed, steps, guidance and scheduler: the
   pipeline call with nothing recorded against app.capture.diffusion.run (what the server computes)
   and against the whole SSE stream of POST /api/diffusion/run (capture + encoding + streaming);
   the final images compared pixel by pixel. DAAM is not measured: see DAAM_BLOCKED.
4. The floor: the plain forward (GPT-2; ViT from the picture, its image processor included) or the
   plain pipeline (SD), and glassbox's overhead above it, for the shipped models and one the size of
   GPT-2 small / ViT-Base (random weights).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import importlib.metadata as md
import io
import json
import math
import platform
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from fastapi.testclient import TestClient  # noqa: E402

from app.capture import diffusion as sd_capture  # noqa: E402
from app.capture.text import capture, tokenize  # noqa: E402
from app.main import create_app  # noqa: E402
from app.registry import load_gpt2, load_sd, load_vit  # noqa: E402
from app.runs import TraceCache  # noqa: E402
from app.settings import ROOT, Settings  # noqa: E402
from app.wire import decode  # noqa: E402

# What pip says (pip 26.3, against this project's pins); the README's Peers section quotes it.
DAAM_BLOCKED = ("daam 0.2.0 (the newest) depends on diffusers==0.21.2 and transformers==4.30.2 (and "
                "accelerate==0.23.0, tokenizers 0.13): `pip install daam diffusers==0.42.1` -> ResolutionImpossible, "
                "'The user requested diffusers==0.42.1; daam 0.2.0 depends on diffusers==0.21.2'")

TARGET_OVERHEAD = 1.10  # capture / plain forward, every model
TARGET_BYTES = 0.5  # glassbox bytes for the full attention view / BertViz's HTML, at 256 tokens
TARGET_ATOL = 1e-4  # attention patterns against TransformerLens


def version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def peers_present() -> dict[str, bool]:
    out = {}
    for mod in ("bertviz", "transformer_lens"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                __import__(mod)
            out[mod] = True
        except ImportError:
            out[mod] = False
    return out


def hooked_transformer(hf_model):
    """A TransformerLens HookedTransformer holding the same weights as a transformers GPT2LMHeadModel,
    built without any download: the config written out as TL's own GPT-2 conversion writes it, the
    weights through TL's convert_gpt2_weights, then TL's default processing (what from_pretrained
    does: fold_ln, center_writing_weights, center_unembed, fold_value_biases; none of them changes
    an attention pattern). default_prepend_bos=False, and callers pass token ids, not strings."""
    from transformer_lens.config.hooked_transformer_config import HookedTransformerConfig
    from transformer_lens.HookedTransformer import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    c = hf_model.config
    cfg = HookedTransformerConfig(
        d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head, d_mlp=c.n_inner or 4 * c.n_embd,
        n_layers=c.n_layer, n_ctx=c.n_positions, eps=c.layer_norm_epsilon, d_vocab=c.vocab_size,
        act_fn=c.activation_function, use_attn_scale=c.scale_attn_weights,
        scale_attn_by_inverse_layer_idx=c.scale_attn_by_inverse_layer_idx, normalization_type="LN",
        original_architecture="GPT2LMHeadModel", default_prepend_bos=False, device="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tl = HookedTransformer(cfg)
        tl.load_and_process_state_dict(convert_gpt2_weights(hf_model, cfg))
    return tl.eval()


def tl_patterns(tl, ids: list[int]) -> list[np.ndarray]:
    """Every layer's attention pattern [head, query, key] from run_with_cache on these exact ids."""
    with torch.no_grad():
        _, cache = tl.run_with_cache(torch.tensor([ids]))
    return [cache["pattern", l][0].numpy() for l in range(tl.cfg.n_layers)]


def interleaved(fns: dict, repeats: int, min_sample: float = 0.3) -> tuple[dict[str, float], dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per call of each function: the median of `repeats` samples, the functions called in turn
    within each repeat, so drift (the other processes on the machine, thermal) hits all alike. A
    function faster than min_sample is called n times per sample (n from its warm-up call) and the
    sample is their mean, so one descheduling does not make a sample. Returns (wall-clock medians,
    wall-clock samples, CPU-time samples): this process's CPU time (all its threads) counts only what
    it computed, not the time it waited for a core that another process held."""
    n = {}
    for k, fn in fns.items():
        t = time.perf_counter()
        fn()
        n[k] = max(1, math.ceil(min_sample / max(time.perf_counter() - t, 1e-6)))
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            for _ in range(n[k]):
                fn()
            cpu[k].append((time.process_time() - c) / n[k])
            wall[k].append((time.perf_counter() - t) / n[k])
    return {k: statistics.median(v) for k, v in wall.items()}, wall, cpu


def paired(samples: dict[str, list[float]], a: str, b: str) -> float:
    """The median over repeats of a's sample / b's sample taken in the same repeat."""
    return statistics.median(x / y for x, y in zip(samples[a], samples[b]))


def profile(fn, n: int, top: int = 14) -> str:
    """cProfile of n calls: the functions with the most time of their own (file:line(function))."""
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(n):
        fn()
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).strip_dirs().sort_stats("tottime").print_stats(top)
    return s.getvalue()


# ---------------------------------------------------------------------------------------------- GPT-2


def bench_gpt2(folder: Path, label: str, lengths: list[int], repeats: int, have: dict, do_profile: bool) -> list[dict]:
    from gpt2_capture import text_of

    from transformers import GPT2LMHeadModel

    tm = load_gpt2(str(folder))
    floor = GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    model = GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="eager").eval()  # the peers'
    tl = hooked_transformer(model) if have["transformer_lens"] else None
    app = create_app(Settings(gpt2=str(folder), vit="", sd=""))
    L, H = tm.config.n_layer, tm.config.n_head
    rows = []
    with TestClient(app) as client:
        runner = client.app.state.runner

        def uncached():
            runner.cache = TraceCache(runner.cache.max_bytes)

        for n in lengths:
            if n > tm.config.n_positions:
                continue
            text = text_of(tm, n)
            ids = tokenize(tm, text)
            T = len(ids)
            ids_t = torch.tensor([ids])
            last: dict = {}

            def plain():
                with torch.no_grad():
                    floor(ids_t, use_cache=False)

            def plain_attn():  # the same forward returning the attention weights (what capture asks for)
                with torch.no_grad():
                    model(ids_t, use_cache=False, output_attentions=True)

            def captured():
                last["trace"] = capture(tm, text)

            def tl_run():
                with torch.no_grad():
                    last["tl"] = tl.run_with_cache(ids_t)

            def bertviz(view):
                def fn():
                    with torch.no_grad():
                        out = model(ids_t, output_attentions=True, use_cache=False)
                    tokens = tm.tokenizer.convert_ids_to_tokens(ids)
                    last[view.__name__] = view(out.attentions, tokens, html_action="return").data
                return fn

            def first_heatmap():
                uncached()
                r = client.post("/api/text/attention", json={"text": text, "layer": 0, "head": 0})
                assert r.status_code == 200, r.text
                last["first"] = r.content

            def all_heads():
                uncached()
                bodies = []
                for l in range(L):
                    for h in range(H):
                        r = client.post("/api/text/attention", json={"text": text, "layer": l, "head": h})
                        assert r.status_code == 200, r.text
                        bodies.append(r.content)
                last["all"] = bodies

            def grid():
                uncached()
                r = client.post("/api/text/grid", json={"text": text})
                assert r.status_code == 200, r.text
                last["grid"] = r.content

            fns = {"plain": plain, "plain_attn": plain_attn, "capture": captured, "first": first_heatmap,
                   "all": all_heads, "grid": grid}
            if tl is not None:
                fns["tl"] = tl_run
            if have["bertviz"]:
                from bertviz import head_view, model_view

                fns["bv_head"], fns["bv_model"] = bertviz(head_view), bertviz(model_view)
            t, samples, cpu = interleaved(fns, repeats)

            row = {"model": label, "tokens": T, "layers": L, "heads": H, **{k + "_s": v for k, v in t.items()},
                   "ratio": paired(samples, "capture", "plain"), "ratio_attn": paired(samples, "plain_attn", "plain"),
                   "cpu_plain_s": statistics.median(cpu["plain"]), "cpu_capture_s": statistics.median(cpu["capture"]),
                   "cpu_ratio": paired(cpu, "capture", "plain"), "cpu_ratio_attn": paired(cpu, "plain_attn", "plain"),
                   "first_ratio": paired(samples, "first", "plain"),
                   "first_bytes": len(last["first"]), "all_bytes": sum(map(len, last["all"])),
                   "grid_bytes": len(last["grid"])}
            if have["bertviz"]:
                row["bv_head_bytes"] = len(last["head_view"].encode())
                row["bv_model_bytes"] = len(last["model_view"].encode())
            if tl is not None:
                row["tl_ratio"] = paired(samples, "capture", "tl")
                ref = tl_patterns(tl, ids)
                ours = [last["trace"].pattern(l) for l in range(L)]
                row["tl_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(ours, ref))
                wire = [[decode(json.loads(last["all"][l * H + h])["attention"]) for h in range(H)] for l in range(L)]
                row["tl_wire_diff"] = max(float(np.abs(np.stack(w) - r).max()) for w, r in zip(wire, ref))
            if do_profile and row["cpu_ratio"] > TARGET_OVERHEAD:
                k = max(3, int(2.0 / max(t["plain"], 1e-3)))
                row["profile"] = (f"--- {label}, {T} tokens: capture {t['capture'] * 1e3:.1f} ms vs plain "
                                  f"{t['plain'] * 1e3:.1f} ms; {k} calls each ---\n[capture]\n{profile(captured, k)}"
                                  f"[plain]\n{profile(plain, k)}")
            rows.append(row)
            print(f"  {label} {T} tokens done", file=sys.stderr)
    return rows


# ---------------------------------------------------------------------------------------------- ViT


def bench_vit(folder: Path, label: str, repeats: int, do_profile: bool) -> dict:
    """The floor for ViT: the picture through the image processor and a plain eager forward, against
    glassbox's capture of the same picture (the same processor inside), and the first heatmap
    through the app (POST /api/vision/attention, uncached)."""
    from transformers import ViTForImageClassification

    from app.capture import vision as cv
    from app.images import gallery_picture

    vm = load_vit(str(folder))
    floor = ViTForImageClassification.from_pretrained(str(folder), attn_implementation="eager").eval()
    peer = ViTForImageClassification.from_pretrained(str(folder), attn_implementation="eager").eval()
    side = cv.pair(vm.config.image_size)[0]
    pic = gallery_picture("scene-4", side)
    app = create_app(Settings(gpt2=str(ROOT / "models" / "gpt2-tinystories"), vit=str(folder), sd=""))
    with TestClient(app) as client:
        runner = client.app.state.runner

        def pixels():
            return vm.processor(images=pic.image, return_tensors="pt")["pixel_values"]

        def plain():
            with torch.no_grad():
                floor(pixels())

        def plain_attn():
            with torch.no_grad():
                peer(pixels(), output_attentions=True)

        def captured():
            cv.capture(vm, pic.image, "scene-4", pic.name)

        def first_heatmap():
            runner.cache = TraceCache(runner.cache.max_bytes)
            r = client.post("/api/vision/attention", json={"image": "scene-4", "layer": 0, "head": 0})
            assert r.status_code == 200, r.text

        fns = {"plain": plain, "plain_attn": plain_attn, "capture": captured, "first": first_heatmap}
        t, samples, cpu = interleaved(fns, repeats)
    row = {"model": label, "tokens": 1 + (side // cv.pair(vm.config.patch_size)[0]) ** 2,
           **{k + "_s": v for k, v in t.items()}, "ratio": paired(samples, "capture", "plain"),
           "cpu_plain_s": statistics.median(cpu["plain"]), "cpu_capture_s": statistics.median(cpu["capture"]),
           "cpu_ratio": paired(cpu, "capture", "plain"), "cpu_ratio_attn": paired(cpu, "plain_attn", "plain"),
           "first_ratio": paired(samples, "first", "plain")}
    if do_profile and row["cpu_ratio"] > TARGET_OVERHEAD:
        row["profile"] = f"--- {label}: capture ---\n{profile(captured, 50)}[plain]\n{profile(plain, 50)}"
    print(f"  {label} done", file=sys.stderr)
    return row


# ---------------------------------------------------------------------------------------------- SD


def png_pixels(data_url: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def bench_sd(folder: Path, steps: int, repeats: int, do_profile: bool) -> dict:
    from sd_capture import GUIDANCE, PROMPT, stream_once

    dm = load_sd(str(folder), "cpu")
    pipe = dm.pipe
    pipe.set_progress_bar_config(disable=True)
    req = sd_capture.Request(PROMPT, seed=0, steps=steps, guidance=GUIDANCE)
    app = create_app(Settings(gpt2=str(ROOT / "models" / "gpt2-tinystories"), vit="", sd=str(folder),
                             diffusion_cache_bytes=1))  # nothing kept: every run computes
    body = {"prompt": PROMPT, "seed": 0, "steps": steps, "guidance": GUIDANCE}
    last: dict = {}

    def plain():
        with torch.no_grad():
            out = pipe(PROMPT, num_inference_steps=steps, guidance_scale=GUIDANCE,
                       generator=torch.Generator().manual_seed(0), output_type="np")
        last["plain"] = (np.asarray(out.images[0]) * 255).round().astype(np.uint8)

    def captured():
        last["capture"] = sd_capture.run(dm, req)

    loop = asyncio.new_event_loop()
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())

    firsts, totals = [], []

    def streamed():
        first, total, text = loop.run_until_complete(stream_once(app, body))
        done = [f for f in text.split("\n\n") if f.startswith("event: done\n")][0]
        last["stream"] = (png_pixels(json.loads(done.split("\ndata: ", 1)[1])["image"]), len(text.encode()))
        firsts.append(first)
        totals.append(total)

    fns = {"plain": plain, "capture": captured, "stream": streamed}
    if do_profile:  # where capture's time goes, by taking its parts away
        def plain_recording():  # the plain pipeline with glassbox's recording attention processors installed
            with torch.no_grad(), sd_capture.recording(pipe.unet):
                plain()

        def capture_bare():  # capture without previews and without keeping the per-layer maps
            sd_capture.run(dm, req, previews="none", keep_layers=False)

        fns.update(plain_recording=plain_recording, capture_bare=capture_bare)
    t, samples, cpu = interleaved(fns, repeats)
    loop.run_until_complete(lifespan.__aexit__(None, None, None))
    loop.close()
    trace = last["capture"]
    row = {"model": dm.name, "steps": steps, "unet_calls": len(trace.steps), **{k + "_s": v for k, v in t.items()},
           "first_step_s": statistics.median(firsts[1:]), "stream_total_s": statistics.median(totals[1:]),
           "ratio": paired(samples, "capture", "plain"), "stream_ratio": paired(samples, "stream", "plain"),
           "cpu_plain_s": statistics.median(cpu["plain"]), "cpu_capture_s": statistics.median(cpu["capture"]),
           "cpu_ratio": paired(cpu, "capture", "plain"),
           "diff_capture": int(np.abs(trace.image.astype(int) - last["plain"].astype(int)).max()),
           "diff_stream": int(np.abs(last["stream"][0].astype(int) - last["plain"].astype(int)).max()),
           "stream_bytes": last["stream"][1]}
    if do_profile:
        row["breakdown"] = {k: paired(cpu, k, "plain") for k in ("plain_recording", "capture_bare", "capture")}
        if row["cpu_ratio"] > TARGET_OVERHEAD:
            row["profile"] = f"--- {dm.name}: capture ---\n{profile(captured, 2)}[plain]\n{profile(plain, 2)}"
    return row


# ---------------------------------------------------------------------------------------------- report


def kb(n: float) -> str:
    return f"{n / 1e3:,.1f} KB" if n < 1e6 else f"{n / 1e6:,.2f} MB"


def report(text_rows: list[dict], vit_rows: list[dict], sd_row: dict | None, have: dict, args) -> None:
    print(f"# {time.strftime('%Y-%m-%d')} · {platform.machine()} · {torch.get_num_threads()} torch threads · "
          f"torch {torch.__version__} · transformers {version('transformers')} · diffusers {version('diffusers')} · "
          f"bertviz {version('bertviz') or '-'} · transformer-lens {version('transformer-lens') or '-'} · "
          f"{args.repeats} interleaved repeats: medians of times, ratios = medians of per-repeat ratios")
    print()
    if have["bertviz"] and text_rows:
        print("## BertViz: HF forward (output_attentions) + the view's HTML, against glassbox's API (uncached)")
        print()
        print("| model | tokens | BertViz head view ms | model view ms | HTML bytes (head / model) | glassbox first heatmap ms "
              "| bytes | all L·H heads, full T² ms | bytes | grid (≤48², pooled) ms | bytes | first heatmap / head view "
              "time | all heads / head view bytes | grid / head view bytes |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in text_rows:
            print(f"| {r['model']} | {r['tokens']} | {r['bv_head_s'] * 1e3:,.0f} | {r['bv_model_s'] * 1e3:,.0f} | "
                  f"{kb(r['bv_head_bytes'])} / {kb(r['bv_model_bytes'])} | {r['first_s'] * 1e3:,.0f} | {kb(r['first_bytes'])} | "
                  f"{r['all_s'] * 1e3:,.0f} | {kb(r['all_bytes'])} | {r['grid_s'] * 1e3:,.0f} | {kb(r['grid_bytes'])} | "
                  f"{r['first_s'] / r['bv_head_s']:.2f} | {r['all_bytes'] / r['bv_head_bytes']:.2f} | "
                  f"{r['grid_bytes'] / r['bv_head_bytes']:.3f} |")
        print()
    if have["transformer_lens"] and text_rows:
        print("## TransformerLens: run_with_cache against glassbox's capture, same weights and ids")
        print()
        print("| model | tokens | plain HF forward ms | glassbox capture ms | TL run_with_cache ms | capture / TL | "
              "max abs Δ pattern, capture (float32) | max abs Δ, wire (float16) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in text_rows:
            print(f"| {r['model']} | {r['tokens']} | {r['plain_s'] * 1e3:,.1f} | {r['capture_s'] * 1e3:,.1f} | "
                  f"{r['tl_s'] * 1e3:,.1f} | {r['tl_ratio']:.2f} | {r['tl_diff']:.1e} | {r['tl_wire_diff']:.1e} |")
        print()
    if sd_row:
        r = sd_row
        print(f"## Plain diffusers against glassbox: {r['model']}, {r['steps']} steps ({r['unet_calls']} UNet calls)")
        print()
        print("| plain pipeline s | glassbox capture s | capture / plain | whole SSE stream s | stream / plain | "
              "request → first step s | max abs Δ image, capture (0–255) | max abs Δ image, stream PNG | stream bytes |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {r['plain_s']:.2f} | {r['capture_s']:.2f} | {r['ratio']:.2f} | {r['stream_s']:.2f} | "
              f"{r['stream_ratio']:.2f} | {r['first_step_s']:.2f} | {r['diff_capture']} | {r['diff_stream']} | "
              f"{r['stream_bytes']:,} |")
        print()
        if "breakdown" in r:
            b = r["breakdown"]
            print(f"Breakdown (CPU time), each / plain: plain pipeline + recording attention processors {b['plain_recording']:.2f}; "
                  f"capture without previews or per-layer maps {b['capture_bare']:.2f}; capture {b['capture']:.2f}")
            print()
        print(f"DAAM: not measured. {DAAM_BLOCKED}")
        print()
    print("## The floor: the plain forward / pipeline, and glassbox's overhead above it")
    print()
    print(f"| model | tokens / steps | floor (plain) ms | glassbox capture ms | overhead ms | capture / plain | "
          f"floor, CPU ms | capture, CPU ms | capture / plain, CPU (target ≤ {TARGET_OVERHEAD:.2f}) | "
          f"plain + output_attentions / plain, CPU | request → first heatmap / plain |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in text_rows + vit_rows:
        print(f"| {r['model']} | {r['tokens']} | {r['plain_s'] * 1e3:,.1f} | {r['capture_s'] * 1e3:,.1f} | "
              f"{(r['capture_s'] - r['plain_s']) * 1e3:+,.1f} | {r['ratio']:.2f} | {r['cpu_plain_s'] * 1e3:,.1f} | "
              f"{r['cpu_capture_s'] * 1e3:,.1f} | {r['cpu_ratio']:.2f} {'✓' if r['cpu_ratio'] <= TARGET_OVERHEAD else '✗'} | "
              f"{r['cpu_ratio_attn']:.2f} | {r['first_ratio']:.2f} |")
    if sd_row:
        r = sd_row
        print(f"| {r['model']} | {r['steps']} steps | {r['plain_s'] * 1e3:,.0f} | {r['capture_s'] * 1e3:,.0f} | "
              f"{(r['capture_s'] - r['plain_s']) * 1e3:+,.0f} | {r['ratio']:.2f} | {r['cpu_plain_s'] * 1e3:,.0f} | "
              f"{r['cpu_capture_s'] * 1e3:,.0f} | {r['cpu_ratio']:.2f} {'✓' if r['cpu_ratio'] <= TARGET_OVERHEAD else '✗'} | – | "
              f"{r['first_step_s'] / r['plain_s']:.2f} (first step) |")
    print()
    print("## Targets")
    print()
    rows = text_rows + vit_rows + ([sd_row] if sd_row else [])
    worst = max(r["cpu_ratio"] for r in rows)
    over = [f"{r['model']} {r.get('tokens', r.get('steps'))}: {r['cpu_ratio']:.2f}" for r in rows if r["cpu_ratio"] > TARGET_OVERHEAD]
    print(f"- capture overhead ≤ {TARGET_OVERHEAD:.2f} × plain, every model (CPU time): worst {worst:.2f}, "
          f"{'met' if worst <= TARGET_OVERHEAD else 'NOT met'}; over it: {'; '.join(over) or 'none'}")
    if have["bertviz"] and text_rows:
        long = [r for r in text_rows if r["tokens"] >= 256] or text_rows[-1:]
        for r in long:
            ratio = r["all_bytes"] / r["bv_head_bytes"]
            print(f"- bytes of the full attention view ≤ {TARGET_BYTES} × BertViz's HTML ({r['model']}, {r['tokens']} tokens): "
                  f"all heads at full resolution {ratio:.2f}, grid {r['grid_bytes'] / r['bv_head_bytes']:.3f} "
                  f"{'met' if ratio <= TARGET_BYTES else 'NOT met'}")
    if have["transformer_lens"] and text_rows:
        d = max(r["tl_diff"] for r in text_rows)
        print(f"- attention equal to TransformerLens's within {TARGET_ATOL:g}: max {d:.1e} "
              f"{'met' if d <= TARGET_ATOL else 'NOT met'} (the float16 wire: max {max(r['tl_wire_diff'] for r in text_rows):.1e})")
    for r in rows:
        if "profile" in r:
            print()
            print(r["profile"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch decides)")
    ap.add_argument("--only", choices=["gpt2", "vit", "sd"], help="one part only")
    ap.add_argument("--profile", action="store_true", help="cProfile every case over the overhead target")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.disable_progress_bar()
    have = peers_present()
    for mod, ok in have.items():
        if not ok:
            print(f"({mod} is not installed: its columns are left out; pip install -e \".[bench]\")", file=sys.stderr)
    torch.manual_seed(0)
    text_rows: list[dict] = []
    sd_row = None
    if args.only in (None, "gpt2"):
        from gpt2_capture import gpt2_small_random

        shipped = ROOT / "models" / "gpt2-tinystories"
        text_rows += bench_gpt2(shipped, "gpt2-tinystories", args.lengths, args.repeats, have, args.profile)
        with tempfile.TemporaryDirectory() as d:
            small = gpt2_small_random(shipped, Path(d) / "gpt2-small-random")
            text_rows += bench_gpt2(small, "gpt2-small (random)", args.lengths, args.repeats, have, args.profile)
    vit_rows: list[dict] = []
    if args.only in (None, "vit"):
        from vit_capture import vit_base_random

        vit_rows.append(bench_vit(ROOT / "models" / "vit-shapes", "vit-shapes", args.repeats, args.profile))
        with tempfile.TemporaryDirectory() as d:
            vit_rows.append(bench_vit(vit_base_random(Path(d) / "vit-base-random"), "ViT-Base/16 (random)",
                                      args.repeats, args.profile))
    if args.only in (None, "sd"):
        sd = ROOT / "models" / "sd-shapes"
        if (sd / "model_index.json").exists():
            sd_row = bench_sd(sd, args.steps, args.repeats, args.profile)
    report(text_rows, vit_rows, sd_row, have, args)


if __name__ == "__main__":
    main()
