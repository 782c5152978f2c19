"""RunPod serverless mode: the job handler, SIGTERM through the SDK's own signal handling, and
`test_input.json` run for real.

- `make_handler(runtime)` is the async-generator handler given to `runpod.serverless.start`. It
  runs on the SDK's loop and streams the items of `JobRunner.run` from the runtime's loop.
- SIGTERM: the SDK installs its own handlers once it runs (production's JobScaler: stop taking
  jobs, wait for the running ones; `--rp_serve_api`'s uvicorn: stop serving, wait for open
  requests). `ShutdownSignals` wraps whichever handler is in place when the SDK first asks for
  its concurrency (production) or a job starts (`--rp_serve_api`), so the live sessions are told
  first (which ends `session` jobs with a final item) and the SDK's own handler runs next. A
  watchdog exits the process if the SDK has not returned within the bound.
- Outside RunPod (no `RUNPOD_WEBHOOK_GET_JOB`, no `--rp_serve_api`) the SDK would "run"
  `test_input.json` without executing an async generator's body (runpod 1.12) and report
  success; `run()` runs that job through the handler instead and prints what it yields.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from core.config import Config
from worker.http.server import DRAIN_S
from worker.runpod.jobs import JobError
from worker.runpod.runtime import Runtime, StartFailed

log = logging.getLogger(__name__)
DEFAULT_WARMUP_TIMEOUT_S = 900.0  # RUNPOD_INIT_TIMEOUT, when set, replaces it
Handler = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]
_SignalHandler = Callable[[int, FrameType | None], Any]


class Terminated(Exception):
    """SIGTERM arrived while the models were still warming up."""


class ShutdownSignals:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.starting = False
        self._chained: dict[int, _SignalHandler] = {}
        self._watchdog: threading.Timer | None = None

    def install(self) -> None:
        """Before the SDK starts (main thread). uvicorn restores this handler when it stops
        and re-raises the signal to it, so it must not end the process itself."""
        signal.signal(signal.SIGTERM, self._before_sdk)

    def _before_sdk(self, signum: int, frame: FrameType | None) -> None:
        if self.starting:
            raise Terminated
        self._begin()

    def chain(self) -> None:
        """Put the session shutdown in front of the SDK's current handlers (main thread only;
        cheap, so every job calls it: the SDK installs its handlers after `start()` began)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            current = signal.getsignal(sig)
            if current is self._chained.get(sig) or current is self._before_sdk:
                continue
            handler = functools.partial(self._then, current)
            signal.signal(sig, handler)
            self._chained[sig] = handler

    def _then(self, previous: Any, signum: int, frame: FrameType | None) -> None:
        self._begin()
        if callable(previous):
            previous(signum, frame)

    def _begin(self) -> None:
        self.runtime.begin_shutdown()
        if self._watchdog is None:
            bound = self.runtime.config.server.shutdown_timeout_seconds + 2 * DRAIN_S
            self._watchdog = threading.Timer(bound, self._force_exit, args=(bound,))
            self._watchdog.daemon = True
            self._watchdog.start()

    def _force_exit(self, bound: float) -> None:
        log.error("the SDK did not stop within %.0f s of SIGTERM; exiting", bound)
        self.runtime.stop()
        _exit(0)


def make_handler(runtime: Runtime, signals: ShutdownSignals | None = None) -> Handler:
    async def handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        if signals is not None:
            signals.chain()
        jobs = runtime.jobs
        if jobs is None:
            yield JobError("models_not_ready", "the worker is not started").as_item()
            return
        raw = job.get("input") if isinstance(job, dict) else None
        try:
            async for item in runtime.stream(lambda: jobs.run(raw)):
                yield item
        except Exception as exc:  # the bridge itself failed (the runtime is stopping)
            log.exception("job %s failed", job.get("id") if isinstance(job, dict) else "?")
            yield JobError("internal_error", f"{type(exc).__name__}: {exc}").as_item()

    return handler


def _sdk_runs_jobs(env: Mapping[str, str], serve_api: bool) -> bool:
    """Whether runpod.serverless.start would take real jobs rather than a local test."""
    return serve_api or bool(env.get("RUNPOD_WEBHOOK_GET_JOB") or env.get("RUNPOD_REALTIME_PORT"))


def run(config: Config, env: Mapping[str, str], serve_api: bool, test_input: str | None) -> int:
    """Warm up, then hand the handler to RunPod's SDK until it returns; the exit status."""
    runtime = Runtime(config, env)
    signals = ShutdownSignals(runtime)
    signals.install()
    try:
        code = _run(runtime, signals, config, env, serve_api, test_input)
    finally:
        clean = runtime.stop()
    if not clean:
        # A model still loading (vLLM's engine starts synchronously) cannot be closed, and a
        # normal exit would wait for its engine process: leave without it.
        log.error("models not closed; exiting without waiting for them")
        _exit(code)
    return code


def _exit(code: int) -> None:
    """Leave now. Child processes (vLLM's engine) are asked to stop first: they would outlive
    an `os._exit` outside a container."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(5)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def _run(
    runtime: Runtime,
    signals: ShutdownSignals,
    config: Config,
    env: Mapping[str, str],
    serve_api: bool,
    test_input: str | None,
) -> int:
    signals.starting = True
    try:
        runtime.start(float(env.get("RUNPOD_INIT_TIMEOUT") or DEFAULT_WARMUP_TIMEOUT_S))
    except StartFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Terminated:
        log.info("SIGTERM during warm-up; stopping")
        return 0
    finally:
        signals.starting = False
    handler = make_handler(runtime, signals)
    if not _sdk_runs_jobs(env, serve_api):
        return run_local_test(handler, test_input)
    import runpod  # heavy; only this mode needs it
    from runpod.serverless.modules.rp_logger import RunPodLogger

    if not (env.get("RUNPOD_LOG_LEVEL") or env.get("RUNPOD_DEBUG_LEVEL")):
        # The SDK defaults to DEBUG, which logs every item a job yields: student tokens
        # and megabytes of base64 audio. INFO unless asked (or --rp_log_level).
        RunPodLogger().set_level("INFO")
    max_sessions = config.server.max_sessions

    def concurrency(_current: int) -> int:
        # Production's JobScaler asks before taking its first job, in the main thread, after
        # installing its signal handlers: the moment to chain ours. Constant: the SDK
        # resizes its queue only while no job runs.
        signals.chain()
        return max_sessions

    runpod.serverless.start(
        {
            "handler": handler,
            "concurrency_modifier": concurrency,
            "return_aggregate_stream": True,
        }
    )
    log.info("the SDK stopped taking jobs")
    return 0


def run_local_test(handler: Handler, test_input: str | None) -> int:
    """RunPod's local test, done for real: the job from `--test_input` or test_input.json,
    each item printed as a JSON line; 1 if the job yielded an error."""
    try:
        job = json.loads(test_input or Path("test_input.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"error: no test job (--test_input or test_input.json): {exc}", file=sys.stderr)
        return 1
    if not isinstance(job, dict) or "input" not in job:
        print('error: the test job needs an "input"', file=sys.stderr)
        return 1
    job.setdefault("id", "local_test")

    async def collect() -> list[dict[str, Any]]:
        return [item async for item in handler(job)]

    items = asyncio.run(collect())
    for item in items:
        print(json.dumps(item), flush=True)
    return 1 if any("error" in item for item in items) else 0
