"""HTML pages: the home page and one explorer page per view. The pages are static shells; each
loads its own small script (static/js/<view>.js) that fetches the JSON API. No inline scripts
(the Content-Security-Policy forbids them): server data reaches JS by fetch or data- attributes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.templating import Jinja2Templates

from app.settings import ROOT

router = APIRouter(tags=["pages"], include_in_schema=False)
templates = Jinja2Templates(directory=ROOT / "templates")

DEFAULT_TEXT = "The animal didn't cross the street because it was too tired"

# (path, title, one-line description): the nav bar and the home page list these, in this order.
TEXT_PAGES = [
    ("/text/attention", "Attention", "One head's attention as a heatmap: which earlier tokens each token looks at."),
    ("/text/heads", "All heads", "Every layer × head at once, as small heatmaps; click one to open it."),
    ("/text/head", "One head, step by step", "The math of one head with the model's real numbers: Q, K, V, softmax, Z."),
    ("/text/next", "Next token", "The next-token probabilities, a temperature slider, and generation one token at a time."),
    ("/text/compare", "Compare two texts", "Two sentences that differ in one word: where does “it” look in each?"),
    ("/text/lens", "Logit lens", "What the model would predict after each layer, at every position."),
]


def render(request: Request, template: str, **context):
    context.setdefault("text_pages", TEXT_PAGES)
    context.setdefault("default_text", DEFAULT_TEXT)
    context.setdefault("current", request.url.path)
    return templates.TemplateResponse(request, template, context)


def served_models(request: Request) -> list[dict]:
    """The text models of the registry, for the home page; empty if the registry is missing."""
    registry = getattr(request.app.state, "registry", None)
    out = []
    for name, tm in (getattr(registry, "text", None) or {}).items():
        config = getattr(tm, "config", None)
        try:
            n_params = int(getattr(tm, "n_params", 0) or 0)
        except Exception:  # noqa: BLE001 - a page must render even if a model is odd
            n_params = 0
        out.append(
            {
                "name": getattr(tm, "name", name),
                "source": str(getattr(tm, "source", "")),
                "params": n_params,
                "params_human": human_count(n_params),
                "n_layers": getattr(config, "n_layer", None),
                "n_heads": getattr(config, "n_head", None),
                "d_model": getattr(config, "n_embd", None),
                "n_ctx": getattr(config, "n_positions", None),
                "card_url": f"/models/{getattr(tm, 'name', name)}/card",
            }
        )
    return out


def human_count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f} B"
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e3:
        return f"{n / 1e3:.0f} k"
    return str(n)


@router.get("/")
async def home(request: Request):
    return render(request, "home.html", models=served_models(request), title="glassbox")


@router.get("/text/attention")
async def attention_page(request: Request):
    return render(request, "attention.html", title="Attention heatmap", view="attention")


@router.get("/text/heads")
async def heads_page(request: Request):
    return render(request, "heads.html", title="All heads", view="heads")


@router.get("/text/head")
async def head_page(request: Request):
    return render(request, "head.html", title="One head, step by step", view="head")


@router.get("/text/next")
async def next_page(request: Request):
    return render(request, "next.html", title="Next token", view="next")


@router.get("/text/compare")
async def compare_page(request: Request):
    return render(
        request,
        "compare.html",
        title="Compare two texts",
        view="compare",
        text_a=DEFAULT_TEXT,
        text_b="The animal didn't cross the street because it was too wide",
    )


@router.get("/text/lens")
async def lens_page(request: Request):
    return render(request, "lens.html", title="Logit lens", view="lens")
