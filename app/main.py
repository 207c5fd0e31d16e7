"""create_app(): load the models once (lifespan), mount static files, include the routers."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path

import plotly
import redis.asyncio as aioredis
import swagger_ui_bundle
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import schemas
from app.middleware import Guard, error_body
from app.registry import Registry, UnknownModel, load_registry
from app.routes import vision
from app.capture import diffusion as diffusion_capture
from app.routes import diffusion, export, pages, text
from app.routes import rooms
from app.routes import architecture
from app.routes import lessons
from app.rooms_redis import RedisRooms
from app.runs import Busy, Runner, StreamRunner
from app.shared import RedisTraces
from app.settings import ROOT, Settings, get_settings

# Plotly.js from the installed plotly package: no CDN, so a classroom works offline.
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
SWAGGER_DIR = Path(swagger_ui_bundle.swagger_ui_path)  # Swagger UI 5 (reads OpenAPI 3.1), offline too


@asynccontextmanager
async def share_through_redis(app: FastAPI, settings: Settings):
    """Rooms and finished traces in Redis, so that every process serves the same ones."""
    client = aioredis.from_url(settings.redis_url, encoding_errors="surrogatepass")  # a query may hold any str
    rooms = RedisRooms(client, settings.max_rooms, settings.max_followers_per_room, settings.room_idle_s)
    await rooms.start()
    app.state.rooms = rooms
    app.state.runner.shared = RedisTraces(client, "traces", settings.trace_cache_bytes)
    app.state.streams.shared = RedisTraces(client, "diffusion", settings.diffusion_cache_bytes)
    try:
        yield
    finally:
        await rooms.aclose()
        await client.aclose()


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    """registry: models already loaded (`glassbox serve` loads them first, to fail in one line)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.registry = registry or load_registry(settings)
        if settings.redis_url:
            async with share_through_redis(app, settings):
                yield
        else:
            yield

    app = FastAPI(
        title="glassbox",
        summary="Open up small neural networks while they run.",
        description="Arrays in responses are `{shape, dtype: \"float16\", data}`: base64 of little-endian "
        "float16 values in C order, 2 bytes per value before base64. The all-heads grid is average-pooled to "
        f"at most {settings.grid_max_tokens}×{settings.grid_max_tokens} per head.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        responses={422: {"model": schemas.ErrorOut}, 503: {"model": schemas.ErrorOut}},
    )
    app.state.settings = settings
    app.state.runner = Runner(settings.max_concurrent_runs, settings.max_queued_runs, settings.trace_cache_bytes)
    app.state.streams = StreamRunner(settings.max_concurrent_diffusion, settings.max_queued_diffusion, settings.diffusion_cache_bytes)

    # The upload reads its body under its own, larger bound (upload_max_bytes); every other body this one.
    app.add_middleware(Guard, max_body_bytes=settings.max_body_bytes, self_bounded=frozenset({"/api/vision/upload"}))

    # Starlette's class, which FastAPI's subclasses: the router's own 404 and 405 get the same shape.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"] if p != "body") or "body"
            parts.append(f"{where}: {e['msg']}")
        return JSONResponse(error_body(422, "; ".join(parts), "invalid request"), 422)

    @app.exception_handler(UnknownModel)
    async def unknown_model(request: Request, exc: UnknownModel):
        return JSONResponse(error_body(404, str(exc)), 404)

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy):
        return JSONResponse(
            error_body(503, "The server is busy with other runs; try again in a moment.", "busy"),
            503,
            headers={"Retry-After": str(settings.retry_after_s)},
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request):
        runner, streams = request.app.state.runner, request.app.state.streams
        return {
            "ok": True,
            "pid": os.getpid(),  # which process answered, with --workers N
            "text_runs": {"pending": runner.pending, "computed": runner.computed, "cached": len(runner.cache)},
            "diffusion_runs": {"pending": streams.pending, "computed": streams.computed, "cached": len(streams.cache)},
        }

    @app.get("/static/vendor/plotly.min.js", include_in_schema=False)
    async def plotly_js():
        return FileResponse(PLOTLY_JS, media_type="text/javascript")

    @app.get("/api/models", response_model=schemas.ModelsOut, tags=["models"])
    async def models(request: Request):
        """The models this server was started with."""
        reg = request.app.state.registry
        return schemas.ModelsOut(
            vision=[
                schemas.VisionModelOut(
                    name=vm.name,
                    source=vm.source,
                    params=vm.n_params,
                    n_layers=vm.config.num_hidden_layers,
                    n_heads=vm.config.num_attention_heads,
                    d_head=vm.config.hidden_size // vm.config.num_attention_heads,
                    image_size=list(vision.capture.pair(vm.config.image_size)),
                    patch_size=list(vision.capture.pair(vm.config.patch_size)),
                    n_labels=vm.config.num_labels,
                    card_url=f"/models/{vm.name}/card" if vm.card_path else None,
                )
                for vm in reg.vision.values()
            ],
            text=[
                schemas.TextModelOut(
                    name=tm.name,
                    source=tm.source,
                    params=tm.n_params,
                    n_layers=tm.config.n_layer,
                    n_heads=tm.config.n_head,
                    d_head=tm.config.n_embd // tm.config.n_head,
                    n_ctx=tm.config.n_positions,
                    card_url=f"/models/{tm.name}/card" if tm.card_path else None,
                )
                for tm in reg.text.values()
            ],
            diffusion=[
                schemas.DiffusionModelOut(
                    name=dm.name,
                    source=dm.source,
                    params=dm.n_params,
                    image_size=dm.image_size,
                    latent_size=dm.pipe.unet.config.sample_size,
                    max_tokens=dm.pipe.tokenizer.model_max_length,
                    schedulers=list(diffusion_capture.SCHEDULERS),
                    cross_attention_layers=diffusion_capture.attention_layers(dm.pipe.unet),
                    self_attention_layers=diffusion_capture.attention_layers(dm.pipe.unet, cross=False),
                    card_url=f"/models/{dm.name}/card" if dm.card_path else None,
                )
                for dm in reg.diffusion.values()
            ],
        )

    @app.get("/models/{name}/card", response_class=PlainTextResponse, include_in_schema=False)
    async def model_card(name: str, request: Request):
        reg = request.app.state.registry
        tm = reg.text.get(name) or reg.diffusion.get(name)
        tm = tm or request.app.state.registry.vision.get(name)
        if tm is None or tm.card_path is None:
            raise HTTPException(404, f"No model card for {name!r}.")
        return PlainTextResponse(tm.card_path.read_text(encoding="utf-8"), media_type="text/plain; charset=utf-8")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="glassbox API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )

    app.mount("/static/swagger", StaticFiles(directory=SWAGGER_DIR), name="swagger")
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    app.include_router(text.router)
    app.include_router(vision.router)
    app.include_router(diffusion.router)
    app.include_router(export.router)
    app.include_router(architecture.router)
    app.include_router(pages.router)
    app.include_router(rooms.router)
    app.include_router(lessons.router)
    return app
