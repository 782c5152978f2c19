"""The `session` job: open a realtime session, say how to reach it, follow it until it ends.

The job's first item is `session.opened` (`code`, `token`, `ws_url`); then a `session.update`
(the live session's summary, as monitors see it) whenever it changes; then `session.ended` with
the reason (`ended`, `timed_out`, `server_shutdown`) and the stored session with its result.
The job holds the worker (RunPod keeps a worker with running jobs) while the student talks to it
over the WebSocket. A student who never connects leaves a `terminated` session with a result;
when the job's `timeout_s` passes the live session is stopped (terminated, with its result).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from core.config import ExamConfig
from db.queries.sessions import get_by_code
from worker.runpod.jobs import SessionJob
from worker.runpod.shared import JobServices
from worker.service.opening import CreateSession, Opened, open_session
from worker.service.urls import stream_url

WATCH_TICK_S = 0.25  # how often a session job checks its deadline and the shutdown


@dataclass
class _Followed:
    went_live: bool = False
    reason: str | None = None  # "timed_out" or "server_shutdown"; None: the session ended
    finished: bool = False  # the final item was made


def default_session_timeout(exam: ExamConfig) -> float:
    """Long enough for a whole viva: every question to its time limit, plus a reconnect."""
    return exam.total_questions * exam.max_question_duration_seconds + exam.reconnect_grace_seconds


class SessionJobRun:
    def __init__(self, jobs: JobServices, job: SessionJob):
        self.jobs = jobs
        self.job = job

    async def items(self) -> AsyncGenerator[dict[str, Any]]:
        job = self.job
        self.jobs.models()
        live, cfg = self.jobs.ctx.live, self.jobs.config
        body = CreateSession.model_validate(job.model_dump(include=set(CreateSession.model_fields)))
        opened = await open_session(cfg, self.jobs.db, live, body, user_agent="runpod-job")
        timeout = job.timeout_s or default_session_timeout(cfg.exam)
        state = _Followed()
        try:
            async with live.watch() as updates:  # before announcing: no update can be missed
                yield {
                    "type": "session.opened",
                    "code": opened.code,
                    "token": opened.token,
                    "ws_url": stream_url(self.jobs.ws_base, opened.code, opened.token),
                    "expires_in": opened.expires_in,
                    "total_questions": opened.total_questions,
                    "timeout_s": timeout,
                }
                async for update in self._follow(opened.code, updates, timeout, state):
                    yield {"type": "session.update", **update}
            if not state.went_live:
                await self._terminate_unused(opened, state.reason or "ended")
            await self.jobs.flushed(opened.session_id)
            final = {
                "type": "session.ended",
                "code": opened.code,
                "reason": state.reason or "ended",
                "connected": state.went_live,
                "session": await self.jobs.stored_session(opened.code),
            }
            state.finished = True
            yield final
        finally:
            if not state.finished:  # the job was cancelled or failed: leave nothing open
                self._abandon(opened, state)

    async def _follow(
        self,
        code: str,
        updates: asyncio.Queue[dict[str, Any]],
        limit_s: float,
        state: _Followed,
    ) -> AsyncIterator[dict[str, Any]]:
        """The session's summaries as they change, until it is gone, or the job's time limit or
        the worker's shutdown ends it (`state` says which, and whether it ever went live)."""
        live = self.jobs.ctx.live
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        last: dict[str, Any] | None = None
        while True:
            session = live.get(code)
            state.went_live = state.went_live or session is not None
            if state.reason is None and not live.accepting:
                state.reason = "server_shutdown"  # LiveSessions.shutdown() is ending it
            elif state.reason is None and loop.time() >= deadline:
                state.reason = "timed_out"
                if session is not None:
                    session.stop("the session job's time limit passed")
                deadline = loop.time() + self.jobs.config.server.shutdown_timeout_seconds
            if state.reason is not None and (session is None or loop.time() >= deadline):
                return  # nothing live (any more) to wait for
            try:
                async with asyncio.timeout(WATCH_TICK_S):
                    update = await updates.get()
            except TimeoutError:
                continue
            if update.get("session_code") != code:
                continue
            if update.get("state") == "gone":
                return
            state.went_live = True
            if update != last:
                last = update
                yield update

    def _terminate_ops(self, opened: Opened, reason: str) -> None:
        """A session that never went live ends terminated, with its (empty) result."""
        never = f"student never connected ({reason})"
        self.jobs.end_session(opened, "terminated", opened.total_questions, never, reason)

    async def _terminate_unused(self, opened: Opened, reason: str) -> None:
        """The student never came: the session is terminated so it cannot be joined later,
        and a student who came at the last moment is sent away."""
        async with self.jobs.db.sessions() as db:
            sess = await get_by_code(db, opened.code)
        if sess is None or sess.status in ("completed", "terminated"):
            return
        self._terminate_ops(opened, reason)
        await self.jobs.flushed(opened.session_id)
        late = self.jobs.ctx.live.get(opened.code)
        if late is not None:
            late.stop(reason)

    def _abandon(self, opened: Opened, state: _Followed) -> None:
        """No awaiting here: this runs while the job is being cancelled or closed."""
        session = self.jobs.ctx.live.get(opened.code)
        if session is not None:
            session.stop("the session job was stopped")
        elif not state.went_live:
            self._terminate_ops(opened, "the session job was stopped")
