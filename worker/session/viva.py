"""One live viva: its connections come and go, the exam goes on.

`run()` is the session's whole life (one task, owned by `worker.service.live.LiveSessions`): it
serves one WebSocket at a time through a `Conversation` (`worker/voice/connection.py`: receive,
turns, replies, send, in one TaskGroup; it sees the session only as a `SessionHost`), and between
connections waits up to
`exam.reconnect_grace_seconds` for the student to come back. Scoring runs in the session's own
TaskGroup, so a dropped connection never loses an evaluation; the end and the result go through
the write-behind writer after every answer is scored.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from core.config import Config
from core.grading import ScoredAnswer, SessionTotals, session_totals
from db import ops
from db.ids import current_node_id, new_id
from db.tables import Session, utcnow
from models.base import Sampling
from models.hub import Hub
from models.scheduler import Priority, at_priority, for_session
from worker import protocol as p
from worker.exam.flow import Evaluate, ExamFlow, Question
from worker.session.scoring import RowIds, ScoringContext, score_answer
from worker.session.usage import MeteredLLM, SessionUsage
from worker.voice.connection import Conversation
from worker.voice.host import Heard
from worker.voice.metrics import CONNECTED, SESSIONS_ENDED
from worker.voice.outbox import SlowConsumer
from worker.voice.pacing import AuditThrottle
from worker.voice.speaker import PromptCache, Speaker

log = logging.getLogger(__name__)
SCORING_TIMEOUT_S = 120.0  # the result waits this long for answers still being scored


@dataclass(frozen=True)
class SessionRecord:
    session_id: int
    code: str
    user_id: int
    questions: tuple[Question, ...]
    student: str = ""
    college_type: str = ""


@dataclass(frozen=True)
class Moved:
    """Where a session another worker was running stands (it left, or died): the question it
    was on (0-based) and the answers already scored, read from the database."""

    index: int
    scored: tuple[ScoredAnswer, ...] = ()
    rows: dict[int, RowIds] = field(default_factory=dict)  # question number -> its rows
    progress: dict[str, Any] | None = None  # the last `ExamFlow.checkpoint()` written

    @classmethod
    def of(cls, sess: Session, scored: tuple[ScoredAnswer, ...]) -> Moved:
        """Where `sess` (loaded with its answers and evaluations) stands."""
        progress = sess.progress if isinstance(sess.progress, dict) else None
        index = progress["index"] if progress else max(sess.current_question - 1, 0)
        rows = {
            a.question_number: RowIds(a.id, a.evaluation.id if a.evaluation else new_id())
            for a in sess.answers
        }
        return cls(index, scored, rows, progress)


_Arrival = tuple[web.WebSocketResponse, asyncio.Transport | None, "asyncio.Future[None]"]


class VivaSession:
    def __init__(
        self,
        record: SessionRecord,
        hub: Hub,
        writer: ops.OpSink,
        config: Config,
        prompts: PromptCache,
        clock: Callable[[], float] = time.monotonic,
        moved: Moved | None = None,
    ):
        self.r, self.hub, self.writer, self.cfg, self.clock = record, hub, writer, config, clock
        self.usage = SessionUsage()
        self.llm = MeteredLLM(hub.llm, self.usage)
        nudge = config.turn.nudge_after_seconds
        self.flow = ExamFlow(record.questions, config.exam, clock, nudge_after_seconds=nudge)
        self.speaker = Speaker(
            self.llm,
            hub.tts,
            prompts,
            Sampling(temperature=config.models.llm.temperature, max_tokens=32),
        )
        self.on_change: Callable[[dict[str, Any]], None] = lambda _: None
        self.connected = False
        self.ending = False  # the closing words, result and close are under way
        self.last_speech_at = clock()
        # A client repeating `session.update` writes one `client.info` row per window.
        self._client_info = AuditThrottle(
            config.limits.audit_window_seconds, lambda _key, d: self.audit("client.info", d)
        )
        self.latencies: list[float] = []
        # Connections handed over by `serve()`; None wakes the wait between connections.
        self._arrivals: asyncio.Queue[_Arrival | None] = asyncio.Queue()
        self._conversation: Conversation | None = None
        self.stop_reason: str | None = None
        self.response_ids = itertools.count(1)
        self._finished = False
        self._outer: asyncio.TaskGroup | None = None
        self._scoring: set[asyncio.Task[None]] = set()
        # Per question: the evaluation that counts (and the attempt it scored), the rows.
        self._scored: dict[int, tuple[int, ScoredAnswer]] = {}
        self._rows: dict[int, RowIds] = {}
        self._checkpoint: dict[str, Any] | None = None
        self._connections = 0
        self._moved = moved
        self.abandoned = False  # another worker owns it now: end without writing anything
        if moved is not None:  # the first connection here resumes the exam where it stood
            self.flow.continue_at(moved.index, len(moved.scored), moved.progress)
            self._scored = {a.question_number: (0, a) for a in moved.scored}
            self._rows = dict(moved.rows)
            self._connections = 1
        self._scoring_ctx = ScoringContext(
            record.session_id,
            self.llm,
            config.exam,
            self.enqueue,
            self._emit_if_connected,
            lambda: self.flow.answered,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    async def serve(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None) -> None:
        """Hand a student's connection to the session; returns when that connection is over."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._arrivals.put_nowait((ws, transport, done))
        await done

    def stop(self, reason: str) -> None:
        """End the session now (operator, shutdown): final events, result, close."""
        if self.stop_reason is not None or self._finished:
            return
        self.stop_reason = reason
        if self._conversation is not None:
            self._conversation.stop(reason)
        else:
            self._arrivals.put_nowait(None)

    async def run(self) -> None:
        if self._moved is not None:
            self.audit("session.moved", details={"question": self.flow.index + 1})
        else:
            started = ops.session_update(
                self.r.session_id, status="in_progress", start_time=utcnow()
            )
            self.enqueue(started)
            self.audit("session.started")
        for_session(self.r.code)  # the models take turns between sessions
        try:
            async with asyncio.TaskGroup() as outer:
                self._outer = outer
                with at_priority(Priority.PREPARE):  # made ahead: any live turn goes first
                    prompts = self.speaker.prepare(self.flow.prompts())
                    prepare = outer.create_task(prompts, name="tts")
                await self._connection_loop()
                prepare.cancel()
        finally:
            if not self._finished and not self.abandoned:  # cancelled or failed: a result still
                self._finish_db("terminated", "worker stopped")
            while not self._arrivals.empty():
                arrival = self._arrivals.get_nowait()
                if arrival is not None:
                    await p.refuse(arrival[0], "session_closed", "the session has ended")
                    arrival[2].set_result(None)

    async def _connection_loop(self) -> None:
        grace = self.cfg.exam.reconnect_grace_seconds
        while True:
            wait = max(grace, 5.0) if self._connections == 0 else grace
            try:
                async with asyncio.timeout(wait):
                    arrival = await self._arrivals.get()
            except TimeoutError:
                arrival = None
            if arrival is None:
                reason = self.stop_reason or f"no connection within {grace:g} s"
                await self._end_offline(reason)
                return
            ws, transport, done = arrival
            try:
                await self._serve(ws, transport)
            finally:
                if not done.done():
                    done.set_result(None)
            if self._finished:
                return
            if self.stop_reason is not None:
                await self._end_offline(self.stop_reason)
                return

    async def _serve(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None) -> None:
        resumed = self._connections > 0
        self._connections += 1
        self._conversation = Conversation(self, ws, transport)
        CONNECTED.inc()
        self.connected = True
        self.changed()
        try:
            await self._conversation.run(resumed)
        finally:
            self._conversation = None
            self.connected = False
            CONNECTED.dec()
            self.changed()

    # --- the end -----------------------------------------------------------------------------

    async def _end_offline(self, reason: str) -> None:
        """The student is gone (grace period over, or stopped while away)."""
        self.flow.terminate(reason)
        await self.wrap_up("terminated", reason)

    async def wrap_up(self, status: str, reason: str) -> SessionTotals:
        """Every answer scored (bounded wait), then the end and the result handed to the writer;
        the totals are what the student is told."""
        if self._scoring:
            await asyncio.wait(self._scoring, timeout=SCORING_TIMEOUT_S)
        self._finish_db(status, reason)
        scored = [a for _, a in self._scored.values()]
        return session_totals(scored, len(self.r.questions), self.cfg.exam.max_score)

    def _finish_db(self, status: str, reason: str) -> None:
        """The session's end and its result, through the writer (after every evaluation, so
        the result computed in the database sees them all)."""
        self._finished = True
        self._client_info.flush()
        lat = self.latencies
        self.enqueue(
            ops.session_update(
                self.r.session_id,
                status=status,
                end_time=utcnow(),
                avg_latency_ms=sum(lat) / len(lat) if lat else None,
                max_latency_ms=max(lat, default=None),
            )
        )
        usage = self.usage.as_dict()
        if self._conversation is not None:  # its audio is counted when it closes
            sent = self.usage.audio_out_seconds + self._conversation.out.audio_seconds
            usage["audio_out_seconds"] = round(sent, 2)
        extra = {"usage": usage, "end_reason": reason}
        self.enqueue(
            ops.compute_result(
                self.r.session_id, len(self.r.questions), self.cfg.exam.max_score, extra
            )
        )
        self.audit(f"session.{status}", details={"reason": reason})
        SESSIONS_ENDED.labels(status).inc()
        self.changed()

    # --- scoring (off the voice path) --------------------------------------------------------

    def score_later(
        self, d: Evaluate, heard: Heard | None, latency_f: asyncio.Future[float] | None
    ) -> None:
        """Score beside the conversation, in the session's TaskGroup: a dropped connection
        does not lose the evaluation."""
        if self._outer is None:
            return
        with at_priority(Priority.SCORING):  # off the voice path: last in every model's queue
            task = self._outer.create_task(self._score(d, heard, latency_f), name="score")
        self._scoring.add(task)
        task.add_done_callback(self._scoring.discard)

    async def _score(
        self, d: Evaluate, heard: Heard | None, latency_f: asyncio.Future[float] | None
    ) -> None:
        transcript, duration = (heard.transcript, heard.duration_s) if heard else (None, 0.0)
        number = d.question.number
        rows = self._rows.setdefault(number, RowIds(new_id(), new_id()))

        def keep(scored: ScoredAnswer) -> bool:
            """The best evaluation of the question counts; of equal ones, the later attempt."""
            prev = self._scored.get(number)
            if prev is not None and (scored.score, d.attempt) < (prev[1].score, prev[0]):
                return False
            self._scored[number] = (d.attempt, scored)
            return True

        ctx = self._scoring_ctx
        await score_answer(ctx, d, transcript, duration, latency_f, rows, keep)

    def checkpoint(self) -> None:
        """Write where the exam stands (through the writer), when it changed: another worker
        resumes from it if this one goes away."""
        progress = self.flow.checkpoint()
        same = {k: v for k, v in progress.items() if k != "elapsed_s"}
        if self._checkpoint == same:
            return
        self._checkpoint = same
        self.enqueue(
            ops.session_update(
                self.r.session_id, current_question=progress["index"] + 1, progress=progress
            )
        )

    def _emit_if_connected(self, event: p.WireEvent) -> None:
        """Scores are sent when a student is there to see them (they are in the result too)."""
        if self._conversation is not None:
            with contextlib.suppress(SlowConsumer):  # its own send timeout ends the connection
                self._conversation.out.emit(event)

    # --- small things ------------------------------------------------------------------------

    def enqueue(self, op: ops.Op) -> None:
        self.writer.enqueue(op)

    def audit(self, action: str, details: dict[str, Any] | None = None) -> None:
        r = self.r
        self.enqueue(
            ops.audit(action, r.code, session_id=r.session_id, user_id=r.user_id, details=details)
        )

    def client_info(self, details: dict[str, Any]) -> None:
        self._client_info.hit(self.r.code, details)

    def summary(self) -> dict[str, Any]:
        """What a monitor shows about this session."""
        q = self.flow.current
        return {
            "session_code": self.r.code,
            "student": self.r.student,
            "college_type": self.r.college_type,
            "question_number": q.number if q else None,
            "question_count": len(self.r.questions),
            "answered": self.flow.answered,
            "state": "ended" if self._finished else "connected" if self.connected else "away",
            "last_latency_ms": round(self.latencies[-1], 1) if self.latencies else None,
            "latencies_ms": [round(v, 1) for v in self.latencies[-20:]],
            "worker": current_node_id(),  # which worker serves it (its node id)
        }

    def changed(self) -> None:
        self.on_change(self.summary())
