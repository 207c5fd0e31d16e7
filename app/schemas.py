"""The JSON contract between server and pages (mirrored by JSDoc typedefs in static/js/common.js)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.wire import Array

TEXT_LIMIT = 20_000  # characters; the token limit is the model's context, checked after tokenizing


class TextIn(BaseModel):
    text: str = Field(max_length=TEXT_LIMIT, description="The text to run through the model.")
    model: str | None = Field(None, description="A served model's name (GET /api/models); default: the first.")


class HeadIn(TextIn):
    layer: int = Field(ge=0, description="Layer index, from 0.")
    head: int = Field(ge=0, description="Head index, from 0.")


class NextIn(TextIn):
    temperature: float = Field(1.0, gt=0, le=100, allow_inf_nan=False, description="Softmax temperature, > 0.")
    k: int = Field(10, ge=1, le=50, description="How many of the most likely tokens to return.")


class GenerateIn(TextIn):
    temperature: float = Field(1.0, gt=0, le=100, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Fix it to make the draw repeatable.")


class LensIn(TextIn):
    k: int = Field(3, ge=1, le=10)


class Token(BaseModel):
    id: int
    text: str


class Candidate(Token):
    prob: float
    logit: float | None = None


class TextModelOut(BaseModel):
    name: str
    source: str
    params: int
    n_layers: int
    n_heads: int
    d_head: int
    n_ctx: int
    card_url: str | None


class ModelsOut(BaseModel):
    text: list[TextModelOut]


class TraceOut(BaseModel):
    model: str
    text: str
    tokens: list[Token]
    n_layers: int
    n_heads: int
    d_head: int
    d_model: int
    n_ctx: int
    top: list[Candidate]


class AttentionOut(BaseModel):
    layer: int
    head: int
    tokens: list[Token]
    attention: Array  # [query_pos, key_pos], zero above the diagonal


class GridOut(BaseModel):
    n_layers: int
    n_heads: int
    size: int
    pooled: bool
    attention: Array  # [layer, head, size, size]


class HeadOut(BaseModel):
    layer: int
    head: int
    d_head: int
    tokens: list[Token]
    x: Array  # [pos, d_model]
    wq: Array  # [d_model, d_head]
    wk: Array
    wv: Array
    bq: Array  # [d_head]
    bk: Array
    bv: Array
    q: Array  # [pos, d_head]
    k: Array
    v: Array
    scores: Array  # [pos, pos] Q·Kᵀ
    scaled: Array  # ÷ √d_head
    masked: Array  # -inf above the diagonal
    attention: Array  # softmax, as captured
    z: Array  # [pos, d_head]
    wo: Array  # [d_head, d_model]: this head's rows of c_proj
    bo: Array  # [d_model]
    out: Array  # [pos, d_model]: concat(all heads' Z)·Wo + bo


class NextOut(BaseModel):
    temperature: float
    tokens: list[Candidate]


class GenerateOut(BaseModel):
    token: Candidate
    text: str


class LensOut(BaseModel):
    layers: list[str]
    tokens: list[Token]
    top: list[list[list[Candidate]]]  # [layer][pos][rank]


class ErrorOut(BaseModel):
    error: str
    detail: str
