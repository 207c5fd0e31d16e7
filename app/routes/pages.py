"""HTML pages: the home page and one explorer page per view. The pages are static shells; each
loads its own small script (static/js/<view>.js) that fetches the JSON API. No inline scripts
(the Content-Security-Policy forbids them): server data reaches JS by fetch or data- attributes."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
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
    ("/text/compare", "Compare two texts", "Two sentences that differ in one word, read by the same head, side by side."),
    ("/text/lens", "Logit lens", "What the model would predict after each layer, at every position."),
]


def render(request: Request, template: str, **context):
    context.setdefault("text_pages", TEXT_PAGES)
    context.setdefault("default_text", DEFAULT_TEXT)
    context.setdefault("current", request.url.path)
    return templates.TemplateResponse(request, template, context)


def served_models(request: Request) -> list[dict]:
    """The text models being served, for the home page."""
    out = []
    for tm in request.app.state.registry.text.values():
        cfg = tm.config
        out.append(
            {
                "name": tm.name,
                "source": tm.source,
                "params": tm.n_params,
                "params_human": human_count(tm.n_params),
                "n_layers": cfg.n_layer,
                "n_heads": cfg.n_head,
                "d_model": cfg.n_embd,
                "n_ctx": cfg.n_positions,
                "card_url": f"/models/{tm.name}/card" if tm.card_path else None,
            }
        )
    return out


def human_count(n: int) -> str:
    for scale, suffix in ((1e9, " B"), (1e6, " M"), (1e3, " k")):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}"
    return str(n)


# view -> (template context); every view's template is templates/<view>.html
TEXT_VIEWS = {
    "attention": {"title": "Attention heatmap"},
    "heads": {"title": "All heads"},
    "head": {"title": "One head, step by step"},
    "next": {"title": "Next token"},
    "compare": {
        "title": "Compare two texts",
        "text_a": DEFAULT_TEXT,
        "text_b": "The animal didn't cross the street because it was too small",
    },
    "lens": {"title": "Logit lens"},
}


@router.get("/")
async def home(request: Request):
    return render(request, "home.html", models=served_models(request), title="glassbox")


@router.get("/text/{view}")
async def text_page(request: Request, view: str):
    if view not in TEXT_VIEWS:
        raise HTTPException(404, f"No page /text/{view}; the text pages are: {', '.join(TEXT_VIEWS)}.")
    return render(request, f"{view}.html", view=view, **TEXT_VIEWS[view])
