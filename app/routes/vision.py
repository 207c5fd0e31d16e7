"""ViT endpoints. Thin: look up the model, get the (cached) trace of a picture, encode a view of it.

A picture is a gallery id or an upload. An upload is sent once, as the raw request body, to
POST /api/vision/upload; its trace (which holds the picture) is cached under an id made from its
bytes, and every view names that id. Nothing uploaded touches the disk: when the cache lets the
trace go, the page is told to upload the picture again.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request

from app import schemas
from app.capture import vision as capture
from app.images import ImageRejected, gallery, gallery_picture, png_data_url, read_upload, upload_id
from app.registry import Registry, VisionModel
from app.routes.errors import JSON_ERRORS, NOT_FOUND, JSONBodyRoute
from app.routes.text import RegistryDep, RunnerDep
from app.runs import Runner
from app.wire import encode

router = APIRouter(prefix="/api/vision", tags=["vision"], route_class=JSONBodyRoute)

GONE = (
    "This uploaded image is no longer in the server's memory (uploads are never stored on disk, and older "
    "ones make room for newer): upload it again."
)



def input_side(vm: VisionModel) -> int:
    return capture.pair(vm.config.image_size)[0]


async def run_capture(runner: Runner, vm: VisionModel, image_id: str, load) -> capture.VisionTrace:
    """Decode (`load` -> Picture) and capture off the event loop, as one bounded, shared, cached run."""

    def fn():
        pic = load()
        original = {"format": pic.format, "width": pic.width, "height": pic.height}
        return capture.capture(vm, pic.image, image_id, pic.name, original)

    try:
        return await runner.get(("vision", vm.name, image_id), fn, lambda t: t.nbytes)
    except ImageRejected as e:
        raise HTTPException(e.status, str(e)) from None


async def get_trace(body: schemas.VisionIn, registry: Registry, runner: Runner) -> capture.VisionTrace:
    vm = registry.vision_model(body.model)
    if body.image.startswith("u-"):
        t = await runner.cached(("vision", vm.name, body.image))  # an upload another process traced counts too
        if t is None:
            raise HTTPException(404, GONE)
        return t
    if body.image not in {item["id"] for item in gallery()}:
        raise HTTPException(404, f"No gallery image {body.image!r}: GET /api/vision/gallery lists them.")
    return await run_capture(runner, vm, body.image, lambda: gallery_picture(body.image, input_side(vm)))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, but never more than limit + 1 bytes in memory: a 413 as soon as it is over."""
    too_big = f"The upload is larger than {limit / 2**20:.0f} MiB, the limit for images."
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, too_big)
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise HTTPException(413, too_big)
    return bytes(buf)


def trace_out(t: capture.VisionTrace) -> schemas.VisionTraceOut:
    if "image_url" not in t.derived:
        t.derived["image_url"] = png_data_url(t.seen)
    return schemas.VisionTraceOut(
        model=t.model,
        image=t.image_id,
        # An upload's trace is shared by everyone who sent the same bytes: no one's file name goes with it
        # (POST /upload answers each uploader with their own; the page keeps it).
        name="upload" if t.image_id.startswith("u-") else t.name,
        original=t.original,
        image_url=t.derived["image_url"],
        image_size=list(t.image_size),
        patch_size=list(t.patch_size),
        grid=list(t.grid),
        n_layers=t.n_layers,
        n_heads=t.n_heads,
        d_head=t.d_head,
        d_model=t.d_model,
        n_labels=len(t.labels),
        top=capture.top_classes(t, 20),
    )


@router.get("/gallery", response_model=schemas.GalleryOut)
async def gallery_list():
    """The pictures to try without uploading: drawn shape scenes (and sample photos when installed)."""
    return schemas.GalleryOut(items=gallery())


@router.post("/trace", response_model=schemas.VisionTraceOut, responses=JSON_ERRORS)
async def trace(body: schemas.VisionIn, registry: RegistryDep, runner: RunnerDep):
    """Run a gallery picture (or an upload still held) through the ViT: the picture as the model
    sees it, its patch grid, the model's shape and the class probabilities."""
    return trace_out(await get_trace(body, registry, runner))


@router.post(
    "/upload",
    response_model=schemas.VisionTraceOut,
    responses={**NOT_FOUND, 413: {"model": schemas.ErrorOut}, 415: {"model": schemas.ErrorOut}},
    openapi_extra={
        "requestBody": {"required": True, "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}}
    },
)
async def upload(
    request: Request,
    registry: RegistryDep,
    runner: RunnerDep,
    name: Annotated[str, Query(max_length=200, description="The file's name, to show.")] = "upload",
    model: Annotated[str | None, Query(description="A served ViT's name; default: the first.")] = None,
):
    """Upload a picture as the raw request body (PNG, JPEG, WebP or a still GIF; limits in the README)
    and trace it like /trace. The answer's `image` is the id to send with the other calls."""
    settings = request.app.state.settings
    vm = registry.vision_model(model)
    data = await read_body(request, settings.upload_max_bytes)
    if not data:
        raise HTTPException(415, "The upload is empty: choose an image file.")
    uid = upload_id(data)
    side = input_side(vm)
    t = await run_capture(
        runner, vm, uid, lambda: read_upload(data, name, settings.upload_max_bytes, settings.upload_max_pixels, side)
    )
    # The trace is shared by everyone who uploads the same bytes, and holds the first uploader's file
    # name: answer with this request's own (else one user sees another's name for the same picture).
    return trace_out(t).model_copy(update={"name": name})


def check_layer_head(t: capture.VisionTrace, layer: int, head: int | None) -> None:
    if layer >= t.n_layers:
        raise HTTPException(422, f"layer {layer} is out of range: {t.model} has layers 0–{t.n_layers - 1}.")
    if head is not None and head >= t.n_heads:
        raise HTTPException(422, f"head {head} is out of range: {t.model} has heads 0–{t.n_heads - 1}.")


@router.post("/attention", response_model=schemas.VisionAttentionOut, responses=JSON_ERRORS)
async def attention(body: schemas.VisionHeadIn, registry: RegistryDep, runner: RunnerDep):
    """One layer's attention [1+P, 1+P] (float16), of one head or the mean of its heads."""
    t = await get_trace(body, registry, runner)
    check_layer_head(t, body.layer, body.head)
    a = t.pattern(body.layer)
    return schemas.VisionAttentionOut(
        layer=body.layer, head=body.head, attention=encode(a.mean(axis=0) if body.head is None else a[body.head])
    )


@router.post("/rollout", response_model=schemas.RolloutOut, responses=JSON_ERRORS)
async def rollout(body: schemas.RolloutIn, registry: RegistryDep, runner: RunnerDep):
    """Attention rollout after each layer, the row of one token (CLS by default): [layer, 1+P]."""
    t = await get_trace(body, registry, runner)
    if body.source > t.n_patches:
        raise HTTPException(422, f"source {body.source} is out of range: tokens are 0 (CLS) to {t.n_patches}.")
    r = await asyncio.to_thread(capture.rollout, t)  # L matrix products: off the loop
    return schemas.RolloutOut(source=body.source, rollout=encode(r[:, body.source, :]))


@router.post("/heads", response_model=schemas.VisionHeadsOut, responses=JSON_ERRORS)
async def heads(body: schemas.VisionIn, registry: RegistryDep, runner: RunnerDep):
    """Each head's mean attention distance in pixels, and the position embeddings' cosine similarity."""
    t = await get_trace(body, registry, runner)
    dist = await asyncio.to_thread(capture.attention_distance, t)
    corners = capture.patch_centres(t)
    return schemas.VisionHeadsOut(
        distance=encode(dist),
        max_distance=float(np.linalg.norm(corners[-1] - corners[0])),
        position_similarity=encode(capture.position_similarity(t)),
    )


@router.post("/patch", response_model=schemas.PatchOut, responses=JSON_ERRORS)
async def patch(body: schemas.PatchIn, registry: RegistryDep, runner: RunnerDep):
    """One patch on its way in: its pixels, their projection, its position embedding and the sum."""
    t = await get_trace(body, registry, runner)
    if body.patch >= t.n_patches:
        raise HTTPException(422, f"patch {body.patch} is out of range: {t.model} cuts pictures into {t.n_patches} patches.")
    row, col = divmod(body.patch, t.grid[1])
    return schemas.PatchOut(
        patch=body.patch,
        row=row,
        col=col,
        pixels=encode(capture.patch_pixels(t, body.patch)),
        embedding=encode(t.acts["hook_patch_embed"][body.patch]),
        position=encode(t.acts["hook_pos_embed"][1 + body.patch]),
        stream=encode(t.acts["hook_embed"][1 + body.patch]),
    )
