"""HTML pages: the home page and one explorer page per view. The pages are static shells; each
loads its own small script (static/js/<view>.js) that fetches the JSON API. No inline scripts
(the Content-Security-Policy forbids them): server data reaches JS by fetch or data- attributes."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.templating import Jinja2Templates

from app.lessons import LESSONS
from app.settings import ROOT

router = APIRouter(tags=["pages"], include_in_schema=False)
templates = Jinja2Templates(directory=ROOT / "templates")

DEFAULT_TEXT = "The animal didn't cross the street because it was too tired"



def render(request: Request, template: str, **context):
    context.setdefault("text_pages", TEXT_PAGES)
    context.setdefault("vision_pages", VISION_PAGES)
    context.setdefault("diffusion_pages", DIFFUSION_PAGES)
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
    for vm in request.app.state.registry.vision.values():
        cfg = vm.config
        out.append(
            {
                "name": vm.name,
                "source": vm.source,
                "params": vm.n_params,
                "params_human": human_count(vm.n_params),
                "shape": f"ViT: {cfg.num_hidden_layers} layers × {cfg.num_attention_heads} heads, d_model {cfg.hidden_size}, "
                f"{cfg.image_size} px in {cfg.patch_size} px patches, {cfg.num_labels} classes",
                "card_url": f"/models/{vm.name}/card" if vm.card_path else None,
            }
        )
    for dm in request.app.state.registry.diffusion.values():
        unet = dm.pipe.unet.config
        out.append(
            {
                "name": dm.name,
                "source": dm.source,
                "params": dm.n_params,
                "params_human": human_count(dm.n_params),
                "shape": f"Stable Diffusion 1.x: {dm.image_size} px ↔ 4 × {unet.sample_size} × {unet.sample_size} latent, "
                f"UNet channels {tuple(unet.block_out_channels)}, {dm.pipe.tokenizer.model_max_length} tokens",
                "card_url": f"/models/{dm.name}/card" if dm.card_path else None,
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
    "architecture": {
        "nav": "Architecture", "title": "GPT-2 architecture", "family": "text",
        "desc": "The model's blocks from its real modules: sizes, parameters, what is captured where; click one to open it.",
    },
}
# (path, nav name, description) for the nav bar and the home page
TEXT_PAGES = [(f"/text/{view}", page["nav"], page["desc"]) for view, page in TEXT_VIEWS.items()]

# The ViT pages (issue 4), as TEXT_VIEWS: templates/vision_<view>.html, static/js/vision_<view>.js.
VISION_VIEWS = {
    "patches": {
        "nav": "ViT patches", "title": "Patches and embeddings",
        "desc": "The picture cut into patches; hover one to see its pixels flattened and embedded.",
    },
    "attention": {
        "nav": "ViT attention", "title": "Attention over the image",
        "desc": "Where CLS, or a patch you click, looks: one head or the mean of a layer, over the picture.",
    },
    "rollout": {
        "nav": "Rollout", "title": "Attention rollout",
        "desc": "Attention carried through the layers (Abnar & Zuidema 2020): step layer by layer.",
    },
    "heads": {
        "nav": "ViT heads", "title": "Heads and positions",
        "desc": "How far each head looks, by depth, and what the position embeddings learned.",
    },
    "prediction": {
        "nav": "Prediction", "title": "Prediction",
        "desc": "The class probabilities the ViT gives the picture.",
    },
    "architecture": {
        "nav": "ViT architecture", "title": "ViT architecture", "family": "vision",
        "desc": "The ViT's blocks from its real modules: patch grid, sizes, parameters; click a block to open it.",
    },
}
VISION_PAGES = [(f"/vision/{view}", page["nav"], page["desc"]) for view, page in VISION_VIEWS.items()]

# The Stable Diffusion pages (issue 5): templates/diffusion_<view>.html, static/js/diffusion_<view>.js.
DIFFUSION_VIEWS = {
    "generate": {
        "nav": "Text to image", "title": "Text to image, step by step",
        "desc": "Every denoising step as it is computed: the latent, the predicted image and noise, where each word lands.",
    },
    "forward": {
        "nav": "Forward process", "title": "The forward process",
        "desc": "A clean picture, the noise of timestep t added to it, and the autoencoder's latent space.",
    },
    "architecture": {
        "nav": "SD architecture", "title": "Stable Diffusion architecture", "family": "diffusion",
        "desc": "Text encoder, UNet and VAE from their real modules; where the prompt's K and V enter the UNet.",
    },
}
DIFFUSION_PAGES = [(f"/diffusion/{view}", page["nav"], page["desc"]) for view, page in DIFFUSION_VIEWS.items()]


@router.get("/")
async def home(request: Request):
    return render(request, "home.html", models=served_models(request), lessons=list(LESSONS.values()), title="glassbox")


def explorer_page(request: Request, views: dict, family: str, view: str, prefix: str, what: str):
    """One explorer page: templates/<prefix><view>.html, its script static/js/<prefix><view>.js."""
    if view not in views:
        raise HTTPException(404, f"No page /{family}/{view}; the {what} pages are: {', '.join(views)}.")
    return render(request, f"{prefix}{view}.html", view=f"{prefix}{view}", **views[view])


@router.get("/text/{view}")
async def text_page(request: Request, view: str):
    return explorer_page(request, TEXT_VIEWS, "text", view, "", "text")


@router.get("/vision/{view}")
async def vision_page(request: Request, view: str):
    return explorer_page(request, VISION_VIEWS, "vision", view, "vision_", "ViT")


@router.get("/diffusion/{view}")
async def diffusion_page(request: Request, view: str):
    return explorer_page(request, DIFFUSION_VIEWS, "diffusion", view, "diffusion_", "diffusion")
