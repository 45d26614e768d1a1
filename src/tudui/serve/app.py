"""The FastAPI app of `tudui serve`: POST /predict, GET /health, GET /metadata, and the page at /."""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import fields
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.requests import ClientDisconnect

from tudui._version import __version__
from tudui.config_commands import ServeConfig
from tudui.serve.limits import Refusal
from tudui.serve.service import Service

SETTINGS = tuple(f.name for f in fields(ServeConfig) if f.name != "weights")
# The page runs its one inline script and talks to this server alone: no other host, ever.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "img-src blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'")
_BINARY = {"schema": {"type": "string", "format": "binary"}}
PREDICT_BODY = {"requestBody": {
    "required": True,
    "description": "One image as the raw body (Content-Type image/png, image/jpeg, ... or "
                   "application/octet-stream), or several as the file parts of multipart/form-data "
                   "(any field name). PNG, JPEG, GIF, BMP, TIFF, WebP, PPM.",
    "content": {"image/*": _BINARY, "application/octet-stream": _BINARY,
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}
_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"detail": {"type": "string"}}}}}}
PREDICT_RESPONSES = {
    200: {"description": 'One result per image, in request order: {"results": [{"name": "dog.png", '
                         '"predictions": [{"class": "dog", "probability": 0.93}, ...]}]}, top-k best first; '
                         'an image of several that cannot be read has {"name": ..., "error": "why"} instead'},
    400: {**_ERROR, "description": "no image of the request can be read (or each is over --max-pixels); "
                                   "a malformed body"},
    413: {**_ERROR, "description": "a body over --max-body, or more images than --max-images"},
    415: {**_ERROR, "description": "a Content-Type other than image/*, application/octet-stream or "
                                   "multipart/form-data"},
    408: {**_ERROR, "description": "the body did not arrive within --read-timeout seconds"},
    503: {**_ERROR, "description": "the queue is full (--max-queue), or uploads in progress hold "
                                   "--max-upload-memory bytes: try again after Retry-After seconds"}}


def create_app(weights: str | Path, **settings) -> FastAPI:
    """The app serving these weights; settings are `tudui serve`'s by name (topk, max_batch, ...).

    The model is loaded here, so a bad path fails now, not at the first request. Mount it in your
    own ASGI app as you like: its threads start at the first request when its startup is not run.
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise TypeError(f"create_app() got unknown settings {unknown}; it takes {', '.join(SETTINGS)}")
    given = {name: value for name, value in settings.items() if value is not None}
    return build_app(ServeConfig(weights=str(weights), **given))


def build_app(cfg: ServeConfig) -> FastAPI:
    """The app for settings made already (the CLI's)."""
    service = Service(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield
        # uvicorn has answered the requests in flight by now; what they queued is answered first.
        await asyncio.to_thread(service.stop)

    app = FastAPI(title="tudui serve", version=__version__, lifespan=lifespan,
                  description=f"Top-{service.topk} classes of images from a {service.meta.model} model "
                              f"({service.meta.num_classes} classes), with dynamic batching.")
    app.state.service = service
    app.add_exception_handler(Refusal, refused)
    add_routes(app, service)
    return app


async def refused(request: Request, refusal: Refusal) -> JSONResponse:
    # Closed after the answer: the rest of a refused body is never read.
    return JSONResponse({"detail": refusal.detail}, status_code=refusal.status,
                        headers={**refusal.headers, "Connection": "close"})


def add_routes(app: FastAPI, service: Service) -> None:
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    async def show_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/health", summary="Whether the server is up, and how busy")
    async def health() -> dict:
        return service.health()

    @app.get("/metadata", summary="The model's classes and input, and the settings in force")
    async def metadata() -> dict:
        return service.metadata()

    @app.post("/predict", summary="Top-k classes of one image or several", openapi_extra=PREDICT_BODY,
              responses=PREDICT_RESPONSES)
    async def predict(request: Request) -> Response:
        try:
            return JSONResponse(await service.predict(request.headers, request.stream()))
        except ClientDisconnect:   # hung up while sending: nobody to answer, nothing to log
            return Response(status_code=400)
