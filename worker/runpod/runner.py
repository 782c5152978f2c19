"""The RunPod job actions, run on the worker's own event loop (see `worker.runpod.runtime`),
beside the HTTP/WebSocket server and with the same worker context: models, database and writer.

`JobRunner.run(input)` yields a job's output items and never raises: a problem is yielded as the
last item, `{"error": {"code", "message"}}` (RunPod's SDK ends a job at such an item anyway).
- `evaluate` (`worker.runpod.evaluate`): one answer -> transcript, evaluation, the examiner's
  reply as text and WAV audio, stage timings; written when a session is named.
- `viva` (`worker.runpod.viva`): a recorded viva -> one item per answer, then the result.
- `session` (`worker.runpod.job_session`): a realtime session -> how to reach it, its live
  summaries, and a final item.
- `health`: models, database and writer, live sessions.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from core.errors import CodedError
from models.base import ModelError
from worker.exam.evaluators import EvaluationFailed
from worker.runpod.errors import JobError
from worker.runpod.evaluate import evaluate_job
from worker.runpod.job_session import SessionJobRun
from worker.runpod.jobs import EvaluateJob, SessionJob, VivaJob, parse_job
from worker.runpod.shared import JobServices
from worker.runpod.viva import viva_job
from worker.service.context import WorkerContext
from worker.service.health import health

log = logging.getLogger(__name__)


class JobRunner:
    def __init__(self, ctx: WorkerContext, ws_base: str):
        self.services = JobServices(ctx, ws_base)

    async def run(self, raw: Any) -> AsyncIterator[dict[str, Any]]:
        s = self.services
        try:
            job = parse_job(raw)
            if isinstance(job, EvaluateJob):
                yield await evaluate_job(s, job)
            elif isinstance(job, VivaJob | SessionJob):
                # aclosing: a job closed early (cancelled) closes its steps at once, not at GC.
                steps = (
                    viva_job(s, job) if isinstance(job, VivaJob) else SessionJobRun(s, job).items()
                )
                async with contextlib.aclosing(steps) as items:
                    async for item in items:
                        yield item
            else:
                yield self.health()
        except CodedError as exc:  # JobError, or a refusal to open a session: already typed
            yield exc.as_item()
        except EvaluationFailed as exc:
            yield JobError("evaluation_failed", str(exc)).as_item()
        except ModelError as exc:
            yield JobError("model_error", f"{type(exc).__name__}: {exc}").as_item()
        except Exception as exc:
            log.exception("job failed")
            yield JobError("internal_error", f"{type(exc).__name__}: {exc}").as_item()

    def health(self) -> dict[str, Any]:
        ctx = self.services.ctx
        report = health(ctx)
        return {
            "type": "health",
            "status": "ok" if report.ok else "degraded",
            "profile": report.profile,
            "models": report.models,
            "database": None
            if report.writer is None
            else {"dialect": report.dialect, "writer": report.writer},
            "sessions": {
                "live": report.live,
                "max": report.max_sessions,
                "accepting": report.accepting,
                "summaries": ctx.live.summaries(),
            },
            "ws_base": self.services.ws_base,
        }
