"""The architecture map of each served model (app/architecture.py): GET /api/{family}/architecture."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app import architecture, i18n, schemas
from app.routes.pages import request_language
from app.routes.errors import NOT_FOUND
from app.routes.text import RegistryDep

router = APIRouter(prefix="/api", tags=["architecture"], responses=NOT_FOUND)

MODEL_HELP = "A served model's name (GET /api/models); default: the first of the family."


def words(request: Request):
    """The map's words in the request's language (`lang` in the query, else Accept-Language)."""
    return i18n.gettext_for(request_language(request))


# Plain `def`: FastAPI runs them in its thread pool, so walking a large UNet never blocks the loop.
@router.get("/text/architecture", response_model=schemas.ArchitectureOut)
def text_architecture(request: Request, registry: RegistryDep, model: str | None = None, lang: str | None = None):
    """GPT-2's blocks, from its module tree and config, with the capture points and the pages."""
    return architecture.text_graph(registry.text_model(model)).to_dict(words(request))


@router.get("/vision/architecture", response_model=schemas.ArchitectureOut)
def vision_architecture(request: Request, registry: RegistryDep, model: str | None = None, lang: str | None = None):
    """The ViT's blocks, from its module tree and config, with the capture points and the pages."""
    return architecture.vision_graph(registry.vision_model(model)).to_dict(words(request))


@router.get("/diffusion/architecture", response_model=schemas.ArchitectureOut)
def diffusion_architecture(request: Request, registry: RegistryDep, model: str | None = None, lang: str | None = None):
    """Stable Diffusion's text encoder, UNet and VAE, with the cross-attention layers the prompt enters."""
    return architecture.diffusion_graph(registry.diffusion_model(model)).to_dict(words(request))
