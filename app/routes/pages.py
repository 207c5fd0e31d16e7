"""HTML pages: the home page and one explorer page per view. The pages are static shells; each
loads its own small script (static/js/<view>.js) that fetches the JSON API. No inline scripts
(the Content-Security-Policy forbids them): server data reaches JS by fetch or data- attributes."""

from __future__ import annotations

from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.templating import Jinja2Templates

from app import i18n
from app.i18n import LANG_KEY, LANGUAGES, N_
from app.lessons import LESSONS
from app.settings import ROOT

router = APIRouter(tags=["pages"], include_in_schema=False)


def language_templates(lang: str) -> Jinja2Templates:
    """The templates with `_()` and {% trans %} in one language: one Environment per language, so
    concurrent requests in different languages never share the installed gettext."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROOT / "templates"), autoescape=True,
                             extensions=["jinja2.ext.i18n"])
    env.policies["ext.i18n.trimmed"] = True  # as app/i18n.py extracts them
    env.install_gettext_translations(i18n.translations(lang), newstyle=True)
    return Jinja2Templates(env=env)


TEMPLATES = {lang: language_templates(lang) for lang in LANGUAGES}
templates = TEMPLATES[i18n.SOURCE_LANGUAGE]

DEFAULT_TEXT = "The animal didn't cross the street because it was too tired"


def request_language(request: Request) -> str:
    return i18n.chosen_language(request.query_params, request.headers.get("accept-language"))


def language_links(request: Request, lang: str) -> list[dict]:
    """The header's switch: this address (its whole query) in each language."""
    others = [(k, v) for k, v in request.query_params.multi_items() if k != LANG_KEY]
    return [
        {"code": code, "name": name, "current": code == lang,
         "href": f"{request.url.path}?{urlencode([*others, (LANG_KEY, code)])}"}
        for code, name in LANGUAGES.items()
    ]


def render(request: Request, template: str, **context):
    lang = request_language(request)
    translate = i18n.gettext_for(lang)
    context.setdefault("text_pages", translated_pages(TEXT_PAGES, translate))
    context.setdefault("vision_pages", translated_pages(VISION_PAGES, translate))
    context.setdefault("diffusion_pages", translated_pages(DIFFUSION_PAGES, translate))
    context.setdefault("default_text", DEFAULT_TEXT)
    context.setdefault("current", request.url.path)
    if "title" in context:
        context["title"] = translate(context["title"])  # callers mark their titles with N_()
    js_messages, version = i18n.js_catalog(lang)
    context.update(lang=lang, languages=language_links(request, lang),
                   i18n_url=f"/i18n/{lang}.json?v={version}" if js_messages else "",
                   lang_in_url=request.query_params.get(LANG_KEY) == lang)
    response = TEMPLATES[lang].TemplateResponse(request, template, context)
    response.headers["Content-Language"] = lang
    response.headers["Vary"] = "Accept-Language"  # the same address answers in the browser's language
    return response


def translated_pages(pages: list[tuple[str, str, str]], translate) -> list[tuple[str, str, str]]:
    return [(path, translate(nav), translate(desc)) for path, nav, desc in pages]


@router.get("/i18n/{lang}.json")
async def js_messages(lang: str):
    """The translations of static/js's t() msgids (static/js/i18n.js fetches them)."""
    if lang not in LANGUAGES:
        raise HTTPException(404, f"No language {lang[:20]!r}; the languages are: {', '.join(LANGUAGES)}.")
    messages, _version = i18n.js_catalog(lang)
    # The page asks for it with ?v=<a hash of the messages>: a new catalogue is a new address.
    return JSONResponse(messages, headers={"Cache-Control": "public, max-age=86400"})


def served_models(request: Request) -> list[dict]:
    """The text models being served, for the home page."""
    _ = i18n.gettext_for(request_language(request))
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
                "shape": _("ViT: %(layers)s layers × %(heads)s heads, d_model %(width)s, %(size)s px in "
                           "%(patch)s px patches, %(classes)s classes") % {
                    "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads, "width": cfg.hidden_size,
                    "size": cfg.image_size, "patch": cfg.patch_size, "classes": cfg.num_labels},
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
                "shape": _("Stable Diffusion 1.x: %(size)s px ↔ 4 × %(latent)s × %(latent)s latent, UNet channels "
                           "%(channels)s, %(tokens)s tokens") % {
                    "size": dm.image_size, "latent": unet.sample_size, "channels": tuple(unet.block_out_channels),
                    "tokens": dm.pipe.tokenizer.model_max_length},
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
        "nav": N_("Attention"), "title": N_("Attention heatmap"),
        "desc": N_("One head's attention as a heatmap: which earlier tokens each token looks at."),
    },
    "heads": {
        "nav": N_("All heads"), "title": N_("All heads"),
        "desc": N_("Every layer × head at once, as small heatmaps; click one to open it."),
    },
    "head": {
        "nav": N_("One head, step by step"), "title": N_("One head, step by step"),
        "desc": N_("The math of one head with the model's real numbers: Q, K, V, softmax, Z."),
    },
    "next": {
        "nav": N_("Next token"), "title": N_("Next token"),
        "desc": N_("The next-token probabilities, a temperature slider, and generation one token at a time."),
    },
    "compare": {
        "nav": N_("Compare two texts"), "title": N_("Compare two texts"),
        "desc": N_("Two sentences that differ in one word, read by the same head, side by side."),
        "text_a": DEFAULT_TEXT,
        "text_b": "The animal didn't cross the street because it was too small",
    },
    "lens": {
        "nav": N_("Logit lens"), "title": N_("Logit lens"),
        "desc": N_("What the model would predict after each layer, at every position."),
    },
    "architecture": {
        "nav": N_("Architecture"), "title": N_("GPT-2 architecture"), "family": "text",
        "desc": N_("The model's blocks from its real modules: sizes, parameters, what is captured where; click one to open it."),
    },
}
# (path, nav name, description) for the nav bar and the home page
TEXT_PAGES = [(f"/text/{view}", page["nav"], page["desc"]) for view, page in TEXT_VIEWS.items()]

# The ViT pages (issue 4), as TEXT_VIEWS: templates/vision_<view>.html, static/js/vision_<view>.js.
VISION_VIEWS = {
    "patches": {
        "nav": N_("ViT patches"), "title": N_("Patches and embeddings"),
        "desc": N_("The picture cut into patches; hover one to see its pixels flattened and embedded."),
    },
    "attention": {
        "nav": N_("ViT attention"), "title": N_("Attention over the image"),
        "desc": N_("Where CLS, or a patch you click, looks: one head or the mean of a layer, over the picture."),
    },
    "rollout": {
        "nav": N_("Rollout"), "title": N_("Attention rollout"),
        "desc": N_("Attention carried through the layers (Abnar & Zuidema 2020): step layer by layer."),
    },
    "heads": {
        "nav": N_("ViT heads"), "title": N_("Heads and positions"),
        "desc": N_("How far each head looks, by depth, and what the position embeddings learned."),
    },
    "prediction": {
        "nav": N_("Prediction"), "title": N_("Prediction"),
        "desc": N_("The class probabilities the ViT gives the picture."),
    },
    "architecture": {
        "nav": N_("ViT architecture"), "title": N_("ViT architecture"), "family": "vision",
        "desc": N_("The ViT's blocks from its real modules: patch grid, sizes, parameters; click a block to open it."),
    },
}
VISION_PAGES = [(f"/vision/{view}", page["nav"], page["desc"]) for view, page in VISION_VIEWS.items()]

# The Stable Diffusion pages (issue 5): templates/diffusion_<view>.html, static/js/diffusion_<view>.js.
DIFFUSION_VIEWS = {
    "generate": {
        "nav": N_("Text to image"), "title": N_("Text to image, step by step"),
        "desc": N_("Every denoising step as it is computed: the latent, the predicted image and noise, where each word lands."),
    },
    "forward": {
        "nav": N_("Forward process"), "title": N_("The forward process"),
        "desc": N_("A clean picture, the noise of timestep t added to it, and the autoencoder's latent space."),
    },
    "architecture": {
        "nav": N_("SD architecture"), "title": N_("Stable Diffusion architecture"), "family": "diffusion",
        "desc": N_("Text encoder, UNet and VAE from their real modules; where the prompt's K and V enter the UNet."),
    },
}
DIFFUSION_PAGES = [(f"/diffusion/{view}", page["nav"], page["desc"]) for view, page in DIFFUSION_VIEWS.items()]


@router.get("/")
async def home(request: Request):
    _ = i18n.gettext_for(request_language(request))
    return render(request, "home.html", models=served_models(request), title="glassbox",
                  lessons=[lesson.translated(_) for lesson in LESSONS.values()])


def explorer_page(request: Request, views: dict, family: str, view: str, prefix: str, what: str):
    """One explorer page: templates/<prefix><view>.html, its script static/js/<prefix><view>.js."""
    if view not in views:
        raise HTTPException(404, f"No page /{family}/{view}; the {what} pages are: {', '.join(views)}.")
    _ = i18n.gettext_for(request_language(request))
    page = {key: _(value) if key in ("nav", "desc") else value for key, value in views[view].items()}
    return render(request, f"{prefix}{view}.html", view=f"{prefix}{view}", **page)  # render translates the title


@router.get("/text/{view}")
async def text_page(request: Request, view: str):
    return explorer_page(request, TEXT_VIEWS, "text", view, "", "text")


@router.get("/vision/{view}")
async def vision_page(request: Request, view: str):
    return explorer_page(request, VISION_VIEWS, "vision", view, "vision_", "ViT")


@router.get("/diffusion/{view}")
async def diffusion_page(request: Request, view: str):
    return explorer_page(request, DIFFUSION_VIEWS, "diffusion", view, "diffusion_", "diffusion")
