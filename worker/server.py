"""The aiohttp application: sessions API, health, readiness and metrics, the voice WebSocket.

Resources live in `cleanup_ctx` generators with typed AppKeys, so start-up and shutdown run in
one place and in order (aiohttp's graceful-shutdown pattern): on shutdown the live sessions end
first (final events, results handed to the writer), then the models close, then the writer
drains and the engine is disposed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.config import Config
from db.engine import is_unreachable
from models.hub import Hub
from worker.api import CONFIG, DATABASE, LIVE, add_routes, error, unavailable
from worker.live import LiveSessions
from worker.metrics import LoopLag
from worker.monitor import add_monitor_routes
from worker.pages import add_page_routes
from worker.resources import open_database
from worker.stream import stream
from worker.warmup import MODELS, Models, models_ctx, start_loading

LOOP_LAG = web.AppKey("loop_lag", LoopLag)

log = logging.getLogger(__name__)


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_database(app[CONFIG]) as database:
        app[DATABASE] = database
        yield


async def _end_sessions(app: web.Application) -> None:
    """on_shutdown runs before aiohttp waits for (then cancels) open handlers, so every live
    session can still say goodbye and hand its result to the writer."""
    await app[LIVE].shutdown(app[CONFIG].server.shutdown_timeout_seconds)


async def _loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[LOOP_LAG].run(), name="loop lag")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def ping(request: web.Request) -> web.Response:
    """RunPod's load-balancer convention: 204 while warming, 200 when ready."""
    app = request.app
    if app[MODELS].error is not None:
        return web.Response(status=503)
    ready = DATABASE in app and app[DATABASE].writer.healthy and app[MODELS].ready
    return web.Response(status=200 if ready else 204)


async def healthz(request: web.Request) -> web.Response:
    database = request.app.get(DATABASE)
    writer = database.writer.stats() if database else None
    healthy = bool(writer and writer["healthy"])
    body = {
        "status": "ok" if healthy else "degraded",
        "profile": request.app[CONFIG].profile,
        "writer": writer,
        "models": _models_health(request.app[MODELS]),
        "sessions": len(request.app[LIVE]),
        "accepting": request.app[LIVE].accepting,
        "loop_lag_ms": request.app[LOOP_LAG].summary(),
    }
    return web.json_response(body, status=200 if healthy else 503)


def _models_health(models: Models) -> dict[str, object]:
    if models.hub is not None:
        return models.hub.describe()
    return {"ready": False, "error": models.error}


async def metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


class AccessLogger(AbstractAccessLogger):
    """Access log without query strings: they carry student tokens and the monitor's key."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.3fs',
            request.remote,
            request.method,
            request.path,
            response.status,
            time,
        )


@web.middleware
async def _typed_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unexpected failure still answers in the API's typed error shape."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        if is_unreachable(exc):  # an outage, not a bug: no traceback, and a retry-later answer
            log.warning("%s %s: database unreachable (%s)", request.method, request.path, exc)
            return unavailable()
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal_error", "the worker failed on this request; see its log")


def build_app(config: Config, hub: Hub | None = None) -> web.Application:
    """The worker's application; `hub`: models already loaded (tests share one across apps),
    which the application then uses but does not close."""
    app = web.Application(middlewares=[_typed_errors])
    app[CONFIG] = config
    app[LIVE] = LiveSessions(config.server.max_sessions)
    app[LOOP_LAG] = LoopLag()
    app.cleanup_ctx.append(_loop_lag_ctx)
    # Loop lag is judged from readiness on: loading and warming the models stalls it at start.
    app[MODELS] = Models(on_ready=app[LOOP_LAG].reset)
    if hub is None:  # before the database: cleanup runs in reverse, so the writer drains first
        app.cleanup_ctx.append(models_ctx(config))
        app.on_startup.append(start_loading)
    else:
        app[MODELS].use(hub)
    app.cleanup_ctx.append(_database_ctx)
    app.on_shutdown.append(_end_sessions)
    add_routes(app)
    add_page_routes(app)
    add_monitor_routes(app)
    app.router.add_get("/v1/sessions/{code}/stream", stream)
    app.router.add_get("/ping", ping)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
