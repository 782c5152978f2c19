"""The worker's event loop and its servers, for both ways `handler.py` runs.

RunPod's SDK runs its own event loop (uvicorn for `--rp_serve_api`, `asyncio.run` in production)
and starts it only after warm-up. The models (vLLM's AsyncLLM is bound to the loop it was made
on), the database engine, the writer and the WebSocket server must share one loop that exists
before that. So `Runtime` runs a dedicated thread with its own loop, serving the aiohttp
application there; the SDK's handler reaches it through `call` and `stream`, which hand work
to that loop and results back.

The plain HTTP/WebSocket server (`--serve`, or RunPod's `PORT`) on the main loop is
`worker.http.server.serve`.

Shutdown, both ways: live sessions end with a final event (`on_shutdown`), the writer drains
and the engine is disposed (`cleanup_ctx`), all within `server.shutdown_timeout_seconds` plus
`DRAIN_S`; past that, accepted writes are already in the writer's journal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from aiohttp import web

from core.config import Config
from worker.http.context import CONTEXT
from worker.http.server import DRAIN_S, build_app, runner_args
from worker.runpod.runner import JobRunner
from worker.service.context import WorkerContext
from worker.service.urls import local_ws_base, public_ws_base

log = logging.getLogger(__name__)
T = TypeVar("T")
STREAM_BUFFER = 8  # job items handed over but not yet taken by the SDK; then the job waits


def _settle(future: concurrent.futures.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class StartFailed(RuntimeError):
    """The worker could not start: the message says why (and what to run, where it can)."""


class Runtime:
    """The worker's loop in its own thread: the aiohttp app on `server.host:port`, the jobs."""

    def __init__(self, config: Config, env: Mapping[str, str]):
        self._config = config  # until the application's context holds the one config
        self._env = env
        self.ws_base = public_ws_base(config.server, env) or local_ws_base(config.server)
        self.loop = asyncio.new_event_loop()
        self.app: web.Application | None = None
        self.context: WorkerContext | None = None
        self.jobs: JobRunner | None = None
        self.shutdown_deadline: float | None = None  # monotonic; set by begin_shutdown
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run_loop, name="viva-runtime", daemon=True)
        self._lock = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()
        self._clean = True
        self._abandoned = False

    @property
    def config(self) -> Config:
        """The worker's config: the context's (live settings applied) once the app exists."""
        return self.context.config if self.context is not None else self._config

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            if not self._abandoned:  # else they are mid-cleanup and cannot be closed
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    # --- start -------------------------------------------------------------------------------

    def start(self, timeout_s: float) -> None:
        """Open the database, start the server and wait for the models; raises StartFailed
        (after cleaning up) when any of it fails or the models are not ready in `timeout_s`.
        Anything a signal handler raises meanwhile is re-raised as it is, after the cleanup."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        try:
            future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self.stop()
            raise StartFailed(f"models not ready within {timeout_s:g} s") from None
        except BaseException:
            future.cancel()
            self.stop()
            raise

    async def _start(self) -> None:
        try:
            await self._serve()
        except StartFailed:
            raise
        except Exception as exc:  # DatabaseNotMigrated, DatabaseUnavailable, ...: say why
            raise StartFailed(str(exc) or type(exc).__name__) from exc

    async def _serve(self) -> None:
        cfg = self.config.server
        self.app = app = build_app(self.config, env=self._env)
        self.context = ctx = app[CONTEXT]
        self._runner = web.AppRunner(app, **runner_args(self.config))
        await self._runner.setup()  # the database opens here; the models load in the background
        try:
            await web.TCPSite(self._runner, cfg.host, cfg.port).start()
        except OSError as exc:
            raise StartFailed(f"cannot listen on {cfg.host}:{cfg.port}: {exc}") from None
        log.info("WebSocket server on %s:%d; students get %s", cfg.host, cfg.port, self.ws_base)
        while not ctx.models.ready:
            if ctx.models.error is not None:
                raise StartFailed(f"models failed to load: {ctx.models.error}")
            await asyncio.sleep(0.1)
        self.jobs = JobRunner(ctx, self.ws_base)

    # --- bridge: from the SDK's loop to this one ---------------------------------------------

    async def call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Await `make()` run on the runtime loop (cancelling this cancels it there)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(make(), self.loop))

    async def stream(self, make: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        """The items of `make()`, an async iterator run on the runtime loop, yielded on the
        caller's loop. At most STREAM_BUFFER items wait for the caller; then the producer waits.
        Closing or cancelling this iterator cancels the producer and waits for its cleanup."""
        caller = asyncio.get_running_loop()
        handover: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(STREAM_BUFFER)
        finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        tasks: list[asyncio.Task[None]] = []

        async def give(kind: str, value: Any) -> None:
            put = asyncio.run_coroutine_threadsafe(handover.put((kind, value)), caller)
            await asyncio.wrap_future(put)

        async def pump() -> None:
            items = make()
            try:
                async for item in items:
                    await give("item", item)
                await give("end", None)
            except Exception as exc:
                await give("error", exc)
            finally:
                aclose = getattr(items, "aclose", None)
                if aclose is not None:
                    await aclose()

        def launch() -> None:  # on the runtime loop
            task = self.loop.create_task(pump(), name="job")
            # A done callback fires even for a task cancelled before its first step.
            task.add_done_callback(lambda _: _settle(finished))
            tasks.append(task)

        def cancel() -> None:  # on the runtime loop, after launch (call_soon is FIFO)
            for task in tasks:
                task.cancel()

        self.loop.call_soon_threadsafe(launch)
        done = False
        try:
            while True:
                kind, value = await handover.get()
                if kind != "item":
                    done = True
                    if kind == "error":
                        raise value
                    return
                yield value
        finally:
            if not done:
                self.loop.call_soon_threadsafe(cancel)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(finished)), 10)

    # --- stop ----------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Stop taking sessions and end the live ones (final events, results written), without
        waiting. Thread-safe and idempotent: signal handlers call it."""
        with self._lock:
            if self.shutdown_deadline is not None or self._stopping or self.context is None:
                return
            timeout = self.config.server.shutdown_timeout_seconds
            self.shutdown_deadline = time.monotonic() + timeout
            live = self.context.live
        log.info("shutting down: ending live sessions (at most %.0f s)", timeout)
        asyncio.run_coroutine_threadsafe(live.shutdown(timeout), self.loop)

    def stop(self) -> bool:
        """Blocking and idempotent: end sessions, close models, drain the writer, dispose the
        engine (the aiohttp cleanup) within the bound, then stop the loop and its thread.
        False when that did not finish: the loop was blocked (a model still loading
        synchronously) or the cleanup overran, and models may hold processes that a normal
        interpreter exit would wait for. A second caller waits for the first one."""
        with self._lock:
            first, self._stopping = not self._stopping, True
        if not first:
            self._stopped.wait(self.config.server.shutdown_timeout_seconds + 2 * DRAIN_S)
            return self._clean
        try:
            self._clean = self._stop()
        finally:
            self._stopped.set()
        return self._clean

    def _stop(self) -> bool:
        if not self._thread.is_alive():
            return True
        timeout = self.config.server.shutdown_timeout_seconds
        if self.shutdown_deadline is not None:
            timeout = max(0.0, self.shutdown_deadline - time.monotonic())
        if self.jobs is None:  # never started: no session or job to wait for
            timeout = 0.0
        clean = True
        if self._runner is not None:
            cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop)
            try:
                cleanup.result(timeout + DRAIN_S)
            except concurrent.futures.TimeoutError:
                cleanup.cancel()
                clean = False
                bound = timeout + DRAIN_S
                log.error("shutdown unfinished after %.0f s; the journal keeps accepted ops", bound)
            except Exception:
                clean = False
                log.exception("shutdown failed")
        self._abandoned = not clean
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10 if clean else 1)  # a blocked loop will not stop by waiting
        return clean and not self._thread.is_alive()
