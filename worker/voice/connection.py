"""One WebSocket of a live viva: receive, turn-taking, replies and sending, in one TaskGroup.

Voice path: the listener (`worker/voice/listener.py`: VAD per 32 ms chunk, each segment
transcribed as the student pauses, the turn policy deciding when a pause is the end) -> at the
end of the answer the exam flow decides at once -> the reply (`worker/voice/replies.py`) streams
out as paced audio (`worker/voice/outbox.py`). A reply to an answer stays tentative until its
question (or follow-up, or closing) has been heard for `turn.commit_after_ms`: if the student
goes on speaking before that, the examiner stops, the flow takes its advance back and the
continuation joins the answer.
Scoring and database writes are handed to the session (`worker/session/viva.py`), which outlives
this connection. Turn latency = end of answer decided -> first examiner audio byte
written to the socket.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from models.base import SAMPLE_RATE, ModelError, pcm16_to_float
from worker import protocol as p
from worker.exam.flow import Decision, Evaluate, Finish, Ignored, Say
from worker.exam.intents import intent_of
from worker.voice.host import Dropped, Heard, Over, SessionHost
from worker.voice.listener import Listener
from worker.voice.metrics import BARGE_INS, SLOW_CONSUMERS, TAKEN_BACK, TurnStages
from worker.voice.outbox import SlowConsumer
from worker.voice.pacing import Bucket
from worker.voice.replies import Replies
from worker.voice.turns import BargeIn, SpeechStarted, SpeechStopped

log = logging.getLogger(__name__)
# Audio waiting for the VAD, in seconds of speech rather than frames (frames may be 20 ms or
# 1 s). It grows only while the listener waits for the answer's transcription (the pacing bucket
# already caps what a client sends at 1.5x real time): a busy ASR must not cost the student the
# words they say meanwhile. 30 s of audio is at most ~1 MB.
AUDIO_QUEUE_SECONDS = 30.0
TICK_S = 0.25  # how often silence (nudges) and time limits are checked without audio
COMMIT_KINDS = ("question", "followup", "closing")  # a reply is heard once these are


@dataclass
class Tentative:
    """A reply to an answer that can still be taken back: its scoring waits for the commit."""

    evaluations: list[Evaluate]
    heard: Heard | None
    latency: asyncio.Future[float] | None
    commit_rid: str | None = None  # the response whose hearing commits it
    timer: asyncio.TimerHandle | None = None
    close: asyncio.Task[None] | None = None  # the end of the exam, if this reply closes it


class Conversation:
    def __init__(
        self, session: SessionHost, ws: web.WebSocketResponse, transport: asyncio.Transport | None
    ):
        # Per connection: the turn detector and audio offsets restart at 0.
        self.s = session
        self.r, self.hub, self.cfg, self.clock = session.r, session.hub, session.cfg, session.clock
        self.flow = session.flow
        self.ws, self.transport = ws, transport
        self._tg: asyncio.TaskGroup | None = None
        self.listener = Listener(self.hub, self.cfg, lambda: self.flow.current)
        self.turns = self.listener.turns
        self.replies = Replies(
            session, ws, self.turns, self._reply_created, self._heard_from, self._reply_done
        )
        self.out = self.replies.out
        self.audio_in: asyncio.Queue[bytes] = asyncio.Queue()
        self._queued_s = 0.0  # seconds of audio in `audio_in`
        self._tentative: Tentative | None = None
        self._continuing = False  # the utterance in progress began while a reply was tentative
        self._quiet_since: float | None = None
        self._last_tick = self.clock()
        self._last_rate_error = 0.0
        server = self.cfg.server
        self._audio_pace = Bucket(server.audio_rate_limit, server.audio_burst_seconds, self.clock)
        self._event_pace = Bucket(server.events_per_second, server.events_burst, self.clock)

    async def run(self, resumed: bool) -> None:
        """Serve this connection until it drops or the session ends."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = self.replies.tg = tg
                self._emit(created_event(self.s, resumed))
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
            self._tg = self.replies.tg = None
            self._commit()  # the student left: the reply to their last answer stands
            self.flow.pause()
            self.s.usage.audio_out_seconds += self.out.audio_seconds
            self.replies.close()
            self.listener.close()

    def stop(self, reason: str) -> None:
        if self._tg is not None:
            self._tg.create_task(self._end(reason), name="stop")

    # --- receive -----------------------------------------------------------------------------

    async def _receive(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                seconds = len(msg.data) / 2 / SAMPLE_RATE
                try:
                    p.check_audio_frame(msg.data)
                    if not self._audio_pace.admit(seconds):
                        raise asyncio.QueueFull  # beyond real time plus the margin: dropped
                    if self._queued_s + seconds > AUDIO_QUEUE_SECONDS:
                        raise asyncio.QueueFull
                    self.audio_in.put_nowait(msg.data)
                    self._queued_s += seconds
                    self.s.usage.audio_in_seconds += seconds
                except p.ProtocolError as exc:
                    self._emit(exc.to_event())
                except asyncio.QueueFull:
                    self._rate_limited("audio arrives faster than real time; frames dropped")
            elif msg.type == WSMsgType.TEXT:
                if not self._event_pace.admit(1):
                    self._rate_limited("too many events; this one was dropped")
                    continue
                try:
                    await self._on_client_event(p.parse_client_event(msg.data))
                except p.ProtocolError as exc:
                    self._emit(exc.to_event())
        raise Dropped("client disconnected")

    def _rate_limited(self, message: str) -> None:
        now = self.clock()
        if now - self._last_rate_error >= 1.0:  # one error a second, not one per frame
            self._last_rate_error = now
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
            self.s.client_info(dict(event.client_info))

    # --- turn-taking -------------------------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            try:
                async with asyncio.timeout(TICK_S):
                    data = await self.audio_in.get()
                    self._queued_s = max(0.0, self._queued_s - len(data) / 2 / SAMPLE_RATE)
            except TimeoutError:
                data = b""
            if data:
                for event in await self.listener.hear(pcm16_to_float(data)):
                    await self._on_turn(event)
            if self.clock() - self._last_tick >= TICK_S:
                self._last_tick = self.clock()
                await self._tick()

    async def _tick(self) -> None:
        """Time limit and nudges, checked with or without audio arriving."""
        if self.flow.phase != "listening" or self.s.ending:
            return
        idle_s = self.cfg.limits.idle_session_seconds
        if self.clock() - self.s.last_speech_at >= idle_s and not self.turns.in_speech:
            await self._end(f"the student said nothing for {idle_s:g} s")  # the slot comes back
            return
        if self.flow.time_left() <= 0 and self.turns.in_speech:
            await self._answer_ended(self.turns.cut())  # time is up mid-answer: take what was said
            return
        if self._tentative is not None and self.turns.in_speech:
            return  # a continuation is being spoken: the flow must not move under it
        decisions: list[Decision] = []
        if self._quiet_since is not None and not self.replies.speaking and not self.turns.in_speech:
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
            self.s.last_speech_at = self.clock()
            self._continuing = self._tentative is not None
            self.listener.carry(self.flow.pending_text)
            self._emit(
                p.SpeechStartedEvent(item_id=f"item_{event.at_ms}", audio_start_ms=event.at_ms)
            )
        elif isinstance(event, BargeIn) and self.replies.speaking:
            BARGE_INS.inc()
            self.replies.barge_in()
            self._after_cut()
        elif isinstance(event, SpeechStopped):
            await self._answer_ended(event)

    async def _answer_ended(self, event: SpeechStopped) -> None:
        decided = self.clock()
        stages = TurnStages(endpoint_wait=float(self.turns.now_ms - event.end_ms))
        self._emit(
            p.SpeechStoppedEvent(item_id=f"item_{event.start_ms}", audio_end_ms=event.end_ms)
        )
        try:
            answer = await self.listener.answer(event)
        except ModelError as exc:  # the model refused this answer's audio: this turn only
            log.warning("session %s: answer not transcribed: %s", self.r.code, exc)
            self._quiet_since = self.clock()
            message = "your answer could not be transcribed; please say it again"
            self._emit(p.ErrorEvent(code="transcription_failed", message=message))
            return
        transcript, duration = answer.transcript, answer.duration_s
        stages.asr = (self.clock() - decided) * 1000
        stages.asr_speculative = answer.ready_at_end
        self._quiet_since = self.clock()
        continuing, self._continuing = self._continuing, False
        listener_noise = not transcript.text.strip() or intent_of(transcript.text) == "backchannel"
        if listener_noise and (continuing or self.replies.interrupted):
            self.replies.resume_interrupted()  # "mm-hmm" or a cough over the examiner: go on
            return
        if continuing and self._tentative is not None:
            self._take_back()
        else:
            self._commit()
        question = self.flow.current
        decisions = self.flow.answer(transcript.text, duration)
        self.s.checkpoint()  # held speech is part of the checkpoint too
        if any(isinstance(d, Ignored) for d in decisions):
            self.replies.resume_interrupted()  # nothing to answer yet; if the student cut in, go on
            return
        self.replies.forget_interrupted()
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
        self.replies.begin_turn(decided, stages)
        asked = question.text if question is not None else ""
        await self._carry_out(decisions, Heard(asked, transcript, duration, stages))

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
        self.replies.forget_interrupted()
        question = self.replies.announce_question()  # back to what the continuation answers
        if question is not None:
            self._emit(question)
        self.s.checkpoint()

    def _commit(self) -> None:
        """The reply to the last answer has been heard (or superseded): score the answer."""
        tentative, self._tentative = self._tentative, None
        self.flow.commit()
        if tentative is None:
            return
        self.s.checkpoint()
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
        latency = self.replies.turn_latency if heard is not None else None
        if self.flow.tentative:
            self._tentative = Tentative(evaluations, heard, latency)
        else:
            for d in evaluations:
                self.s.score_later(d, heard, latency)
        if says:
            self.replies.start(says, heard)
        self.s.checkpoint()
        finish = next((d for d in decisions if isinstance(d, Finish)), None)
        if finish is not None and self._tg is not None:
            self.s.ending = True
            close = self._tg.create_task(self._close_when_spoken(finish), name="close")
            if self._tentative is not None:
                self._tentative.close = close

    def _cancel_response(self, reason: p.CancelReason) -> None:
        if self.replies.cancel(reason):
            self._after_cut()

    def _after_cut(self) -> None:
        self._quiet_since = self.clock()
        if self._tentative is not None and self._tentative.timer is not None:
            # What would commit the reply was not heard out: it commits when said again.
            self._tentative.timer.cancel()
            self._tentative.timer = None

    def _reply_created(self, rid: str, say: Say) -> None:
        if self._tentative is not None and say.kind in COMMIT_KINDS:
            self._tentative.commit_rid = rid

    def _reply_done(self, rid: str) -> None:
        if self._tentative is not None and self._tentative.commit_rid == rid:
            self._commit()
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
        await self.replies.finished()
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
        self.replies.emit(event)


def created_event(s: SessionHost, resumed: bool) -> p.SessionCreatedEvent:
    t, e = s.cfg.turn, s.cfg.exam
    return p.SessionCreatedEvent(
        session_code=s.r.code,
        question_count=len(s.r.questions),
        output_audio_format=p.AudioFormat(sample_rate=s.hub.tts.sample_rate),
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
