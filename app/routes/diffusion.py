"""Stable Diffusion endpoints. A run streams its steps as Server-Sent Events while it computes;
a finished run is cached, so reopening a link (or thirty students opening it) replays it.

The stream is read with fetch() rather than EventSource so that a refused request (422, 503) still
arrives as a readable JSON error. When the last page watching a run goes away, the run stops at
its next step.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Annotated

import numpy as np
import torch
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse

from app import schemas
from app.capture import diffusion as capture
from app.images import png_data_url
from app.registry import DiffusionModel
from app.routes.errors import JSON_ERRORS, JSONBodyRoute
from app.routes.text import RegistryDep
from app.runs import LiveRun, StreamRunner
from app.wire import encode

router = APIRouter(prefix="/api/diffusion", tags=["diffusion"], responses=JSON_ERRORS, route_class=JSONBodyRoute)


def get_streams(request: Request) -> StreamRunner:
    return request.app.state.streams


StreamsDep = Annotated[StreamRunner, Depends(get_streams)]



def png(a: np.ndarray) -> str:
    """A picture as a PNG data URL at its own size (the page scales it, pixelated)."""
    return png_data_url(a, min_side=1)


def to_request(body: schemas.DiffusionIn) -> capture.Request:
    if body.scheduler not in capture.SCHEDULERS:
        raise HTTPException(422, f"Unknown scheduler {body.scheduler!r}; choose one of {', '.join(capture.SCHEDULERS)}.")
    return capture.Request(prompt=body.prompt, negative=body.negative, seed=body.seed, steps=body.steps,
                           guidance=body.guidance, scheduler=body.scheduler)


def run_key(dm: DiffusionModel, req: capture.Request) -> tuple:
    return ("diffusion", dm.name, req, dm.image_size)


def head_of(dm: DiffusionModel, req: capture.Request) -> dict:
    tokens, n, truncated = capture.tokens_of(dm.pipe.tokenizer, req.prompt)
    limit = dm.pipe.tokenizer.model_max_length
    # One `step` event per UNet call: PNDM (SD 1.x's own) makes one more call than the steps asked.
    scheduler = capture.make_scheduler(dm.pipe, req.scheduler)
    scheduler.set_timesteps(req.steps)
    return {
        "model": dm.name, "tokens": tokens[:n] + (["(padding)"] if n < len(tokens) else []), "n_tokens": n,
        "truncated": truncated, "max_tokens": limit, "steps": len(scheduler.timesteps), "steps_asked": req.steps,
        "image_size": dm.image_size, "preview": "fast",
        "latent_size": dm.pipe.unet.config.sample_size,
        "notice": f"The prompt was longer than the model's {limit} tokens; it was cut to the first {limit}." if truncated else None,
    }


def step_event(trace: capture.Trace, s: capture.Step) -> dict:
    """One step on the wire: [4, h, w] latents and noise as float16, previews as PNG, and one
    cross-attention map per real token plus the padding's share summed (pixels sum to 1)."""
    words = s.words[: trace.n_tokens]
    if trace.n_tokens < len(trace.tokens):
        words = np.concatenate([words, s.words[trace.n_tokens :].sum(0, keepdims=True)])
    return {
        "index": s.index, "timestep": s.timestep,
        "latent": encode(s.latent).model_dump(), "x0": encode(s.x0).model_dump(),
        "noise": encode(s.noise).model_dump(), "noise_cond": encode(s.noise_cond).model_dump(),
        "noise_uncond": encode(s.noise_uncond).model_dump(),
        "preview": png(s.preview), "preview_x0": png(s.preview_x0), "words": encode(words).model_dump(),
    }


def done_event(trace: capture.Trace) -> dict:
    return {"image": png(trace.image), "nbytes": trace.nbytes}


def replay(trace: capture.Trace) -> list[dict]:
    return [{"event": "step", "data": step_event(trace, s)} for s in trace.steps] + [{"event": "done", "data": done_event(trace)}]


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def start_run(dm: DiffusionModel, req: capture.Request, streams: StreamRunner) -> LiveRun:
    def work(run: LiveRun) -> capture.Trace:
        with dm.lock:  # the UNet's attention processors are shared state: one run on a pipeline at a time
            trace = capture.run(dm, req, on_step=lambda tr, s: run.events.append({"event": "step", "data": step_event(tr, s)}),
                                cancelled=run.cancel.is_set)
        run.events.append({"event": "done", "data": done_event(trace)})
        return trace

    return await streams.start(run_key(dm, req), head_of(dm, req), work, lambda t: t.nbytes, replay)


@router.post("/run", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": "head, step…, done | error events"}})
async def run(body: schemas.DiffusionIn, request: Request, registry: RegistryDep, streams: StreamsDep):
    """Run (or replay from the cache) a text-to-image generation, streamed as Server-Sent Events:
    `head` (tokens, notices), one `step` per denoising step, then `done` (the image) or `error`."""
    dm = registry.diffusion_model(body.model)
    max_steps = request.app.state.settings.max_diffusion_steps
    if body.steps > max_steps:  # the schema allows 100; a server started with fewer says so here
        raise HTTPException(422, f"steps: at most {max_steps} on this server (asked for {body.steps}).")
    req = to_request(body)
    live = await start_run(dm, req, streams)  # Busy -> 503 + Retry-After before anything is streamed

    async def events():
        live.watchers += 1
        sent = 0
        try:
            yield sse("head", live.head)
            while True:
                while sent < len(live.events):
                    e = live.events[sent]
                    sent += 1
                    yield sse(e["event"], e["data"])
                if live.done:
                    if live.error:
                        yield sse("error", {"error": "run failed", "detail": live.error})
                    break
                if await request.is_disconnected():
                    break
                await asyncio.sleep(0.03)
        finally:
            live.watchers -= 1
            if live.watchers == 0 and not live.done:
                live.cancel.set()  # nobody is watching: stop at the next step

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


async def cached_trace(dm: DiffusionModel, req: capture.Request, streams: StreamRunner) -> capture.Trace:
    trace = await streams.cached(run_key(dm, req))
    if trace is None:
        raise HTTPException(404, "That run is not in the cache (any more): run it first.")
    return trace


async def cached_step(dm: DiffusionModel, body: schemas.DiffusionLayersIn, streams: StreamRunner) -> tuple[capture.Trace, capture.Step]:
    """A finished run's trace and its step `body.step` (422 past its last step)."""
    trace = await cached_trace(dm, to_request(body), streams)
    if body.step >= len(trace.steps):
        raise HTTPException(422, f"step {body.step} is out of range: the run has steps 0–{len(trace.steps) - 1}.")
    return trace, trace.steps[body.step]


@router.post("/layers")
async def layers(body: schemas.DiffusionLayersIn, registry: RegistryDep, streams: StreamsDep):
    """The raw cross-attention of every layer at one step of a finished run: [heads, pixels, tokens]."""
    dm = registry.diffusion_model(body.model)
    trace, s = await cached_step(dm, body, streams)
    return {"tokens": trace.tokens, "layers": {name: encode(m).model_dump() for name, m in s.layers.items()}}


@router.post("/decode")
async def decode(body: schemas.DiffusionDecodeIn, registry: RegistryDep, streams: StreamsDep):
    """The exact picture of one step of a finished run: its latent x_t or its x̂₀ through the VAE
    (the stream carries fast previews; this is what a page shows for the step it stops at)."""
    dm = registry.diffusion_model(body.model)
    trace, s = await cached_step(dm, body, streams)
    image = await asyncio.to_thread(capture.decode, dm, s.latent if body.which == "latent" else s.x0, trace.scaling_factor)
    return {"step": body.step, "which": body.which, "image": png(image)}


@router.post("/paths", response_model=schemas.PathsOut)
async def paths(body: schemas.RunsIn, registry: RegistryDep, streams: StreamsDep):
    """The latents of every step of finished runs projected on their two principal components:
    the path each run takes from noise to image, on one map."""
    traces = []
    for r in body.runs:
        dm = registry.diffusion_model(r.model)
        traces.append(await cached_trace(dm, to_request(r), streams))
    x = np.concatenate([np.stack([s.latent.ravel() for s in t.steps]) for t in traces])
    x = x - x.mean(0)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    pcs = x @ vt[:2].T
    var = (sv**2) / max((sv**2).sum(), 1e-12)
    out, at = [], 0
    for t in traces:
        out.append(pcs[at : at + len(t.steps)].round(4).tolist())
        at += len(t.steps)
    labels = [f"seed {t.request.seed}, guidance {t.request.guidance:g}" for t in traces]
    return schemas.PathsOut(points=out, explained=[float(v) for v in var[:2]], labels=labels)


@router.post("/forward", response_model=schemas.ForwardOut)
async def forward(body: schemas.ForwardIn, registry: RegistryDep):
    """The forward process on a drawn scene: encode with the VAE, add the noise of timestep t
    (x_t = √ᾱ·z + √(1−ᾱ)·ε), decode; the same noise level applied to pixels beside it."""
    dm = registry.diffusion_model(body.model)
    return await asyncio.to_thread(forward_process, dm, body)


@torch.no_grad()
def forward_process(dm: DiffusionModel, body: schemas.ForwardIn) -> schemas.ForwardOut:
    import random

    from app.shapes import random_scene, render

    size = dm.image_size
    scene = random_scene(random.Random(body.scene), n_objects=1 + body.scene % 2)
    img, _ = render(scene, size)
    vae = dm.pipe.vae
    dtype, device = vae.dtype, vae.device
    x = capture.from_uint8(np.asarray(img)[None]).to(device, dtype)
    z = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
    ab = float(dm.pipe.scheduler.alphas_cumprod[body.t])
    g = torch.Generator("cpu").manual_seed(body.seed)
    eps = torch.randn(z.shape, generator=g).to(device, dtype)
    zt = math.sqrt(ab) * z + math.sqrt(1 - ab) * eps
    dec = capture.to_uint8(vae.decode(torch.cat([z, zt]) / vae.config.scaling_factor).sample.float())
    pix_noise = torch.randn(x.shape, generator=g).to(device, dtype)
    xt = capture.to_uint8((math.sqrt(ab) * x + math.sqrt(1 - ab) * pix_noise).float())
    return schemas.ForwardOut(
        caption=scene.caption(), t=body.t, alpha_bar=ab, image=png(np.asarray(img)), reconstruction=png(dec[0]),
        noisy=png(dec[1]), noisy_pixels=png(xt[0]), latent=encode(z[0].float().cpu().numpy()),
        noisy_latent=encode(zt[0].float().cpu().numpy()),
    )
