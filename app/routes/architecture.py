"""The architecture map of each served model (app/architecture.py): GET /api/{family}/architecture."""

from __future__ import annotations

from fastapi import APIRouter

from app import architecture, schemas
from app.routes.errors import NOT_FOUND
from app.routes.text import RegistryDep

router = APIRouter(prefix="/api", tags=["architecture"], responses=NOT_FOUND)

MODEL_HELP = "A served model's name (GET /api/models); default: the first of the family."


# Plain `def`: FastAPI runs them in its thread pool, so walking a large UNet never blocks the loop.
@router.get("/text/architecture", response_model=schemas.ArchitectureOut)
def text_architecture(registry: RegistryDep, model: str | None = None):
    """GPT-2's blocks, from its module tree and config, with the capture points and the pages."""
    return architecture.text_graph(registry.text_model(model)).to_dict()


@router.get("/vision/architecture", response_model=schemas.ArchitectureOut)
def vision_architecture(registry: RegistryDep, model: str | None = None):
    """The ViT's blocks, from its module tree and config, with the capture points and the pages."""
    return architecture.vision_graph(registry.vision_model(model)).to_dict()


@router.get("/diffusion/architecture", response_model=schemas.ArchitectureOut)
def diffusion_architecture(registry: RegistryDep, model: str | None = None):
    """Stable Diffusion's text encoder, UNet and VAE, with the cross-attention layers the prompt enters."""
    return architecture.diffusion_graph(registry.diffusion_model(model)).to_dict()
