"""Export endpoints: the trace a page shows, as numpy's .npz with a manifest (app/export.py).

Thin: each takes the same body as its family's views, gets the trace from the same cache (a text or
a picture is captured if it is not there; a diffusion run never is: it is only read from the cache
of finished runs) and answers the file as an attachment.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from app import export, schemas
from app.routes import diffusion as diffusion_routes
from app.routes import text as text_routes
from app.routes import vision as vision_routes
from app.routes.errors import JSON_ERRORS, JSONBodyRoute
from app.routes.text import RegistryDep, RunnerDep

NPZ = {
    200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
          "description": "An .npz file: one .npy per array and manifest.json (np.load reads it)."},
    **JSON_ERRORS,
}

router = APIRouter(tags=["export"], responses=NPZ, route_class=JSONBodyRoute)

NOT_CACHED = (
    "This run is not in the server's cache: run it (and let it finish) first, then download it. The server "
    "keeps finished runs until newer ones need the room, and an export never recomputes one."
)


async def npz_response(ex: export.Exported) -> Response:
    data = await asyncio.to_thread(ex.npz)  # a long text's trace is tens of MB to copy: off the event loop
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{ex.filename}"'})


@router.post("/api/text/export", response_class=Response)
async def text_export(body: schemas.TextIn, registry: RegistryDep, runner: RunnerDep):
    """The text's whole GPT-2 trace as .npz: every hook, the token ids, the next-token logits."""
    tm, t = await text_routes.get_trace(body, registry, runner)
    return await npz_response(export.text(tm, t))


@router.post("/api/vision/export", response_class=Response)
async def vision_export(body: schemas.VisionIn, registry: RegistryDep, runner: RunnerDep):
    """The picture's whole ViT trace as .npz: every hook, the pixels read and seen, the logits."""
    t = await vision_routes.get_trace(body, registry, runner)
    return await npz_response(export.vision(registry.vision_model(body.model), t))


@router.post("/api/diffusion/export", response_class=Response)
async def diffusion_export(body: schemas.DiffusionIn, registry: RegistryDep, streams: diffusion_routes.StreamsDep):
    """A finished run (the same body as /api/diffusion/run) as .npz: every step's latents, noise,
    x̂₀, word maps and cross-attention layers, and the image. 404 if it is not in the cache."""
    dm = registry.diffusion_model(body.model)
    trace = await streams.cached(diffusion_routes.run_key(dm, diffusion_routes.to_request(body)))  # or another process's
    if trace is None:
        raise HTTPException(404, NOT_CACHED)
    return await npz_response(export.diffusion(dm, trace))
