"""One live viva: its connections come and go, the exam goes on.

`run()` is the session's whole life (one task, owned by `worker.live.LiveSessions`): it serves
one WebSocket at a time, each in its own TaskGroup (receive, turns, send, respond), and between
connections waits up to `exam.reconnect_grace_seconds` for the student to come back. Scoring
runs in the session's outer TaskGroup, so a dropped connection never loses an evaluation.

Voice path: VAD per 32 ms chunk -> speculative transcription when the student pauses -> at the
end of the answer the exam flow decides at once -> the reply streams out as paced audio. Scoring
and every database write happen beside it (scoring tasks, the write-behind writer).
Turn latency = end of answer decided -> first examiner audio byte written to the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from db import ops
from db.tables import utcnow
from db.writer import Writer
from models.base import SAMPLE_RATE, VAD_CHUNK, Sampling, Transcript, pcm16_to_float
from models.hub import Hub
from worker import protocol as p
from worker.config import Config
from worker.exam import Decision, Evaluate, ExamFlow, Finish, Ignored, Question, Say
from worker.grading import ScoredAnswer, session_totals
from worker.metrics import BARGE_INS, CONNECTED, SESSIONS_ENDED, WS_ERRORS, TurnStages
from worker.outbox import Outbox, SlowConsumer
from worker.scoring import ScoringContext, score_answer
from worker.speaker import PromptCache, Speaker
from worker.turns import (
    BargeIn,
    Paused,
    Resumed,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnSettings,
)
from worker.usage import MeteredLLM, SessionUsage

log = logging.getLogger(__name__)
AUDIO_QUEUE_FRAMES = 256  # client frames waiting for the VAD; beyond that the client is flooding
TICK_S = 0.25  # how often silence (nudges) and time limits are checked without audio
SCORING_TIMEOUT_S = 120.0  # the result waits this long for answers still being scored


@dataclass(frozen=True)
class SessionRecord:
    session_id: int
    code: str
    user_id: int
    questions: tuple[Question, ...]
    student: str = ""
    college_type: str = ""


@dataclass
class _Heard:
    question: str  # the text of the question (or follow-up) this answered
    transcript: Transcript
    duration_s: float
    stages: TurnStages


_Arrival = tuple[web.WebSocketResponse, "asyncio.Future[None]"]


class _Dropped(Exception):
    """This connection ended (the student left, or stopped reading); the session lives on."""


class _Over(Exception):
    """The session ended (completed, terminated, or stopped)."""


class VivaSession:
    def __init__(
        self,
        record: SessionRecord,
        hub: Hub,
        writer: Writer,
        config: Config,
        prompts: PromptCache,
        clock: Callable[[], float] = time.monotonic,
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
        self.latencies: list[float] = []
        # Connections handed over by `serve()`; None wakes the wait between connections.
        self._arrivals: asyncio.Queue[_Arrival | None] = asyncio.Queue()
        self._tg: asyncio.TaskGroup | None = None
        self._stop_reason: str | None = None
        self._finished = False
        self._outer: asyncio.TaskGroup | None = None
        self._scoring: set[asyncio.Task[None]] = set()
        self._scored: list[ScoredAnswer] = []
        self._ids = itertools.count(1)
        self._connections = 0
        self._scoring_ctx = ScoringContext(
            record.session_id,
            self.llm,
            config.exam,
            self._enqueue,
            self._emit_if_connected,
            lambda: self.flow.answered,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    async def serve(self, ws: web.WebSocketResponse) -> None:
        """Hand a student's connection to the session; returns when that connection is over."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._arrivals.put_nowait((ws, done))
        await done

    def stop(self, reason: str) -> None:
        """End the session now (operator, shutdown): final events, result, close."""
        if self._stop_reason is not None or self._finished:
            return
        self._stop_reason = reason
        if self.connected and self._tg is not None:
            self._tg.create_task(self._end(reason), name="stop")
        else:
            self._arrivals.put_nowait(None)

    async def run(self) -> None:
        started = ops.session_update(self.r.session_id, status="in_progress", start_time=utcnow())
        self._enqueue(started)
        self._audit("session.started")
        try:
            async with asyncio.TaskGroup() as outer:
                self._outer = outer
                prepare = outer.create_task(self.speaker.prepare(self.flow.prompts()), name="tts")
                await self._connection_loop()
                prepare.cancel()
        finally:
            if not self._finished:  # cancelled or failed: still leave a result
                self._finish_db("terminated", "worker stopped")
            while not self._arrivals.empty():
                arrival = self._arrivals.get_nowait()
                if arrival is not None:
                    await _refuse(arrival[0], "session_closed", "the session has ended")
                    arrival[1].set_result(None)

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
                reason = self._stop_reason or f"no connection within {grace:g} s"
                await self._end_offline(reason)
                return
            ws, done = arrival
            try:
                await self._serve(ws)
            finally:
                if not done.done():
                    done.set_result(None)
            if self._finished:
                return
            if self._stop_reason is not None:
                await self._end_offline(self._stop_reason)
                return

    async def _serve(self, ws: web.WebSocketResponse) -> None:
        resumed = self._connections > 0
        self._connections += 1
        self._open_connection(ws)
        CONNECTED.inc()
        self.connected = True
        self._changed()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._emit(self._created_event(resumed))
                tg.create_task(self._receive(), name="receive")
                tg.create_task(self._listen(), name="turns")
                tg.create_task(self.out.run(), name="send")
                if self._stop_reason is not None:  # stopped while this connection was opening
                    await self._end(self._stop_reason)
                elif resumed:
                    self._audit("session.resumed")
                    await self._carry_out(self.flow.resume(), None)
                else:
                    await self._carry_out(self.flow.start(), None)
        except* (_Dropped, _Over, ConnectionResetError):
            pass  # ConnectionResetError: the socket closed under a send
        except* SlowConsumer as group:
            log.warning("session %s: %s; disconnecting", self.r.code, group.exceptions[0])
            WS_ERRORS.labels("slow_consumer").inc()
            if not ws.closed:
                await ws.close(code=p.CloseCode.SLOW_CONSUMER, message=b"slow consumer")
        finally:
            self._tg = None
            self.connected = False
            CONNECTED.dec()
            self.usage.audio_out_seconds += self.out.audio_seconds
            if self._turn_latency is not None and not self._turn_latency.done():
                self._turn_latency.cancel()
            if self._spec is not None:
                self._spec[1].cancel()
            self._changed()

    def _open_connection(self, ws: web.WebSocketResponse) -> None:
        """Fresh per-connection state: the turn detector and audio offsets restart at 0."""
        self.ws = ws
        self.out = Outbox(
            ws,
            self.hub.tts.sample_rate,
            self.clock,
            self.cfg.server.send_timeout_seconds,
            self._first_audio,
            self._response_done,
        )
        t = self.cfg.turn
        self.turns = TurnDetector(
            TurnSettings(
                t.vad_threshold,
                t.min_speech_ms,
                t.end_silence_ms,
                min(200, t.end_silence_ms // 2),
                t.min_interrupt_ms,
                t.echo_guard_ms,
            )
        )
        self.vad = self.hub.vad.stream()
        self.audio_in: asyncio.Queue[bytes] = asyncio.Queue(AUDIO_QUEUE_FRAMES)
        self._pcm = np.zeros(0, dtype=np.float32)
        self._heard: list[np.ndarray] = []  # every chunk since the last answer ended
        self._heard_from_ms = 0
        self._spec: tuple[int, asyncio.Task[Transcript]] | None = None
        self._response: asyncio.Task[None] | None = None  # producing the reply's audio
        self._queued: dict[str, Say] = {}  # responses made and not yet heard out, in order
        self._interrupted: list[Say] = []  # what a barge-in cut, to resume if it had no words
        self._turn_end: float | None = None
        self._turn_latency: asyncio.Future[float] | None = None
        self._stages: TurnStages | None = None
        self._done_stages: tuple[float, TurnStages] | None = None  # for the next response.done
        self._quiet_since: float | None = None
        self._last_tick = self.clock()
        self._last_rate_error = 0.0

    def _created_event(self, resumed: bool) -> p.SessionCreatedEvent:
        t, e = self.cfg.turn, self.cfg.exam
        return p.SessionCreatedEvent(
            session_code=self.r.code,
            question_count=len(self.r.questions),
            output_audio_format=p.AudioFormat(sample_rate=self.hub.tts.sample_rate),
            turn_detection=p.TurnDetection(
                threshold=t.vad_threshold,
                min_speech_ms=t.min_speech_ms,
                silence_duration_ms=t.end_silence_ms,
                min_interrupt_ms=t.min_interrupt_ms,
                min_answer_seconds=e.min_answer_duration_seconds,
                max_answer_seconds=e.max_question_duration_seconds,
                nudge_after_seconds=t.nudge_after_seconds,
            ),
            show_scores=e.show_scores,
            resumed=resumed,
        )

    # --- receive -----------------------------------------------------------------------------

    async def _receive(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                try:
                    p.check_audio_frame(msg.data)
                    self.audio_in.put_nowait(msg.data)
                    self.usage.audio_in_seconds += len(msg.data) / 2 / SAMPLE_RATE
                except p.ProtocolError as exc:
                    self._emit(exc.to_event())
                except asyncio.QueueFull:
                    self._rate_limited()
            elif msg.type == WSMsgType.TEXT:
                try:
                    await self._on_client_event(p.parse_client_event(msg.data))
                except p.ProtocolError as exc:
                    self._emit(exc.to_event())
        raise _Dropped("client disconnected")

    def _rate_limited(self) -> None:
        now = self.clock()
        if now - self._last_rate_error >= 1.0:  # one error a second, not one per frame
            self._last_rate_error = now
            message = "audio arrives faster than real time; frames dropped"
            self._emit(p.ErrorEvent(code="rate_limited", message=message))

    async def _on_client_event(self, event: Any) -> None:
        if isinstance(event, p.PingEvent):
            self._emit(p.PongEvent(event_id=event.event_id))
        elif isinstance(event, p.ResponseCancelEvent):
            if event.response_id in (None, self.out.open_response):
                self._cancel_response("client_cancel")
        elif isinstance(event, p.ExamRepeatEvent):
            self._cancel_response("client_cancel")
            await self._carry_out(self.flow.answer("could you repeat the question", 0.0), None)
        elif isinstance(event, p.SessionEndEvent):
            self._cancel_response("client_cancel")
            await self._end("student ended the session")
        elif isinstance(event, p.InputAudioBufferClearEvent):
            self._heard, self._heard_from_ms = [], self.turns.now_ms
            self.turns.reset()
            self._emit(p.InputAudioBufferClearedEvent())
        elif isinstance(event, p.SessionUpdateEvent):
            self._audit("client.info", details=dict(event.client_info))

    # --- turn-taking -------------------------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            try:
                async with asyncio.timeout(TICK_S):
                    data = await self.audio_in.get()
            except TimeoutError:
                data = b""
            if data:
                self._pcm = np.concatenate([self._pcm, pcm16_to_float(data)])
            while len(self._pcm) >= VAD_CHUNK:
                chunk, self._pcm = self._pcm[:VAD_CHUNK], self._pcm[VAD_CHUNK:]
                self._heard.append(chunk)
                for event in self.turns.push(self.vad.probability(chunk)):
                    await self._on_turn(event)
            if self.clock() - self._last_tick >= TICK_S:
                self._last_tick = self.clock()
                await self._tick()

    async def _tick(self) -> None:
        """Time limit and nudges, checked with or without audio arriving."""
        if self.flow.phase != "listening" or self.ending:
            return
        if self.flow.time_left() <= 0 and self.turns.in_speech:
            await self._answer_ended(self.turns.cut())  # time is up mid-answer: take what was said
            return
        decisions: list[Decision] = []
        if self._quiet_since is not None and not self._speaking and not self.turns.in_speech:
            decisions += self.flow.silence(self.clock() - self._quiet_since)
        decisions += self.flow.tick()
        if decisions:
            self._cancel_response("superseded")
            await self._carry_out(decisions, None)

    def _audio(self, start_ms: int, end_ms: int) -> np.ndarray:
        first = max(0, (start_ms - self._heard_from_ms) * SAMPLE_RATE // 1000 // VAD_CHUNK)
        last = max(first + 1, (end_ms - self._heard_from_ms) * SAMPLE_RATE // 1000 // VAD_CHUNK)
        chunks = self._heard[first:last]
        return np.concatenate(chunks) if chunks else np.zeros(VAD_CHUNK, np.float32)

    async def _on_turn(self, event: Any) -> None:
        if isinstance(event, SpeechStarted):
            self._quiet_since = None
            self._emit(
                p.SpeechStartedEvent(item_id=f"item_{event.at_ms}", audio_start_ms=event.at_ms)
            )
        elif isinstance(event, BargeIn) and self._speaking:
            BARGE_INS.inc()
            self._interrupted = list(self._queued.values())
            self._cancel_response("barge_in")
        elif isinstance(event, Paused) and self.turns.speech_start_ms is not None:
            # Transcribe during the silence: if the answer really ended, the text is ready.
            start = self.turns.speech_start_ms
            audio = self._audio(start, event.at_ms)
            language = self.cfg.models.asr.language
            self._spec = (start, asyncio.ensure_future(self.hub.asr.transcribe(audio, language)))
        elif isinstance(event, Resumed) and self._spec is not None:
            self._spec[1].cancel()
            self._spec = None
        elif isinstance(event, SpeechStopped):
            await self._answer_ended(event)

    async def _answer_ended(self, event: SpeechStopped) -> None:
        decided = self.clock()
        stages = TurnStages(endpoint_wait=float(self.turns.now_ms - event.end_ms))
        self._emit(
            p.SpeechStoppedEvent(item_id=f"item_{event.start_ms}", audio_end_ms=event.end_ms)
        )
        spec, self._spec = self._spec, None
        if spec is not None and spec[0] == event.start_ms and not spec[1].cancelled():
            stages.asr_speculative = True
            transcript = await spec[1]
        else:
            if spec is not None:
                spec[1].cancel()
            audio = self._audio(event.start_ms, event.end_ms)
            transcript = await self.hub.asr.transcribe(audio, self.cfg.models.asr.language)
        stages.asr = (self.clock() - decided) * 1000
        self._heard, self._heard_from_ms = [], self.turns.now_ms
        self._quiet_since = self.clock()
        question = self.flow.current
        duration = (event.end_ms - event.start_ms) / 1000
        decisions = self.flow.answer(transcript.text, duration)
        if any(isinstance(d, Ignored) for d in decisions):
            # Nothing to answer. If the student's noise cut the examiner off, pick up again.
            resume, self._interrupted = self._interrupted, []
            if resume and not self._speaking:
                self._start_response(resume, None)
            return
        self._interrupted = []
        if question is not None and any(isinstance(d, Evaluate) for d in decisions):
            self._emit(
                p.TranscriptionCompletedEvent(
                    item_id=f"item_{event.start_ms}",
                    transcript=transcript.text,
                    confidence=transcript.confidence,
                    question_number=question.number,
                )
            )
        self._turn_end = decided
        self._turn_latency = asyncio.get_running_loop().create_future()
        self._stages = stages
        asked = question.text if question is not None else ""
        await self._carry_out(decisions, _Heard(asked, transcript, duration, stages))

    # --- decisions, responses --------------------------------------------------------------

    async def _carry_out(self, decisions: list[Decision], heard: _Heard | None) -> None:
        says = [d for d in decisions if isinstance(d, Say)]
        for d in decisions:
            if isinstance(d, Evaluate) and self._outer is not None:
                task = self._outer.create_task(self._score(d, heard, self._turn_latency))
                self._scoring.add(task)
                task.add_done_callback(self._scoring.discard)
        if says:
            self._start_response(says, heard)
        finish = next((d for d in decisions if isinstance(d, Finish)), None)
        if finish is not None and self._tg is not None:
            self.ending = True
            self._tg.create_task(self._close_when_spoken(finish), name="close")

    @property
    def _speaking(self) -> bool:
        """The examiner is talking, or about to (a reply is being made or queued)."""
        running = self._response is not None and not self._response.done()
        return running or self.out.busy

    def _start_response(self, says: list[Say], heard: _Heard | None) -> None:
        self._cancel_response("barge_in")  # the student spoke over it; they were not listening
        assert self._tg is not None
        self._response = self._tg.create_task(self._respond(says, heard), name="respond")

    async def _respond(self, says: list[Say], heard: _Heard | None) -> None:
        """One protocol response per spoken part (acknowledgement, question, ...), in order."""
        stages = heard.stages if heard is not None else None
        for say in says:
            rid = f"resp_{next(self._ids)}"
            self._queued[rid] = say
            opening: list[p.WireEvent] = []
            q = self.flow.current
            if say.kind in ("question", "repeat") and q is not None:
                total = len(self.r.questions)
                opening.append(p.ExamQuestionEvent(number=q.number, total=total, text=q.text))
                self._enqueue(ops.session_update(self.r.session_id, current_question=q.number))
                self._changed()
            opening.append(p.ResponseCreatedEvent(response_id=rid, kind=say.kind))
            await self.out.start_response(rid, opening)
            items: AsyncIterator[tuple[str, bytes]]
            ack_by_llm = self.cfg.exam.acknowledgement == "llm"
            if say.kind == "acknowledge" and ack_by_llm and heard and heard.transcript.text:
                answer = heard.transcript.text
                items = self.speaker.acknowledge(heard.question, answer, say.text, stages)
            else:
                items = self.speaker.say(say.text, stages)
            async for text, pcm in items:
                await self.out.put_audio(rid, text, pcm)
            await self.out.end_response(rid)
            stages = None

    def _cancel_response(self, reason: p.CancelReason) -> None:
        if not self._speaking:
            return
        if self._response is not None:
            self._response.cancel()
            self._response = None
        self._queued.clear()
        heard, audio_ms = self.out.cancel()
        self.turns.examiner_stopped()
        self._quiet_since = self.clock()
        if heard is not None:  # responses the client never heard of vanish silently
            self._emit(
                p.ResponseCancelledEvent(response_id=heard, reason=reason, audio_ms=audio_ms)
            )

    def _first_audio(self, _rid: str) -> None:
        self.turns.examiner_started()
        if self._turn_end is None:
            return
        latency = (self.clock() - self._turn_end) * 1000
        self._turn_end = None
        self.latencies.append(latency)
        if self._turn_latency is not None and not self._turn_latency.done():
            self._turn_latency.set_result(latency)
        if self._stages is not None:
            question = self.flow.current.number if self.flow.current else None
            self._stages.report(self.r.code, question, latency)
            self._done_stages = (round(latency, 1), self._stages)
            self._stages = None
        self._changed()

    def _response_done(self, rid: str, audio_ms: int) -> None:
        self._queued.pop(rid, None)
        latency, stages = self._done_stages if self._done_stages else (None, None)
        self._done_stages = None
        self._emit(
            p.ResponseDoneEvent(
                response_id=rid,
                latency_ms=latency,
                audio_ms=audio_ms,
                stages_ms=stages.as_dict() if stages else None,
            )
        )
        self.turns.examiner_stopped()
        # Silence is counted from when the student has heard the examiner out.
        self._quiet_since = max(self.clock(), self.out.playing_until)

    # --- the end -----------------------------------------------------------------------------

    async def _end(self, reason: str) -> None:
        self._cancel_response("superseded")
        decisions = self.flow.terminate(reason)
        if decisions:
            await self._carry_out(decisions, None)

    async def _close_when_spoken(self, finish: Finish) -> None:
        """After the closing words are out and every answer is scored: the result, then end."""
        if self._response is not None:
            await asyncio.wait({self._response})
        await self.out.audio.join()
        totals = await self._wrap_up(finish.status, finish.reason)
        self._emit(
            p.ExamCompletedEvent(
                status=finish.status,
                total_score=totals.total_score,
                max_score=totals.max_score,
                percentage=totals.percentage,
                grade=totals.grade,
                passed=totals.passed,  # type: ignore[arg-type]
            )
        )
        reason: p.EndReason = (
            "server_shutdown" if self._stop_reason == "server_shutdown" else finish.status
        )
        self._emit(p.SessionEndedEvent(reason=reason))
        async with asyncio.timeout(self.cfg.server.send_timeout_seconds):
            await self.out.control.join()
        code = p.CloseCode.GOING_AWAY if reason == "server_shutdown" else p.CloseCode.NORMAL
        await self.ws.close(code=code)
        raise _Over(finish.status)

    async def _end_offline(self, reason: str) -> None:
        """The student is gone (grace period over, or stopped while away)."""
        self.flow.terminate(reason)
        await self._wrap_up("terminated", reason)

    async def _wrap_up(self, status: str, reason: str) -> Any:
        if self._scoring:
            await asyncio.wait(self._scoring, timeout=SCORING_TIMEOUT_S)
        self._finish_db(status, reason)
        return session_totals(self._scored, len(self.r.questions), self.cfg.exam.max_score)

    def _finish_db(self, status: str, reason: str) -> None:
        """The session's end and its result, through the writer (after every evaluation, so
        the result computed in the database sees them all)."""
        self._finished = True
        lat = self.latencies
        self._enqueue(
            ops.session_update(
                self.r.session_id,
                status=status,
                end_time=utcnow(),
                avg_latency_ms=sum(lat) / len(lat) if lat else None,
                max_latency_ms=max(lat, default=None),
            )
        )
        usage = self.usage.as_dict()
        if self.connected:
            usage["audio_out_seconds"] = round(
                self.usage.audio_out_seconds + self.out.audio_seconds, 2
            )
        extra = {"usage": usage, "end_reason": reason}
        self._enqueue(
            ops.compute_result(
                self.r.session_id, len(self.r.questions), self.cfg.exam.max_score, extra
            )
        )
        self._audit(f"session.{status}", details={"reason": reason})
        SESSIONS_ENDED.labels(status).inc()
        self._changed()

    # --- scoring (off the voice path) --------------------------------------------------------

    async def _score(
        self, d: Evaluate, heard: _Heard | None, latency_f: asyncio.Future[float] | None
    ) -> None:
        transcript, duration = (heard.transcript, heard.duration_s) if heard else (None, 0.0)
        scored = await score_answer(self._scoring_ctx, d, transcript, duration, latency_f)
        if scored is not None:
            self._scored.append(scored)

    def _emit_if_connected(self, event: p.WireEvent) -> None:
        """Scores are sent when a student is there to see them (they are in the result too)."""
        if self.connected:
            with contextlib.suppress(SlowConsumer):  # its own send timeout ends the connection
                self._emit(event)

    # --- small things ------------------------------------------------------------------------

    def _emit(self, event: p.WireEvent) -> None:
        if isinstance(event, p.ErrorEvent):
            WS_ERRORS.labels(event.code).inc()
        self.out.emit(event)

    def _enqueue(self, op: ops.Op) -> None:
        started = time.perf_counter()
        self.writer.enqueue(op)
        if getattr(self, "_stages", None) is not None:
            self._stages.db_enqueue += (time.perf_counter() - started) * 1000  # type: ignore[union-attr]

    def _audit(self, action: str, details: dict[str, Any] | None = None) -> None:
        self._enqueue(
            ops.upsert(
                "audit_logs",
                session_id=self.r.session_id,
                user_id=self.r.user_id,
                action=action,
                resource_type="session",
                resource_id=self.r.code,
                details=details or {},
            )
        )

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
        }

    def _changed(self) -> None:
        self.on_change(self.summary())


async def _refuse(ws: web.WebSocketResponse, code: p.ErrorCode, message: str) -> None:
    if not ws.closed:
        await ws.send_str(p.dump(p.ErrorEvent(code=code, message=message)))
        await ws.close(code=p.CLOSE_CODE_FOR[code])
