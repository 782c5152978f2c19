"""One WebSocket of a live viva: receive, turn-taking, replies and sending, in one TaskGroup.

Voice path: the listener (`worker/listener.py`: VAD per 32 ms chunk, each segment transcribed
as the student pauses, the turn policy deciding when a pause is the end) -> at the end of the
answer the exam flow decides at once -> the reply streams out as paced audio
(`worker/outbox.py`). A reply to an answer stays tentative until its question (or follow-up, or
closing) has been heard for `turn.commit_after_ms`: if the student goes on speaking before that,
the examiner stops, the flow takes its advance back and the continuation joins the answer.
Scoring and database writes are handed to the session (`worker/session.py`), which outlives
this connection. Turn latency = end of answer decided -> first examiner audio byte
written to the socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from db import ops
from models.base import SAMPLE_RATE, Transcript, pcm16_to_float
from worker import protocol as p
from worker.exam import Decision, Evaluate, Finish, Ignored, Say
from worker.intents import intent_of
from worker.listener import Listener
from worker.metrics import BARGE_INS, SLOW_CONSUMERS, TAKEN_BACK, WS_ERRORS, TurnStages
from worker.outbox import Outbox, SlowConsumer
from worker.turns import BargeIn, SpeechStarted, SpeechStopped

if TYPE_CHECKING:
    from worker.session import VivaSession

log = logging.getLogger(__name__)
AUDIO_QUEUE_FRAMES = 256  # client frames waiting for the VAD; beyond that the client is flooding
TICK_S = 0.25  # how often silence (nudges) and time limits are checked without audio
COMMIT_KINDS = ("question", "followup", "closing")  # a reply is heard once these are


@dataclass
class Heard:
    question: str  # the text of the question (or follow-up) this answered
    transcript: Transcript
    duration_s: float
    stages: TurnStages


@dataclass
class Tentative:
    """A reply to an answer that can still be taken back: its scoring waits for the commit."""

    evaluations: list[Evaluate]
    heard: Heard | None
    latency: asyncio.Future[float] | None
    commit_rid: str | None = None  # the response whose hearing commits it
    timer: asyncio.TimerHandle | None = None
    close: asyncio.Task[None] | None = None  # the end of the exam, if this reply closes it


class Dropped(Exception):
    """This connection ended (the student left); the session lives on."""


class Over(Exception):
    """The session ended (completed, terminated, or stopped)."""


class Conversation:
    def __init__(
        self, session: VivaSession, ws: web.WebSocketResponse, transport: asyncio.Transport | None
    ):
        # Per connection: the turn detector and audio offsets restart at 0.
        self.s = session
        self.r, self.hub, self.cfg, self.clock = session.r, session.hub, session.cfg, session.clock
        self.flow, self.speaker = session.flow, session.speaker
        self.ws, self.transport = ws, transport
        self._tg: asyncio.TaskGroup | None = None
        self.out = Outbox(
            ws,
            self.hub.tts.sample_rate,
            self.clock,
            self.cfg.server.send_timeout_seconds,
            self._first_audio,
            self._response_done,
        )
        self.listener = Listener(self.hub, self.cfg, lambda: self.flow.current)
        self.turns = self.listener.turns
        self.audio_in: asyncio.Queue[bytes] = asyncio.Queue(AUDIO_QUEUE_FRAMES)
        self._tentative: Tentative | None = None
        self._continuing = False  # the utterance in progress began while a reply was tentative
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

    async def run(self, resumed: bool) -> None:
        """Serve this connection until it drops or the session ends."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._emit(self._created_event(resumed))
                tg.create_task(self._receive(), name="receive")
                tg.create_task(self._listen(), name="turns")
                tg.create_task(self.out.run(), name="send")
                if self.s.stop_reason is not None:  # stopped while this connection was opening
                    await self._end(self.s.stop_reason)
                elif resumed:
                    self.s.audit("session.resumed")
                    await self._carry_out(self.flow.resume(), None)
                else:
                    await self._carry_out(self.flow.start(), None)
        except* (Dropped, Over, ConnectionResetError):
            pass  # ConnectionResetError: the socket closed under a send
        except* SlowConsumer as group:
            log.warning("session %s: %s; disconnecting", self.r.code, group.exceptions[0])
            SLOW_CONSUMERS.inc()
            # Dropped, not closed: a close frame would only queue behind what the client is not
            # reading, and aiohttp's drain, once the send timeout has cancelled it, fails every
            # later write on this connection with CancelledError (it shares one waiter).
            if self.transport is not None:
                self.transport.abort()
        finally:
            self._tg = None
            self._commit()  # the student left: the reply to their last answer stands
            self.s.usage.audio_out_seconds += self.out.audio_seconds
            if self._turn_latency is not None and not self._turn_latency.done():
                self._turn_latency.cancel()
            self.listener.close()

    def stop(self, reason: str) -> None:
        if self._tg is not None:
            self._tg.create_task(self._end(reason), name="stop")

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
            reconnect_grace_seconds=e.reconnect_grace_seconds,
        )

    # --- receive -----------------------------------------------------------------------------

    async def _receive(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                try:
                    p.check_audio_frame(msg.data)
                    self.audio_in.put_nowait(msg.data)
                    self.s.usage.audio_in_seconds += len(msg.data) / 2 / SAMPLE_RATE
                except p.ProtocolError as exc:
                    self._emit(exc.to_event())
                except asyncio.QueueFull:
                    self._rate_limited()
            elif msg.type == WSMsgType.TEXT:
                try:
                    await self._on_client_event(p.parse_client_event(msg.data))
                except p.ProtocolError as exc:
                    self._emit(exc.to_event())
        raise Dropped("client disconnected")

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
            self.listener.clear()
            self._emit(p.InputAudioBufferClearedEvent())
        elif isinstance(event, p.SessionUpdateEvent):
            self.s.audit("client.info", details=dict(event.client_info))

    # --- turn-taking -------------------------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            try:
                async with asyncio.timeout(TICK_S):
                    data = await self.audio_in.get()
            except TimeoutError:
                data = b""
            if data:
                for event in self.listener.feed(pcm16_to_float(data)):
                    await self._on_turn(event)
            if self.clock() - self._last_tick >= TICK_S:
                self._last_tick = self.clock()
                await self._tick()

    async def _tick(self) -> None:
        """Time limit and nudges, checked with or without audio arriving."""
        if self.flow.phase != "listening" or self.s.ending:
            return
        if self.flow.time_left() <= 0 and self.turns.in_speech:
            await self._answer_ended(self.turns.cut())  # time is up mid-answer: take what was said
            return
        if self._tentative is not None and self.turns.in_speech:
            return  # a continuation is being spoken: the flow must not move under it
        decisions: list[Decision] = []
        if self._quiet_since is not None and not self._speaking and not self.turns.in_speech:
            decisions += self.flow.silence(self.clock() - self._quiet_since)
        decisions += self.flow.tick()
        if decisions:
            if not self.flow.tentative:  # a tick or a nudge: the earlier reply stands
                self._commit()
            self._cancel_response("superseded")
            await self._carry_out(decisions, None)

    async def _on_turn(self, event: Any) -> None:
        if isinstance(event, SpeechStarted):
            self._quiet_since = None
            self._continuing = self._tentative is not None
            self.listener.carry(self.flow.pending_text)
            self._emit(
                p.SpeechStartedEvent(item_id=f"item_{event.at_ms}", audio_start_ms=event.at_ms)
            )
        elif isinstance(event, BargeIn) and self._speaking:
            BARGE_INS.inc()
            self._interrupted = list(self._queued.values())
            self._cancel_response("barge_in")
        elif isinstance(event, SpeechStopped):
            await self._answer_ended(event)

    async def _answer_ended(self, event: SpeechStopped) -> None:
        decided = self.clock()
        stages = TurnStages(endpoint_wait=float(self.turns.now_ms - event.end_ms))
        self._emit(
            p.SpeechStoppedEvent(item_id=f"item_{event.start_ms}", audio_end_ms=event.end_ms)
        )
        answer = await self.listener.answer(event)
        transcript, duration = answer.transcript, answer.duration_s
        stages.asr = (self.clock() - decided) * 1000
        stages.asr_speculative = answer.ready_at_end
        self._quiet_since = self.clock()
        continuing, self._continuing = self._continuing, False
        if continuing and self._tentative is not None:
            if not transcript.text.strip() or intent_of(transcript.text) == "backchannel":
                self._resume_interrupted()  # "mm-hmm" over the reply: it goes on
                return
            self._take_back()
        else:
            self._commit()
        question = self.flow.current
        decisions = self.flow.answer(transcript.text, duration)
        if any(isinstance(d, Ignored) for d in decisions):
            self._resume_interrupted()  # nothing to answer yet; if the student cut in, go on
            return
        self._interrupted = []
        if question is not None and any(isinstance(d, Evaluate) for d in decisions):
            self._emit(
                p.TranscriptionCompletedEvent(
                    item_id=f"item_{event.start_ms}",
                    # The whole answer: with what was held or taken back before this turn.
                    transcript=self.flow.pending_text or transcript.text,
                    confidence=transcript.confidence,
                    question_number=question.number,
                )
            )
        self._turn_end = decided
        self._turn_latency = asyncio.get_running_loop().create_future()
        self._stages = stages
        asked = question.text if question is not None else ""
        await self._carry_out(decisions, Heard(asked, transcript, duration, stages))

    def _resume_interrupted(self) -> None:
        resume, self._interrupted = self._interrupted, []
        if resume and not self._speaking:
            self._start_response(resume, None)

    # --- tentative replies -------------------------------------------------------------------

    def _take_back(self) -> None:
        """The student went on after the examiner began replying: stop, and undo the reply."""
        tentative, self._tentative = self._tentative, None
        if tentative is None or not self.flow.take_back():
            return
        TAKEN_BACK.inc()
        if tentative.timer is not None:
            tentative.timer.cancel()
        if tentative.close is not None:
            tentative.close.cancel()
            self.s.ending = False
        if tentative.latency is not None and not tentative.latency.done():
            tentative.latency.cancel()
        self._cancel_response("barge_in")
        self._interrupted = []
        q = self.flow.current
        if q is not None:  # back to the question the continuation answers
            total = len(self.r.questions)
            self._emit(p.ExamQuestionEvent(number=q.number, total=total, text=q.text))
            self._enqueue(ops.session_update(self.r.session_id, current_question=q.number))
            self.s.changed()

    def _commit(self) -> None:
        """The reply to the last answer has been heard (or superseded): score the answer."""
        tentative, self._tentative = self._tentative, None
        self.flow.commit()
        if tentative is None:
            return
        if tentative.timer is not None:
            tentative.timer.cancel()
        for d in tentative.evaluations:
            self.s.score_later(d, tentative.heard, tentative.latency)

    def _heard_from(self, rid: str) -> None:
        """`rid` started playing: once it has played commit_after_ms, the reply is heard."""
        tentative = self._tentative
        if tentative is not None and tentative.commit_rid == rid and tentative.timer is None:
            delay = self.cfg.turn.commit_after_ms / 1000
            tentative.timer = asyncio.get_running_loop().call_later(delay, self._commit)

    # --- decisions, responses --------------------------------------------------------------

    async def _carry_out(self, decisions: list[Decision], heard: Heard | None) -> None:
        says = [d for d in decisions if isinstance(d, Say)]
        evaluations = [d for d in decisions if isinstance(d, Evaluate)]
        latency = self._turn_latency if heard is not None else None
        if self.flow.tentative:
            self._tentative = Tentative(evaluations, heard, latency)
        else:
            for d in evaluations:
                self.s.score_later(d, heard, latency)
        if says:
            self._start_response(says, heard)
        finish = next((d for d in decisions if isinstance(d, Finish)), None)
        if finish is not None and self._tg is not None:
            self.s.ending = True
            close = self._tg.create_task(self._close_when_spoken(finish), name="close")
            if self._tentative is not None:
                self._tentative.close = close

    @property
    def _speaking(self) -> bool:
        """The examiner is talking, or about to (a reply is being made or queued)."""
        running = self._response is not None and not self._response.done()
        return running or self.out.busy

    def _start_response(self, says: list[Say], heard: Heard | None) -> None:
        self._cancel_response("barge_in")  # the student spoke over it; they were not listening
        assert self._tg is not None
        self._response = self._tg.create_task(self._respond(says, heard), name="respond")

    async def _respond(self, says: list[Say], heard: Heard | None) -> None:
        """One protocol response per spoken part (acknowledgement, question, ...), in order."""
        stages = heard.stages if heard is not None else None
        for say in says:
            rid = f"resp_{next(self.s.response_ids)}"
            self._queued[rid] = say
            opening: list[p.WireEvent] = []
            q = self.flow.current
            if say.kind in ("question", "repeat") and q is not None:
                total = len(self.r.questions)
                opening.append(p.ExamQuestionEvent(number=q.number, total=total, text=q.text))
                self._enqueue(ops.session_update(self.r.session_id, current_question=q.number))
                self.s.changed()
            opening.append(p.ResponseCreatedEvent(response_id=rid, kind=say.kind))
            if self._tentative is not None and say.kind in COMMIT_KINDS:
                self._tentative.commit_rid = rid
            await self.out.start_response(rid, opening)
            items: AsyncIterator[tuple[str, bytes]]
            ack_by_llm = self.cfg.exam.acknowledgement == "llm"
            if say.kind == "acknowledge" and ack_by_llm and heard and heard.transcript.text:
                answer = heard.transcript.text
                items = self.speaker.acknowledge(heard.question, answer, say.text, stages)
            else:
                fixed = say.kind not in ("followup", "repeat")  # those carry varying words
                items = self.speaker.say(say.text, stages, fixed=fixed)
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
        if self._turn_latency is not None and not self._turn_latency.done():
            # Cut before its first audio: this turn has no latency, and scoring must not wait.
            self._turn_latency.cancel()
            self._turn_end = None
        if self._tentative is not None and self._tentative.timer is not None:
            # What would commit the reply was not heard out: it commits when said again.
            self._tentative.timer.cancel()
            self._tentative.timer = None
        self._queued.clear()
        heard, audio_ms = self.out.cancel()
        self.turns.examiner_stopped()
        self._quiet_since = self.clock()
        if heard is not None:  # responses the client never heard of vanish silently
            self._emit(
                p.ResponseCancelledEvent(response_id=heard, reason=reason, audio_ms=audio_ms)
            )

    def _first_audio(self, rid: str) -> None:
        self.turns.examiner_started()
        self._heard_from(rid)
        if self._turn_end is None:
            return
        latency = (self.clock() - self._turn_end) * 1000
        self._turn_end = None
        self.s.latencies.append(latency)
        if self._turn_latency is not None and not self._turn_latency.done():
            self._turn_latency.set_result(latency)
        if self._stages is not None:
            question = self.flow.current.number if self.flow.current else None
            self._stages.report(self.r.code, question, latency)
            self._done_stages = (round(latency, 1), self._stages)
            self._stages = None
        self.s.changed()

    def _response_done(self, rid: str, audio_ms: int) -> None:
        self._queued.pop(rid, None)
        if self._tentative is not None and self._tentative.commit_rid == rid:
            self._commit()
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

    async def _end(self, reason: str) -> None:
        self._commit()
        self._cancel_response("superseded")
        decisions = self.flow.terminate(reason)
        if decisions:
            await self._carry_out(decisions, None)

    async def _close_when_spoken(self, finish: Finish) -> None:
        """After the closing words are out and every answer is scored: the result, then end."""
        if self._response is not None:
            await asyncio.wait({self._response})
        await self.out.audio.join()
        self._commit()  # the closing words are out: the last answer stands
        totals = await self.s.wrap_up(finish.status, finish.reason)
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
            "server_shutdown" if self.s.stop_reason == "server_shutdown" else finish.status
        )
        self._emit(p.SessionEndedEvent(reason=reason))
        async with asyncio.timeout(self.cfg.server.send_timeout_seconds):
            await self.out.control.join()
        code = p.CloseCode.GOING_AWAY if reason == "server_shutdown" else p.CloseCode.NORMAL
        await self.ws.close(code=code)
        raise Over(finish.status)

    def _emit(self, event: p.WireEvent) -> None:
        if isinstance(event, p.ErrorEvent):
            WS_ERRORS.labels(event.code).inc()
        self.out.emit(event)

    def _enqueue(self, op: ops.Op) -> None:
        """Rows from the voice path; the time it takes is this turn's `db_enqueue` stage."""
        started = time.perf_counter()
        self.s.enqueue(op)
        if self._stages is not None:
            self._stages.db_enqueue += (time.perf_counter() - started) * 1000
