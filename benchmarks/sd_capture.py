"""Stable Diffusion capture cost, side by side in one run (timing noise here is about ±30 %: read the ratios).

    python benchmarks/sd_capture.py [--repeats 3] [--steps 20] [--threads N]

For the shipped model (models/sd-shapes, when the folder exists) and a tiny random SD 1.x-shaped
pipeline at 64 px it prints:
- capture / plain: `app.capture.diffusion.run` with fast previews and per-layer maps (what the
  server runs, without the JSON/PNG encoding of the stream) over the plain pipeline call
  `pipe(prompt, num_inference_steps, guidance_scale, generator)` with nothing recorded, same seed,
  steps, guidance and scheduler (the model's own), medians of interleaved repeats; and capture with
  exact previews (`previews="vae"`: two VAE decodes per step), which is what streaming them would cost;
- request → first step: from sending POST /api/diffusion/run (uncached: a fresh seed each time) to
  the first `step` event leaving the app, in-process. TestClient and httpx's ASGITransport both
  collect the whole body before they return, so this drives the ASGI app directly and timestamps
  each body chunk as the app sends it;
- bytes per streamed `step` event (the JSON after `data: `), and what they are made of.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.capture import diffusion as capture  # noqa: E402
from app.main import create_app  # noqa: E402
from app.registry import load_sd  # noqa: E402
from app.settings import ROOT, Settings  # noqa: E402

PROMPT = "a red star at the top left"
GUIDANCE = 5.0


def sd1_shaped_random(out: Path) -> Path:
    """SD 1.x's layout, shrunk: a 4-level VAE (8× down, so 64 px -> 8 × 8 latents), a UNet with three
    cross-attention levels and a plain bottom one, 2 ResNets per level, 8 heads, a CLIP text encoder
    over 77 tokens, PNDM as SD 1.x ships; random weights, saved as safetensors."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from app.training.sd import Recipe, build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer(Recipe(max_length=77), out / "tok-build")
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64, 64, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32, 64, 64), norm_num_groups=16, latent_channels=4, layers_per_block=2, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    te = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    ))
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                          steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out / "pipe", safe_serialization=True)
    return out / "pipe"


def time_capture(folder: Path, steps: int, repeats: int) -> dict:
    dm = load_sd(str(folder), "cpu")
    pipe = dm.pipe
    pipe.set_progress_bar_config(disable=True)
    req = capture.Request(PROMPT, seed=0, steps=steps, guidance=GUIDANCE)

    @torch.no_grad()
    def plain():
        pipe(PROMPT, num_inference_steps=steps, guidance_scale=GUIDANCE, generator=torch.Generator().manual_seed(0))

    def captured():
        return capture.run(dm, req)  # fast previews and layers, as the server runs it

    def bare():  # the exact previews' price
        capture.run(dm, req, previews="vae")

    plain(), bare()  # warm-up
    trace = captured()
    times = {"plain": [], "capture": [], "bare": []}
    for _ in range(repeats):  # interleaved, so drift (the other core, thermal) hits all alike
        for name, fn in (("plain", plain), ("capture", captured), ("bare", bare)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    row = {k + "_s": statistics.median(v) for k, v in times.items()}
    row.update(image=dm.image_size, latent=trace.latent_size, tokens=len(trace.tokens), unet_calls=len(trace.steps),
               layers=len(trace.steps[0].layers), trace_bytes=trace.nbytes)
    return row


async def stream_once(app, body: dict) -> tuple[float, float, str]:
    """POST /api/diffusion/run through the ASGI app: (seconds to the first `step` event, seconds to the
    end, the whole SSE text)."""
    payload = json.dumps(body).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/diffusion/run", "raw_path": b"/api/diffusion/run", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode())],
    }
    finished = asyncio.Event()
    asked = False
    chunks: list[tuple[float, bytes]] = []
    status = None

    async def receive():
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await finished.wait()  # the client stays until the stream ends
        return {"type": "http.disconnect"}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append((time.perf_counter(), message.get("body", b"")))
            if not message.get("more_body", False):
                finished.set()

    t0 = time.perf_counter()
    await app(scope, receive, send)
    assert status == 200, b"".join(c for _, c in chunks)[:500]
    first = next(t for t, c in chunks if c.startswith(b"event: step"))
    return first - t0, chunks[-1][0] - t0, b"".join(c for _, c in chunks).decode()


def step_sizes(text: str) -> list[dict]:
    """Per `step` event: the bytes of its JSON and of each field in it."""
    out = []
    for frame in text.split("\n\n"):
        if not frame.startswith("event: step\n"):
            continue
        data = frame.split("\ndata: ", 1)[1]
        fields = json.loads(data)
        out.append({"total": len(data.encode()), **{k: len(json.dumps(v, separators=(",", ":"))) for k, v in fields.items()}})
    return out


def time_first_step(folder: Path, steps: int, repeats: int) -> dict:
    settings = Settings(gpt2=str(ROOT / "models" / "gpt2-tinystories"), vit="", sd=str(folder))
    app = create_app(settings)

    async def go():
        async with app.router.lifespan_context(app):
            await stream_once(app, {"prompt": PROMPT, "seed": 10_000, "steps": steps, "guidance": GUIDANCE})  # warm-up
            firsts, totals, text = [], [], ""
            for i in range(repeats):  # a new seed each time: never a cache hit
                first, total, text = await stream_once(app, {"prompt": PROMPT, "seed": 10_001 + i, "steps": steps,
                                                             "guidance": GUIDANCE})
                firsts.append(first)
                totals.append(total)
            assert app.state.streams.computed == repeats + 1
            return firsts, totals, text

    firsts, totals, text = asyncio.run(go())
    sizes = step_sizes(text)
    return {"first_step_s": statistics.median(firsts), "stream_s": statistics.median(totals),
            "step_events": len(sizes), "step_bytes": statistics.median(s["total"] for s in sizes),
            "fields": {k: statistics.median(s[k] for s in sizes) for k in sizes[0] if k != "total"},
            "stream_bytes": len(text.encode())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch decides)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = []
    shipped = ROOT / "models" / "sd-shapes"
    with tempfile.TemporaryDirectory() as d:
        if (shipped / "model_index.json").exists():
            models.append(("sd-shapes", shipped))
        else:
            print(f"({shipped} not found: the shipped model is left out)", file=sys.stderr)
        models.append(("SD 1.x-shaped (random, 64 px)", sd1_shaped_random(Path(d))))
        results = []
        for label, folder in models:
            results.append({"model": label, **time_capture(folder, args.steps, args.repeats),
                            **time_first_step(folder, args.steps, args.repeats)})

    print(f"# {time.strftime('%Y-%m-%d')} · {platform.machine()} · {torch.get_num_threads()} torch threads · "
          f"torch {torch.__version__} · {args.steps} steps, guidance {GUIDANCE:g}, {args.repeats} interleaved repeats, medians")
    print("| model | image px | latent | tokens | UNet calls | plain s | capture s | capture / plain | capture, VAE previews s "
          "| VAE previews / plain | request → first step s | whole stream s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['image']} | {r['latent']}² | {r['tokens']} | {r['unet_calls']} | {r['plain_s']:.2f} | "
              f"{r['capture_s']:.2f} | {r['capture_s'] / r['plain_s']:.2f} | {r['bare_s']:.2f} | "
              f"{r['bare_s'] / r['plain_s']:.2f} | {r['first_step_s']:.2f} | {r['stream_s']:.2f} |")
    print()
    print("| bytes per `step` event (JSON) | " + " | ".join(r["model"] for r in results) + " |")
    print("|---|" + "---:|" * len(results))
    print("| **whole event** | " + " | ".join(f"**{r['step_bytes']:,.0f}**" for r in results) + " |")
    for k in results[0]["fields"]:
        print(f"| {k} | " + " | ".join(f"{r['fields'][k]:,.0f}" for r in results) + " |")
    print("| whole stream (head, steps, done) | " + " | ".join(f"{r['stream_bytes']:,}" for r in results) + " |")
    print("| step events per run | " + " | ".join(str(r["step_events"]) for r in results) + " |")
    print("| captured trace, array bytes (cache) | " + " | ".join(f"{r['trace_bytes']:,}" for r in results) + " |")


if __name__ == "__main__":
    main()
