"""GPT-2 endpoints. Thin: look up the model, get the (cached) trace, encode a view of it.

Every view is computed from one cached trace per (model, text), so switching layer or head, or
moving the temperature slider, never runs the model again. Arrays are float16 (2 bytes a value,
base64 in JSON); see app/wire.py.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request

from app import schemas
from app.capture import text as capture
from app.registry import Registry, TextModel
from app.routes.errors import JSON_ERRORS, JSONBodyRoute
from app.runs import Runner
from app.wire import encode, pool

router = APIRouter(prefix="/api/text", tags=["text"], responses=JSON_ERRORS, route_class=JSONBodyRoute)


def get_registry(request: Request) -> Registry:
    return request.app.state.registry


def get_runner(request: Request) -> Runner:
    return request.app.state.runner


RegistryDep = Annotated[Registry, Depends(get_registry)]
RunnerDep = Annotated[Runner, Depends(get_runner)]



async def get_trace(body: schemas.TextIn, registry: Registry, runner: Runner) -> tuple[TextModel, capture.TextTrace]:
    tm = registry.text_model(body.model)
    if not body.text:
        raise HTTPException(422, "The text is empty: type a few words.")
    try:
        trace = await runner.get(("text", tm.name, body.text), lambda: capture.capture(tm, body.text), lambda t: t.nbytes)
    except capture.TextTooLong as e:
        raise HTTPException(422, str(e)) from None
    return tm, trace


def check_head(trace: capture.TextTrace, layer: int, head: int) -> None:
    if layer >= trace.n_layers:
        raise HTTPException(422, f"layer {layer} is out of range: {trace.model} has layers 0–{trace.n_layers - 1}.")
    if head >= trace.n_heads:
        raise HTTPException(422, f"head {head} is out of range: {trace.model} has heads 0–{trace.n_heads - 1}.")


def tokens_of(trace: capture.TextTrace) -> list[schemas.Token]:
    return [schemas.Token(id=i, text=t) for i, t in zip(trace.token_ids, trace.tokens)]


@router.post("/trace", response_model=schemas.TraceOut)
async def trace(body: schemas.TextIn, registry: RegistryDep, runner: RunnerDep):
    """Tokenise and trace a text: its tokens, the model's shape and the next-token top 10."""
    tm, t = await get_trace(body, registry, runner)
    return schemas.TraceOut(
        model=tm.name,
        text=t.text,
        tokens=tokens_of(t),
        n_layers=t.n_layers,
        n_heads=t.n_heads,
        d_head=t.d_head,
        d_model=t.d_model,
        n_ctx=tm.config.n_positions,
        top=capture.next_tokens(tm, t, 1.0, 10),
    )


@router.post("/attention", response_model=schemas.AttentionOut)
async def attention(body: schemas.HeadIn, registry: RegistryDep, runner: RunnerDep):
    """One layer/head's attention probabilities [query, key] (float16)."""
    _, t = await get_trace(body, registry, runner)
    check_head(t, body.layer, body.head)
    return schemas.AttentionOut(
        layer=body.layer, head=body.head, tokens=tokens_of(t), attention=encode(t.pattern(body.layer)[body.head])
    )


@router.post("/grid", response_model=schemas.GridOut)
async def grid(body: schemas.TextIn, request: Request, registry: RegistryDep, runner: RunnerDep):
    """Every layer × head at once, average-pooled to thumbnails for long texts."""
    _, t = await get_trace(body, registry, runner)
    size = request.app.state.settings.grid_max_tokens
    stacked = np.stack([t.pattern(l) for l in range(t.n_layers)])  # [layer, head, q, k]
    pooled = pool(stacked, size)
    return schemas.GridOut(
        n_layers=t.n_layers, n_heads=t.n_heads, size=pooled.shape[-1], pooled=pooled.shape[-1] < stacked.shape[-1],
        attention=encode(pooled),
    )


@router.post("/head", response_model=schemas.HeadOut)
async def head(body: schemas.HeadIn, registry: RegistryDep, runner: RunnerDep):
    """One head step by step: X, Wq/Wk/Wv, Q, K, V, QKᵀ, ÷√d, mask, softmax, Z, ·Wo."""
    tm, t = await get_trace(body, registry, runner)
    check_head(t, body.layer, body.head)
    steps = capture.head_walkthrough(tm, t, body.layer, body.head)
    return schemas.HeadOut(
        layer=body.layer, head=body.head, d_head=t.d_head, tokens=tokens_of(t), **{k: encode(v) for k, v in steps.items()}
    )


@router.post("/next", response_model=schemas.NextOut)
async def next_token(body: schemas.NextIn, registry: RegistryDep, runner: RunnerDep):
    """The next-token distribution at a temperature, re-sampled from the cached logits."""
    tm, t = await get_trace(body, registry, runner)
    return schemas.NextOut(temperature=body.temperature, tokens=capture.next_tokens(tm, t, body.temperature, body.k))


@router.post("/generate", response_model=schemas.GenerateOut)
async def generate(body: schemas.GenerateIn, registry: RegistryDep, runner: RunnerDep):
    """One generation step: draw a token at the temperature and append it to the text."""
    tm, t = await get_trace(body, registry, runner)
    if len(t.token_ids) >= tm.config.n_positions:
        raise HTTPException(422, f"The text already fills the context of {tm.config.n_positions} tokens.")
    token = capture.sample_next(tm, t, body.temperature, body.seed)
    return schemas.GenerateOut(token=token, text=t.text + token["text"])


@router.post("/lens", response_model=schemas.LensOut)
async def lens(body: schemas.LensIn, registry: RegistryDep, runner: RunnerDep):
    """Logit lens: the top-k prediction after each layer, at every position."""
    tm, t = await get_trace(body, registry, runner)
    result = await asyncio.to_thread(capture.logit_lens, tm, t, body.k)  # L+1 unembeddings: off the loop
    return schemas.LensOut(layers=result["layers"], tokens=tokens_of(t), top=result["top"])
