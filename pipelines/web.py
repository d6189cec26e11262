"""Shared pieces of matteflow's HTTP apps (`matteflow serve`, and others on the same stack):
the FastAPI app factory, bearer-token auth that is required off localhost, and a request
size limit."""

from __future__ import annotations

import contextlib
import hmac
import os
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

__all__ = ["LOCALHOST", "TOKEN_ENV", "AuthError", "api_token", "create_app", "error_body"]

TOKEN_ENV = "MATTEFLOW_API_TOKEN"
LOCALHOST = ("127.0.0.1", "::1", "localhost")
# Paths anyone may read: liveness, readiness and the API description.
_PUBLIC = ("/healthz", "/readyz", "/docs", "/openapi.json", "/docs/oauth2-redirect")


class AuthError(RuntimeError):
    """The server would listen off localhost without a token to require."""


def api_token(host: str, require: bool = False) -> str | None:
    """The token requests must bear: $MATTEFLOW_API_TOKEN; None (no auth) only when it is
    unset, the server binds to localhost and `require` is false. Raises AuthError when a token
    is needed and unset."""
    token = os.environ.get(TOKEN_ENV) or None
    if token is None and (require or host not in LOCALHOST):
        raise AuthError(
            f"binding {host} needs a token: set {TOKEN_ENV}; clients then send"
            " 'Authorization: Bearer <token>'"
        )
    return token


def error_body(stage: str, code: str, message: str) -> dict[str, dict[str, str]]:
    """An error as JSON, with the stage and code a metrics row would have."""
    return {"error": {"stage": stage, "code": code, "message": message}}


def create_app(
    title: str,
    description: str,
    *,
    token: str | None,
    max_request_bytes: int,
    on_shutdown: Callable[[], None] | None = None,
) -> FastAPI:
    """A FastAPI app whose non-public paths need `Authorization: Bearer <token>` (when token
    is not None) and whose requests may carry at most max_request_bytes (413 otherwise);
    `on_shutdown` runs when the server stops."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(title=title, description=description, lifespan=lifespan)

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if token is not None and request.url.path not in _PUBLIC:
            sent = request.headers.get("authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                body = error_body("request", "unauthorized", "send 'Authorization: Bearer <token>'")
                return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_request_bytes):
            message = f"request body over the {max_request_bytes}-byte limit"
            return JSONResponse(error_body("request", "too_large", message), status_code=413)
        return await call_next(request)

    return app
