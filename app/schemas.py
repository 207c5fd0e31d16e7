"""The JSON contract between server and pages (mirrored by JSDoc typedefs in static/js/common.js)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.wire import Array

TEXT_LIMIT = 20_000  # characters; the token limit is the model's context, checked after tokenizing


class StrictIn(BaseModel):
    """A request body. Strict: a number must be a JSON number, a string a JSON string. (Pydantic's lax
    mode took `false` for 0 and "3" for 3, which the OpenAPI schema says are not valid; the pages send
    numbers with Number().)"""

    model_config = ConfigDict(strict=True)


class TextIn(StrictIn):
    text: str = Field(max_length=TEXT_LIMIT, description="The text to run through the model.", examples=["The cat sat on the mat"])
    model: str | None = Field(None, max_length=200, description="A served model's name (GET /api/models); default: the first.")


class HeadIn(TextIn):
    layer: int = Field(ge=0, description="Layer index, from 0.")
    head: int = Field(ge=0, description="Head index, from 0.")


class NextIn(TextIn):
    # From 0.01: logits / 5e-324 overflow to inf, and softmax(inf - inf) is NaN (a 500 in /generate).
    temperature: float = Field(1.0, ge=0.01, le=100, allow_inf_nan=False, description="Softmax temperature, 0.01–100.")
    k: int = Field(10, ge=1, le=50, description="How many of the most likely tokens to return.")


class GenerateIn(TextIn):
    temperature: float = Field(1.0, ge=0.01, le=100, allow_inf_nan=False, description="Softmax temperature, 0.01–100.")
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
    vision: list[VisionModelOut] = []
    diffusion: list[DiffusionModelOut] = []


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


# --- ViT ---------------------------------------------------------------------------------------

IMAGE_ID = r"^[a-z0-9-]{1,64}$"


class VisionIn(StrictIn):
    image: str = Field(pattern=IMAGE_ID, description="A gallery id (GET /api/vision/gallery) or an upload's id.",
                       examples=["scene-1"])
    model: str | None = Field(None, max_length=200, description="A served ViT's name (GET /api/models); default: the first.")


class VisionHeadIn(VisionIn):
    layer: int = Field(ge=0, description="Layer index, from 0.")
    head: int | None = Field(None, ge=0, description="Head index, from 0; null: the mean of the layer's heads.")


class RolloutIn(VisionIn):
    source: int = Field(0, ge=0, description="Whose rollout row: 0 is CLS, 1 + i is patch i.")


class PatchIn(VisionIn):
    patch: int = Field(ge=0, description="Patch index, row by row from the top left, from 0.")


class VisionModelOut(BaseModel):
    name: str
    source: str
    params: int
    n_layers: int
    n_heads: int
    d_head: int
    image_size: list[int]  # [height, width] of the model's input
    patch_size: list[int]
    n_labels: int
    card_url: str | None


class GalleryItem(BaseModel):
    id: str
    name: str
    kind: str  # "scene" (drawn by app/shapes.py) or "photo"
    caption: str


class GalleryOut(BaseModel):
    items: list[GalleryItem]


class ClassProb(BaseModel):
    id: int
    label: str
    prob: float
    logit: float


class VisionTraceOut(BaseModel):
    model: str
    image: str  # the id to send with the other /api/vision calls
    name: str  # file name or gallery caption (user text: shown with textContent)
    original: dict  # format, width, height as uploaded or drawn
    image_url: str  # PNG data URL: the input as the model sees it (resized), enlarged with sharp pixels
    image_size: list[int]  # [height, width] in model pixels
    patch_size: list[int]
    grid: list[int]  # [rows, cols] of patches
    n_layers: int
    n_heads: int
    d_head: int
    d_model: int
    n_labels: int
    top: list[ClassProb]  # every class, most likely first (at most 20)


class VisionAttentionOut(BaseModel):
    layer: int
    head: int | None  # null: mean of heads
    attention: Array  # [1+P query, 1+P key], token 0 is CLS


class RolloutOut(BaseModel):
    source: int
    rollout: Array  # [layer, 1+P]: row `source` of the rollout after each layer


class VisionHeadsOut(BaseModel):
    distance: Array  # [layer, head] mean attention distance, in input pixels
    max_distance: float  # between the centres of opposite corner patches
    position_similarity: Array  # [P, P] cosine similarity of the patches' position embeddings


class PatchOut(BaseModel):
    patch: int
    row: int
    col: int
    pixels: Array  # [3, p, p] normalised pixel values the model reads (flattened in this order)
    embedding: Array  # [d_model] the patch projection of those pixels
    position: Array  # [d_model] this patch's position embedding
    stream: Array  # [d_model] embedding + position: the patch's token entering layer 0


class ErrorOut(BaseModel):
    error: str
    detail: str
    request_id: str | None = Field(None, description="Also in the server's log, beside the error.")


# --- Stable Diffusion -------------------------------------------------------------------------

PROMPT_LIMIT = 1_000  # characters; the tokenizer's own limit truncates further, and the page says so


class DiffusionIn(StrictIn):
    prompt: str = Field(max_length=PROMPT_LIMIT, description="What to draw; empty draws unconditionally.", examples=["a red circle"])
    negative: str = Field("", max_length=PROMPT_LIMIT, description="The negative prompt (guidance pushes away from it).")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    steps: int = Field(20, ge=1, le=100, description="Denoising steps, 1–100.")
    guidance: float = Field(5.0, ge=0, le=30, allow_inf_nan=False, description="Classifier-free guidance scale, 0–30.")
    scheduler: str = Field("default", description="default (the model's own), ddim, pndm, euler, euler_ancestral, dpm_multistep, ddpm.")
    model: str | None = Field(None, max_length=200, description="A served diffusion model's name; default: the first.")


class DiffusionLayersIn(DiffusionIn):
    step: int = Field(ge=0, description="Step index, from 0.")


class DiffusionDecodeIn(DiffusionLayersIn):
    which: Literal["latent", "x0"] = Field("x0", description="The step's latent x_t or its predicted clean latent x̂₀.")


class RunsIn(StrictIn):
    runs: list[DiffusionIn] = Field(min_length=1, max_length=8)


class ForwardIn(StrictIn):
    t: int = Field(ge=0, le=999, description="Timestep of the forward (noising) process.")
    scene: int = Field(0, ge=0, le=10_000, description="Which drawn scene to noise.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the added noise.")
    model: str | None = None


class ForwardOut(BaseModel):
    caption: str
    t: int
    alpha_bar: float
    image: str  # PNG data URL: the clean scene
    reconstruction: str  # PNG: encode -> decode through the VAE
    noisy: str  # PNG: the noised latent decoded
    noisy_pixels: str  # PNG: the same noise schedule applied to pixels, for comparison
    latent: Array  # [4, h, w]
    noisy_latent: Array  # [4, h, w]


class PathsOut(BaseModel):
    points: list[list[list[float]]]  # [run][step] -> (pc1, pc2)
    explained: list[float]  # variance share of the two components
    labels: list[str]


class DiffusionModelOut(BaseModel):
    name: str
    source: str
    params: int
    image_size: int
    latent_size: int
    max_tokens: int
    schedulers: list[str]
    cross_attention_layers: list[str]
    self_attention_layers: list[str]
    card_url: str | None


ModelsOut.model_rebuild()  # DiffusionModelOut is defined after it


# ---------------------------------------------------------------------------------------------
# Guided lessons (app/lessons.py)


class LessonStepOut(BaseModel):
    page: str
    url: str  # the page with the step's view, the example put in, and the lesson's own keys
    title: str
    text: str


class LessonOut(BaseModel):
    id: str
    family: str
    title: str
    summary: str
    example: str  # the example the step URLs use
    default_example: str
    example_kind: Literal["text", "image", "prompt"]
    example_label: str
    steps: list[LessonStepOut]


class LessonsOut(BaseModel):
    lessons: list[LessonOut]


# --- Architecture map (app/architecture.py) ----------------------------------------------------


class ArchNode(BaseModel):
    id: str = Field(description="Unique in the graph: the module path where the node is a module.")
    kind: str = Field(description="input, embed, block, norm, attention, mlp, head, cross_attention, resblock, ...")
    label: str
    name: str | None = Field(description="Module (or parameter) path as named_modules() names it; SD: prefixed by "
                             "the pipeline component (unet., vae., text_encoder.). None: not a module.")
    parent: str | None = Field(description="The id of the node drawn around this one.")
    layer: int | None = Field(description="The transformer layer the node belongs to.")
    shapes: dict[str, list[int | str]] = Field(description="Tensor shapes, batch dropped; 'pos' varies per input.")
    facts: dict[str, int | float | str]
    params: int = Field(description="sum(p.numel()) over the module's parameters, its children's included.")
    tied: str | None = Field(description="The node whose weights this one reuses (counted once in the total).")
    hooks: list[str] = Field(description="The capture points recorded here (capture module hook names).")
    link: str | None = Field(description="The page that shows this block.")
    rows: list[list[str | None]] = Field(description="Children's ids, row by row; null is an empty cell.")


class ArchEdge(BaseModel):
    source: str
    target: str
    kind: Literal["flow", "skip", "context", "loop"]
    label: str | None


class ArchitectureOut(BaseModel):
    family: Literal["text", "vision", "diffusion"]
    model: str
    params: int = Field(description="The model's parameters, tied weights counted once.")
    config: dict[str, int | float | str]
    hooks: list[str] = Field(description="Every capture point of the model; each is on exactly one node.")
    rows: list[list[str | None]] = Field(description="Top-level nodes' ids, row by row.")
    nodes: list[ArchNode]
    edges: list[ArchEdge]
