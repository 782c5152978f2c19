"""The examiner's live monitor: `GET /monitor` (a static page) and its feed of live sessions,
`GET /v1/monitor/stream`, as server-sent events.

The feed of this process's sessions is pushed, never polled: one `sessions` event with every
live session's summary, then an `update` event each time a session changes
(`VivaSession.summary()`, or `{"session_code", "state": "gone"}` when it leaves the process),
and a comment every
`HEARTBEAT_S` so proxies keep the connection and a vanished client is noticed. The API key
comes in the Authorization header or, for EventSource (which cannot set headers), as `?key=`.
With several workers on one PostgreSQL, the sessions the others serve are polled from the
database every `ELSEWHERE_POLL_S` and sent as updates too, with `worker` (the serving worker's
node id) and `state: "elsewhere"`; this worker's own summaries carry its `worker` id.

A stream ends when its client goes away (the next write fails: at most one heartbeat later),
when a write stalls past `WRITE_TIMEOUT_S`, or when the app shuts down: on_shutdown, after the
live sessions have ended and said `gone`, wakes every open stream with a last `shutdown` event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from worker.http.api import error, require_api_key
from worker.http.context import context
from worker.http.pages import CONTENT_TYPES, NO_CACHE, STATIC_DIR
from worker.service.context import WorkerContext
from worker.service.records import sessions_elsewhere

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
ELSEWHERE_POLL_S = 2.0
WRITE_TIMEOUT_S = 10.0  # a monitor that cannot take one event in this long is dropped
RETRY_MS = 3000  # how long EventSource waits before it reconnects
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # proxies (nginx and kin) must not buffer the stream
}
# Put into a stream's queue by shutdown; compared by identity, never sent as an update.
_SHUTDOWN: dict[str, Any] = {"state": "shutdown"}


class Streams:
    """The open monitor streams of one app, so that shutdown can end them."""

    def __init__(self) -> None:
        self.closing = False
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()

    def __len__(self) -> int:
        return len(self._queues)

    def add(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._queues.add(queue)

    def discard(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._queues.discard(queue)

    def close_all(self) -> None:
        self.closing = True
        for queue in self._queues:
            if queue.full():  # the same rule as LiveSessions.publish: drop the oldest
                queue.get_nowait()
            queue.put_nowait(_SHUTDOWN)


STREAMS = web.AppKey("monitor_streams", Streams)


def sse_event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def page(_request: web.Request) -> web.FileResponse:
    path = STATIC_DIR / "monitor.html"
    return web.FileResponse(path, headers={**NO_CACHE, "Content-Type": CONTENT_TYPES[".html"]})


async def stream(request: web.Request) -> web.StreamResponse:
    if (denied := require_api_key(request, query=True)) is not None:
        return denied
    streams, live = request.app[STREAMS], context(request).live
    if streams.closing:
        return error(503, "shutting_down", "this worker is shutting down")
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    ctx = context(request)
    async with live.watch() as updates:
        streams.add(updates)
        lease = ctx.database.lease if ctx.database is not None else None
        others = asyncio.create_task(_elsewhere(ctx, updates)) if lease is not None else None
        try:
            await _feed(response, updates, live.summaries())
        except (ConnectionError, TimeoutError) as exc:  # the client left, or stopped reading
            log.debug("monitor stream from %s ended: %r", request.remote, exc)
        finally:
            streams.discard(updates)
            if others is not None:
                others.cancel()
    return response


async def _elsewhere(ctx: WorkerContext, updates: asyncio.Queue[dict[str, Any]]) -> None:
    """Sessions other workers serve (PostgreSQL): polled from the database every
    `ELSEWHERE_POLL_S` and put into this stream's updates with the serving worker's node id
    (`state` "elsewhere"; "gone" when they end or come here)."""
    shown: set[str] = set()
    while True:
        try:
            async with ctx.db().sessions() as db:
                rows = await sessions_elsewhere(db, set(ctx.live.codes()))
        except Exception as exc:  # an outage: try again next time
            log.debug("monitor: other workers' sessions unavailable: %r", exc)
            rows = None
        if rows is not None:
            for summary in rows:
                _put(updates, summary)
            now = {s["session_code"] for s in rows}
            for code in shown - now:
                if code not in ctx.live:
                    _put(updates, {"session_code": code, "state": "gone"})
            shown = now
        await asyncio.sleep(ELSEWHERE_POLL_S)


def _put(queue: asyncio.Queue[dict[str, Any]], update: dict[str, Any]) -> None:
    if queue.full():  # the rule of LiveSessions.publish: drop the oldest
        queue.get_nowait()
    queue.put_nowait(update)


async def _feed(
    response: web.StreamResponse,
    updates: asyncio.Queue[dict[str, Any]],
    first: list[dict[str, Any]],
) -> None:
    """Write the snapshot, then every update and heartbeat, until shutdown or a failed write."""

    async def write(chunk: bytes) -> None:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await response.write(chunk)

    await write(f"retry: {RETRY_MS}\n\n".encode() + sse_event("sessions", {"sessions": first}))
    while True:
        try:
            async with asyncio.timeout(HEARTBEAT_S):
                update = await updates.get()
        except TimeoutError:
            await write(b": heartbeat\n\n")
            continue
        if update is _SHUTDOWN:
            await write(sse_event("shutdown", {"reason": "server_shutdown"}))
            return
        await write(sse_event("update", update))


async def _close_streams(app: web.Application) -> None:
    app[STREAMS].close_all()


def add_monitor_routes(app: web.Application) -> None:
    """Register `GET /monitor` and `GET /v1/monitor/stream`; calling it twice is harmless.
    Call it after the hook that ends live sessions, so monitors see them go."""
    if STREAMS in app:
        return
    app[STREAMS] = Streams()
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/monitor", page)
    app.router.add_get("/v1/monitor/stream", stream)
