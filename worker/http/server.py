"""The aiohttp application: sessions API, health, readiness and metrics, the voice WebSocket;
and `serve()`, the plain HTTP/WebSocket server (`--serve`, or RunPod's `PORT`).

The application holds one worker context (`worker.http.context.CONTEXT`); its resources start and
stop in `cleanup_ctx` generators, so start-up and shutdown run in one place and in order
(aiohttp's graceful-shutdown pattern): on shutdown the live sessions end first (final events,
results handed to the writer), then the models close, then the writer drains and the engine is
disposed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.config import Config
from core.text import escaped
from db.engine import is_unreachable
from models.hub import Hub
from worker.http.api import add_routes, error, unavailable
from worker.http.context import CONTEXT, context
from worker.http.monitor import add_monitor_routes
from worker.http.pages import add_page_routes
from worker.http.stream import stream
from worker.service.context import WorkerContext
from worker.service.health import health
from worker.service.warmup import loading

log = logging.getLogger(__name__)
DRAIN_S = 5.0  # after the sessions' bound: the writer's last batch and the engine's disposal


async def _models_ctx(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT]
    async with loading(ctx.models, lambda: ctx.config.models):
        yield


async def _start_loading(app: web.Application) -> None:
    app[CONTEXT].models.started.set()


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    async with app[CONTEXT].database_open():
        yield


async def _end_sessions(app: web.Application) -> None:
    """on_shutdown runs before aiohttp waits for (then cancels) open handlers, so every live
    session can still say goodbye and hand its result to the writer."""
    ctx = app[CONTEXT]
    await ctx.live.shutdown(ctx.config.server.shutdown_timeout_seconds)
    ctx.rejected_tokens.flush()


async def _loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[CONTEXT].loop_lag.run(), name="loop lag")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def ping(request: web.Request) -> web.Response:
    """RunPod's load-balancer convention: 204 while warming, 200 when ready."""
    ctx = context(request)
    if ctx.models.error is not None:
        return web.Response(status=503)
    database = ctx.database
    ready = database is not None and database.writer.healthy and ctx.models.ready
    return web.Response(status=200 if ready else 204)


async def healthz(request: web.Request) -> web.Response:
    ctx = context(request)
    report = health(ctx)
    body = {
        "status": "ok" if report.writer_healthy else "degraded",
        "profile": report.profile,
        "writer": report.writer,
        "models": report.models,
        "sessions": report.live,
        "accepting": report.accepting,
        "loop_lag_ms": ctx.loop_lag.summary(),
    }
    return web.json_response(body, status=200 if report.writer_healthy else 503)


async def metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


class AccessLogger(AbstractAccessLogger):
    """Access log without query strings (they carry student tokens and the monitor's key), with
    control characters escaped (a CR/LF in a path must not forge a line)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.3fs',
            escaped(request.remote),
            escaped(request.method),
            escaped(request.path),
            response.status,
            time,
        )


# host[:port], a bracketed IPv6 address[:port]: anything else in Host is refused, so it can never
# reach a `ws_url` or a log line.
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(:[0-9]{1,5})?$")


@web.middleware
async def _checked_request(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a malformed Host and, when `server.allowed_origins` is set, a browser request
    from another origin (a cross-site page opening the voice socket or posting to the API)."""
    if not _HOST.match(request.host):
        return error(400, "invalid_request", "the Host header is not a host name")
    allowed = context(request).config.server.allowed_origins
    origin = request.headers.get("Origin")
    if allowed and origin is not None and origin not in allowed:
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if request.method != "GET" or upgrade:  # pages and reads stay open to links
            return error(403, "forbidden_origin", "this origin may not use this worker")
    return await handler(request)


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
            # (log arguments are escaped by core.text.EscapedArgs)
            return unavailable()
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal_error", "the worker failed on this request; see its log")


def build_app(
    config: Config, hub: Hub | None = None, env: Mapping[str, str] | None = None
) -> web.Application:
    """The worker's application; `hub`: models already loaded (tests share one across apps),
    which the application then uses but does not close; `env`: the environment that may name
    the public address (os.environ when None)."""
    app = web.Application(
        middlewares=[_typed_errors, _checked_request], client_max_size=config.server.max_body_bytes
    )
    app[CONTEXT] = ctx = WorkerContext.create(config, os.environ if env is None else env)
    app.cleanup_ctx.append(_loop_lag_ctx)
    if hub is None:  # before the database: cleanup runs in reverse, so the writer drains first
        app.cleanup_ctx.append(_models_ctx)
        app.on_startup.append(_start_loading)
    else:
        ctx.models.use(hub)
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


# --- the plain server ----------------------------------------------------------------------------


def runner_args(config: Config) -> dict[str, Any]:
    """The AppRunner's arguments, shared by `serve()` and the RunPod runtime. aiohttp's
    keep-alive timer also runs from a connection's opening until its first request's headers
    are in, so it is the header-read timeout too."""
    cfg = config.server
    return {
        "handle_signals": False,
        "shutdown_timeout": cfg.shutdown_timeout_seconds,
        "access_log_class": AccessLogger,
        "keepalive_timeout": cfg.keepalive_timeout_seconds,
    }


async def serve(config: Config, health_port: int | None = None) -> str | None:
    """Serve HTTP/WebSocket on `server.port` (and `/ping` with the rest on `health_port` when
    it differs) until SIGTERM/SIGINT; None after a clean stop, else why the worker failed."""
    app = build_app(config)
    ctx = app[CONTEXT]
    cfg = config.server  # not a live setting: the same in ctx.config once the database opens
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    failure: list[str] = []

    def warmup_failed(reason: str) -> None:
        failure.append(f"models failed to load: {reason}")
        stop.set()

    ctx.models.on_failure = warmup_failed
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, **runner_args(config))
    try:
        await runner.setup()
        ports = [cfg.port] + ([health_port] if health_port and health_port != cfg.port else [])
        for port in ports:
            await web.TCPSite(runner, cfg.host, port).start()
        log.info("serving on %s, port(s) %s", cfg.host, ", ".join(map(str, ports)))
        await stop.wait()
        log.info("shutting down: ending live sessions, draining the writer")
    finally:
        try:
            await asyncio.wait_for(runner.cleanup(), cfg.shutdown_timeout_seconds + DRAIN_S)
        except TimeoutError:
            log.error("shutdown not finished in time; the journal keeps what was accepted")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return failure[0] if failure else None
