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


# One entry per text page, in nav order: the template is templates/<view>.html, and the whole entry
# is its context ("nav" names it in the nav bar, "desc" on the home page).
TEXT_VIEWS = {
    "attention": {
        "nav": "Attention", "title": "Attention heatmap",
        "desc": "One head's attention as a heatmap: which earlier tokens each token looks at.",
    },
    "heads": {
        "nav": "All heads", "title": "All heads",
        "desc": "Every layer × head at once, as small heatmaps; click one to open it.",
    },
    "head": {
        "nav": "One head, step by step", "title": "One head, step by step",
        "desc": "The math of one head with the model's real numbers: Q, K, V, softmax, Z.",
    },
    "next": {
        "nav": "Next token", "title": "Next token",
        "desc": "The next-token probabilities, a temperature slider, and generation one token at a time.",
    },
    "compare": {
        "nav": "Compare two texts", "title": "Compare two texts",
        "desc": "Two sentences that differ in one word, read by the same head, side by side.",
        "text_a": DEFAULT_TEXT,
        "text_b": "The animal didn't cross the street because it was too small",
    },
    "lens": {
        "nav": "Logit lens", "title": "Logit lens",
        "desc": "What the model would predict after each layer, at every position.",
    },
}
# (path, nav name, description) for the nav bar and the home page
TEXT_PAGES = [(f"/text/{view}", page["nav"], page["desc"]) for view, page in TEXT_VIEWS.items()]


@router.get("/")
async def home(request: Request):
    return render(request, "home.html", models=served_models(request), title="glassbox")


@router.get("/text/{view}")
async def text_page(request: Request, view: str):
    if view not in TEXT_VIEWS:
        raise HTTPException(404, f"No page /text/{view}; the text pages are: {', '.join(TEXT_VIEWS)}.")
    return render(request, f"{view}.html", view=view, **TEXT_VIEWS[view])
