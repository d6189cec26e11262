"""`matteflow serve`: the HTTP service. One model per process, loaded at start, for synchronous
cutouts (`POST /v1/cutouts`), and batch jobs run one at a time in the background
(`POST /v1/jobs`, `GET /v1/jobs/{id}`) with signed callbacks. OpenAPI page at /docs."""

from __future__ import annotations

import logging
import os
import threading
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from matteflow.pipelines.api import Remover
from matteflow.pipelines.jobs import JobQueue, JobRequest
from matteflow.pipelines.web import create_app, error_body
from matteflow.pipelines.webhooks import SECRET_ENV, check_callback
from matteflow.transforms.failures import MatteflowError
from matteflow.transforms.storage import content_type

__all__ = ["JobBody", "ServerSettings", "create_server"]

_LOG = logging.getLogger(__name__)
# HTTP status of a failed cutout by the failure's stage: the image is at fault (422), it is too
# big (413), or we are (500).
_STATUS = {"fetch": 413, "decode": 422, "manifest": 400}
_EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg"}
# The cutout request's body as the OpenAPI page shows it: the image file's bytes.
_IMAGE_BODY = {
    kind: {"schema": {"type": "string", "format": "binary"}}
    for kind in ("application/octet-stream", "image/*")
}


class ServerSettings(BaseModel):
    """How the server was started."""

    model: str | None = None
    profile: str | None = None
    token: str | None = None
    max_request_bytes: int = 64 << 20
    allow_private_callbacks: bool = False


class JobBody(BaseModel):
    """A batch job: the same manifest and output URIs as `matteflow run`, an optional profile
    file on the server, and a URL to POST the finished job to."""

    manifest: str
    output: str
    profile: str | None = None
    callback_url: str | None = None


class _Model:
    """The process's one Remover, loaded on a thread so the server answers /healthz at once."""

    def __init__(self, settings: ServerSettings) -> None:
        self.remover: Remover | None = None
        self.error: str | None = None
        self._settings = settings
        threading.Thread(target=self._load, name="matteflow-model", daemon=True).start()

    def _load(self) -> None:
        try:
            self.remover = Remover(self._settings.model, profile=self._settings.profile)
        except Exception as err:  # reported by /readyz and every cutout request
            self.error = f"{type(err).__name__}: {err}"
            _LOG.error("model did not load: %s", self.error)


def _error(status: int, stage: str, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(stage, code, message), status_code=status)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past `limit` bytes even without a Content-Length."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise HTTPException(413, f"request body over the {limit}-byte limit")
    return bytes(data)


def create_server(settings: ServerSettings) -> FastAPI:
    """The service's app: the model starts loading and the job worker starts."""
    secret = os.environ.get(SECRET_ENV) or None
    jobs = JobQueue(secret, model=settings.model, profile=settings.profile)
    app: FastAPI = create_app(
        "matteflow",
        __doc__ or "",
        token=settings.token,
        max_request_bytes=settings.max_request_bytes,
        on_shutdown=jobs.close,
    )
    model = _Model(settings)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        code = {401: "unauthorized", 404: "not_found", 413: "too_large"}.get(err.status_code)
        return _error(err.status_code, "request", code or "bad_request", str(err.detail))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Readiness: the model is loaded and the job worker runs (503 until then)."""
        if model.remover is not None and jobs.alive:
            return JSONResponse({"status": "ready", "model": model.remover.model})
        state = "error" if model.error else "loading"
        return JSONResponse({"status": state, "error": model.error}, status_code=503)

    @app.post(
        "/v1/cutouts",
        responses={200: {"content": {"image/png": {}, "image/webp": {}, "image/jpeg": {}}}},
        openapi_extra={"requestBody": {"required": True, "content": _IMAGE_BODY}},
    )
    async def cutouts(
        request: Request,
        format: Annotated[
            Literal["png", "webp", "jpeg"],
            Query(description="png or webp cutout; png or jpeg with bg_color"),
        ] = "png",
        model_name: Annotated[
            str | None, Query(alias="model", description="must be the loaded model")
        ] = None,
        crop: Annotated[bool, Query(description="crop to the subject")] = False,
        bg_color: Annotated[
            str | None, Query(description="rrggbb: the subject over this colour, opaque")
        ] = None,
        size: Annotated[
            str | None, Query(description="WIDTHxHEIGHT: the subject placed on this canvas")
        ] = None,
    ) -> Response:
        """The request body (image bytes) -> its cutout (RGBA PNG by default); errors as JSON
        with the stage and code a metrics row would have."""
        remover = model.remover
        if remover is None:
            return _error(503, "request", "not_ready", model.error or "the model is loading")
        if model_name and model_name != remover.model:
            message = f"this server runs {remover.model}; one model per process"
            return _error(400, "request", "model_not_loaded", message)
        row: dict[str, str] = {}
        if crop and size:
            return _error(400, "request", "bad_setting", "crop and size exclude each other")
        if crop:
            row["framing"] = "crop"
        if size:
            row.update(framing="canvas", canvas=size)
        kind, composite_format = "cutout", None
        if bg_color:
            kind, row["background"] = "composite", "#" + bg_color.lstrip("#")
            composite_format = "jpeg" if format == "jpeg" else "png"
            if format == "webp":
                return _error(400, "request", "bad_setting", "bg_color: use format png or jpeg")
        elif format == "jpeg":
            return _error(400, "request", "bad_setting", "jpeg has no alpha: add bg_color")
        else:
            row["cutout_format"] = format
        data = await _body(request, settings.max_request_bytes)
        try:
            image = await run_in_threadpool(
                remover.render, data, kind, composite_format=composite_format, **row
            )
        except ValueError as err:  # a setting out of range (canvas, colour)
            return _error(400, "request", "bad_setting", str(err))
        except MatteflowError as err:
            return _error(_STATUS.get(err.stage, 500), err.stage, err.code, str(err))
        media = content_type(f"cutout.{_EXTENSIONS[composite_format or format]}")
        return Response(image, media_type=media)

    @app.post("/v1/jobs", status_code=202)
    def submit(body: JobBody) -> JSONResponse:
        """Queue a batch job (run like `matteflow run`); 202 with its id."""
        if body.callback_url:
            if secret is None:
                message = f"callbacks are signed: start the server with {SECRET_ENV} set"
                return _error(400, "request", "no_webhook_secret", message)
            try:
                check_callback(body.callback_url, settings.allow_private_callbacks)
            except ValueError as err:
                return _error(400, "request", "bad_callback_url", str(err))
        job = jobs.submit(JobRequest(**body.model_dump()))
        headers = {"Location": f"/v1/jobs/{job.id}"}
        return JSONResponse({"id": job.id, "status": job.status}, 202, headers=headers)

    @app.get("/v1/jobs/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        """A job: status queued | running | finished | failed, counts, and its run.json."""
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id} on this server")
        shown: dict[str, Any] = job.to_json()
        return shown

    return app
