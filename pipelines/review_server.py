"""`matteflow review OUT`: the review workbench, a local web app over a finished run.

The page (`review_static/`, shipped as package data, no build step) talks to a JSON API:
`GET /api/items`, `POST /api/decisions`, `GET /api/summary`, `GET /api/models`; images come
from `GET /img/{n}/{cutout|mask|source|edge}`, where n indexes the items, so only the outputs
the run's metrics name under OUT and the sources they record are ever read (sources through
the run's own source policy and byte limit).
"""

from __future__ import annotations

import functools
import getpass
import importlib.resources
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException, Query
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import HTMLResponse, Response
from PIL import Image
from pydantic import BaseModel

from matteflow.models.registry import specs
from matteflow.pipelines.review import (
    DECISIONS,
    UNDO,
    Decision,
    DecisionLog,
    Item,
    ReviewError,
    latest,
    load_items,
    run_model,
    run_summary,
    summary,
    write_decisions,
)
from matteflow.transforms.decode import DecodeSettings, decode
from matteflow.transforms.failures import MatteflowError
from matteflow.transforms.reader import Reader
from matteflow.transforms.settings import background_colour
from matteflow.transforms.sources import SourcePolicy
from matteflow.transforms.storage import content_type, read_bytes
from matteflow.transforms.types import ImageTask

__all__ = ["DecisionIn", "create_app", "serve"]

_STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
_KINDS = ("cutout", "mask", "source", "edge")
_DETAIL_PX = 1600  # long side of images sent to the page unless a size is asked for
_EDGE_WINDOW = 192  # px of the cutout shown by the edge zoom, around its densest edge band
_BROWSER_TYPES = ("image/png", "image/jpeg", "image/webp", "image/avif")  # shown as they are
_DEFAULT_BRAND = "#1f5fbf"
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class DecisionIn(BaseModel):
    """The body of POST /api/decisions; decision is accept | reject | retry | undo."""

    id: str
    decision: str
    score: int | None = None
    seconds: float = 0.0
    model: str | None = None


def _under(uri: str, output: str) -> bool:
    """Whether uri names an object below the output prefix (no '..' escapes, no links out)."""
    if "://" not in output:
        if "://" in uri:
            return False
        root = os.path.realpath(output)
        return os.path.realpath(uri).startswith(root + os.sep)
    segments = uri.split("/")
    return uri.startswith(output.rstrip("/") + "/") and "." not in segments and ".." not in segments


def _edge_crop(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the square window of _EDGE_WINDOW px (the image's short
    side, when smaller), scanned in half-window steps, holding the most edge-band pixels
    (0.1 < alpha < 0.9, the ambiguous band as refine.py counts it) of an H x W uint8 alpha
    (the cutout's own: a framed cutout need not match the mask)."""
    h, w = alpha.shape
    band = ((alpha > 25) & (alpha < 230)).astype(np.int64)
    win = min(_EDGE_WINDOW, h, w)
    step = max(1, win // 2)
    best, at = -1, (0, 0)
    for y in range(0, max(1, h - win + 1), step):
        for x in range(0, max(1, w - win + 1), step):
            count = int(band[y : y + win, x : x + win].sum())
            if count > best:
                best, at = count, (x, y)
    x, y = at
    return x, y, x + win, y + win


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


class _Workbench:
    """A run's items, its reading rules and the decisions made on it."""

    def __init__(self, output: str, all_rows: bool, reviewer: str) -> None:
        self.output = output.rstrip("/")
        self.reviewer = reviewer
        self.items = load_items(self.output, all_rows)
        self.log = DecisionLog(self.output)
        self.by_id = {item.id: (n, item) for n, item in enumerate(self.items)}
        self.model = run_model(self.output)
        config: dict[str, Any] = run_summary(self.output).get("config") or {}
        sources = config.get("sources") or {}
        policy = SourcePolicy(
            tuple(sources.get("allow", SourcePolicy.allow)),
            bool(sources.get("allow_private", False)),
        )
        self.decode_settings = DecodeSettings(**(config.get("decode") or {}))
        # Sources are read as the run read them: its policy and limits.
        s = self.decode_settings
        self.reader = Reader(policy, s.max_bytes, s.max_pixels)
        background = str((config.get("outputs") or {}).get("background") or "")
        self.brand = background if background_colour(background) else _DEFAULT_BRAND
        # Derived images only (decoded sources, thumbnails, edge crops: small): outputs passed
        # through as they are would hold whole cutouts in memory.
        self._derived = functools.lru_cache(maxsize=256)(self._derive)

    def item_json(self, n: int, item: Item, standing: Decision | None) -> dict[str, object]:
        def url(kind: str, present: bool) -> str | None:
            return f"/img/{n}/{kind}" if present else None

        return {
            "id": item.id,
            "output_key": item.output_key,
            "uncertainty": item.uncertainty,
            "status": item.status,
            "category": item.category,
            "cutout": url("cutout", bool(item.cutout_uri)),
            "mask": url("mask", bool(item.mask_uri)),
            "source": url("source", bool(item.source_uri)),
            "edge": url("edge", bool(item.cutout_uri)),
            "decision": standing.decision if standing else None,
            "score": standing.score if standing else None,
            "model": standing.model_suggested if standing else None,
        }

    def decide(self, body: DecisionIn) -> dict[str, object]:
        if body.id not in self.by_id:
            raise ReviewError(f"unknown id {body.id!r}")
        if body.decision not in (*DECISIONS, UNDO):
            raise ReviewError(f"decision: expected one of {', '.join(DECISIONS)} or undo")
        model = body.model or None
        if model is not None and (body.decision != "retry" or model not in specs()):
            raise ReviewError(f"model {model!r}: a registered model, with decision retry only")
        n, item = self.by_id[body.id]
        decision = Decision(
            item.id, item.output_key, body.decision, body.score, model, self.reviewer, body.seconds
        )
        write_decisions(self.output, [decision])
        return self.item_json(n, item, latest(self.log.decisions()).get(item.id))

    def _read_checked(self, item: Item, kind: str) -> bytes:
        """The bytes of an item's cutout/mask (under OUT) or source (its run's policy)."""
        if kind == "source":
            source: bytes = self.reader.read(item.source_uri)
            return source
        uri = item.cutout_uri if kind == "cutout" else item.mask_uri
        if not _under(uri, self.output):
            raise ReviewError(f"{uri}: not under {self.output}")
        output: bytes = read_bytes(uri)
        return output

    def render(self, n: int, kind: str, size: int) -> tuple[bytes, str]:
        """An image of item n for the page (PNG or JPEG bytes, and its type); size 0: a cutout
        or mask as it is when the browser can show it, anything else at most _DETAIL_PX on
        the long side."""
        item = self.items[n]
        if kind in ("cutout", "mask") and not size:
            uri = item.cutout_uri if kind == "cutout" else item.mask_uri
            if content_type(uri) in _BROWSER_TYPES:
                return self._read_checked(item, kind), content_type(uri)
        derived: tuple[bytes, str] = self._derived(n, kind, size)
        return derived

    def _derive(self, n: int, kind: str, size: int) -> tuple[bytes, str]:
        item = self.items[n]
        if kind == "source":
            data = self._read_checked(item, "source")
            task = ImageTask(item.id, item.source_uri, item.output_key)
            rgb = decode(task, data, self.decode_settings).rgb
            if rgb.dtype != np.uint8:
                rgb = (rgb.astype(np.float32) / 257.0).round().astype(np.uint8)
            img = Image.fromarray(rgb)
            img.thumbnail((size or _DETAIL_PX,) * 2, Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            return buf.getvalue(), "image/jpeg"
        if kind == "edge":
            cutout = Image.open(io.BytesIO(self._read_checked(item, "cutout"))).convert("RGBA")
            box = _edge_crop(np.asarray(cutout.getchannel("A")))
            return _png(cutout.crop(box)), "image/png"
        img = Image.open(io.BytesIO(self._read_checked(item, kind)))
        img = img.convert("RGBA" if kind == "cutout" else "L")
        img.thumbnail((size or _DETAIL_PX,) * 2, Image.Resampling.LANCZOS)
        return _png(img), "image/png"


def _static(name: str) -> bytes:
    return (
        importlib.resources.files("matteflow.pipelines")
        .joinpath("review_static", name)
        .read_bytes()
    )


def create_app(
    output: str,
    *,
    all_rows: bool = False,
    reviewer: str | None = None,
    hosts: Sequence[str] = _LOOPBACK,
) -> FastAPI:
    """The workbench app over the finished run at output; raises ReviewError when output
    holds none. reviewer defaults to the login name; requests naming another Host than
    `hosts` ("*": any) are refused, so a web page cannot reach a loopback server through a
    DNS name it controls."""
    bench = _Workbench(output, all_rows, reviewer or getpass.getuser())
    app = FastAPI(title="matteflow review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(_static("index.html"))

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404, f"no static file {name}")
        return Response(_static(name), media_type=_STATIC[name])

    @app.get("/api/items")
    def items() -> list[dict[str, object]]:
        standing = latest(bench.log.decisions())
        return [bench.item_json(n, i, standing.get(i.id)) for n, i in enumerate(bench.items)]

    @app.post("/api/decisions")
    def decisions(body: DecisionIn) -> dict[str, object]:
        try:
            return bench.decide(body)
        except ReviewError as err:
            raise HTTPException(400, str(err)) from None

    @app.get("/api/summary")
    def summary_route() -> dict[str, object]:
        figures = summary(bench.items, bench.log.decisions())
        return {**figures, "output": bench.output, "reviewer": bench.reviewer}

    @app.get("/api/models")
    def models() -> dict[str, object]:
        listed = [
            {
                "name": s.name,
                "task": s.task,
                "input_size": s.input_size,
                "licence_class": s.licence_class,
            }
            for s in specs().values()
        ]
        return {"run_model": bench.model, "brand": bench.brand, "models": listed}

    @app.get("/img/{n}/{kind}")
    def image(n: int, kind: str, size: int = Query(0, ge=0, le=4096)) -> Response:
        if not 0 <= n < len(bench.items) or kind not in _KINDS:
            raise HTTPException(404, "no such image")
        try:
            data, media_type = bench.render(n, kind, size)
        except (MatteflowError, ReviewError, OSError, ValueError) as err:
            raise HTTPException(404, f"cannot show {kind} of {bench.items[n].id}: {err}") from None
        return Response(data, media_type=media_type, headers={"Cache-Control": "no-cache"})

    return app


def serve(output: str, host: str, port: int, *, all_rows: bool, reviewer: str | None) -> None:
    """Serve the workbench until interrupted (uvicorn, one process)."""
    hosts = _LOOPBACK if host in _LOOPBACK else ("*",)
    app = create_app(output, all_rows=all_rows, reviewer=reviewer, hosts=hosts)
    print(f"matteflow review: http://{host}:{port}/ (Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
