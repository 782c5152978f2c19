"""One live viva over one WebSocket: receive, turn-taking, responses and sending, in one
TaskGroup; pure logic (turns, exam flow, grading) is called, never duplicated, here.

Voice path: VAD per 32 ms chunk -> speculative transcription when the student pauses -> at the
end of the answer the exam flow decides at once -> the reply streams out as paced audio. Scoring
and every database write happen beside it (evaluator tasks, the write-behind writer).
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
from models.base import SAMPLE_RATE, VAD_CHUNK, Sampling, pcm16_to_float
from models.hub import Hub
from worker import protocol as p
from worker.config import Config
from worker.evaluators import evaluate
from worker.exam import Decision, Evaluate, ExamFlow, Finish, Question, Say
from worker.grading import ScoredAnswer, session_totals
from worker.speaker import Speaker
from worker.turns import (
    BargeIn,
    Paused,
    Resumed,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnSettings,
)

log = logging.getLogger(__name__)
AUDIO_QUEUE_FRAMES = 256  # ~ 8 s of 32 ms client frames; beyond that the client is flooding
PLAYBACK_LEAD_S = 0.25  # examiner audio is sent this far ahead of real time, no further


@dataclass(frozen=True)
class SessionRecord:
    session_id: int
    code: str
    user_id: int
    questions: tuple[Question, ...]


class _Over(Exception):
    """The session ended (completed, terminated, or the client left)."""


class VivaSession:
    def __init__(
        self,
        record: SessionRecord,
        hub: Hub,
        writer: Writer,
        config: Config,
        ws: web.WebSocketResponse,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.r, self.hub, self.writer, self.cfg, self.ws, self.clock = (
            record,
            hub,
            writer,
            config,
            ws,
            clock,
        )
        t = config.turn
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
        self.flow = ExamFlow(
            record.questions, config.exam, clock, nudge_after_seconds=t.nudge_after_seconds
        )
        self.speaker = Speaker(
            hub.llm, hub.tts, Sampling(temperature=config.models.llm.temperature, max_tokens=32)
        )
        self.vad = hub.vad.stream()
        self.audio_in: asyncio.Queue[bytes] = asyncio.Queue(AUDIO_QUEUE_FRAMES)
        self.control: asyncio.Queue[str] = asyncio.Queue()
        self.audio_out: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue(64)
        self._pcm = np.zeros(0, dtype=np.float32)
        self._heard: list[np.ndarray] = []  # every chunk since the last answer ended
        self._heard_from_ms = 0
        self._spec: tuple[int, asyncio.Task[Any]] | None = None
        self._response: asyncio.Task[None] | None = None
        self._response_id: str | None = None
        self._ids = itertools.count(1)
        self._turn_end: float | None = None
        self._turn_latency: asyncio.Future[float] | None = None
        self._unreported_latency: float | None = None  # for the next response.done
        self._scoring: set[asyncio.Task[None]] = set()
        self._scored: list[ScoredAnswer] = []
        self.latencies: list[float] = []
        self._play_until = 0.0
        self._sent_ms = 0.0
        self._tg: asyncio.TaskGroup | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._emit(
            p.SessionCreatedEvent(
                session_code=self.r.code,
                question_count=len(self.r.questions),
                output_audio_format=p.AudioFormat(sample_rate=self.hub.tts.sample_rate),
                turn_detection=p.TurnDetection(
                    threshold=self.cfg.turn.vad_threshold,
                    min_speech_ms=self.cfg.turn.min_speech_ms,
                    silence_duration_ms=self.cfg.turn.end_silence_ms,
                    min_interrupt_ms=self.cfg.turn.min_interrupt_ms,
                    min_answer_seconds=self.cfg.exam.min_answer_duration_seconds,
                    max_answer_seconds=self.cfg.exam.max_question_duration_seconds,
                    nudge_after_seconds=self.cfg.turn.nudge_after_seconds,
                ),
                show_scores=self.cfg.exam.show_scores,
            )
        )
        self.writer.enqueue(
            ops.session_update(self.r.session_id, status="in_progress", start_time=utcnow())
        )
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._receive(), name="receive")
                tg.create_task(self._listen(), name="turns")
                tg.create_task(self._send(), name="send")
                tg.create_task(
                    self.speaker.prepare([q.text for q in self.r.questions]), name="cache"
                )
                await self._carry_out(self.flow.start(), None)
        except* _Over:
            pass
        finally:
            if self.flow.phase != "finished":
                self._finish_db("terminated")

    def _finish_db(self, status: str) -> None:
        lat = self.latencies
        self.writer.enqueue(
            ops.session_update(
                self.r.session_id,
                status=status,
                end_time=utcnow(),
                avg_latency_ms=sum(lat) / len(lat) if lat else None,
                max_latency_ms=max(lat, default=None),
            )
        )
        self.writer.enqueue(
            ops.compute_result(self.r.session_id, len(self.r.questions), self.cfg.exam.max_score)
        )

    # --- receive -----------------------------------------------------------------------------

    async def _receive(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                try:
                    p.check_audio_frame(msg.data)
                    self.audio_in.put_nowait(msg.data)
                except p.ProtocolError as exc:
                    self._emit(exc.to_event())
                except asyncio.QueueFull:
                    self._emit(
                        p.ErrorEvent(
                            code="rate_limited",
                            message="audio arrives faster than real time; frame dropped",
                        )
                    )
            elif msg.type == WSMsgType.TEXT:
                try:
                    await self._on_client_event(p.parse_client_event(msg.data))
                except p.ProtocolError as exc:
                    self._emit(exc.to_event())
        raise _Over("client disconnected")

    async def _on_client_event(self, event: Any) -> None:
        if isinstance(event, p.PingEvent):
            self._emit(p.PongEvent(event_id=getattr(event, "event_id", None)))
        elif isinstance(event, p.ResponseCancelEvent):
            self._cancel_response("client_cancel")
        elif isinstance(event, p.ExamRepeatEvent):
            await self._carry_out(self.flow.answer("could you repeat the question", 0.0), None)
        elif isinstance(event, p.SessionEndEvent):
            await self._carry_out(self.flow.terminate("student ended the session"), None)
        elif isinstance(event, p.InputAudioBufferClearEvent):
            self._heard, self._heard_from_ms = [], self.turns.now_ms
            self.turns.reset()
            self._emit(p.InputAudioBufferClearedEvent())

    # --- turn-taking -------------------------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            data = await self.audio_in.get()
            self._pcm = np.concatenate([self._pcm, pcm16_to_float(data)])
            while len(self._pcm) >= VAD_CHUNK:
                chunk, self._pcm = self._pcm[:VAD_CHUNK], self._pcm[VAD_CHUNK:]
                self._heard.append(chunk)
                for event in self.turns.push(self.vad.probability(chunk)):
                    await self._on_turn(event)
            await self._carry_out(self.flow.tick(), None)

    def _audio(self, start_ms: int, end_ms: int) -> np.ndarray:
        first = max(0, (start_ms - self._heard_from_ms) * SAMPLE_RATE // 1000 // VAD_CHUNK)
        last = max(first + 1, (end_ms - self._heard_from_ms) * SAMPLE_RATE // 1000 // VAD_CHUNK)
        return (
            np.concatenate(self._heard[first:last])
            if self._heard
            else np.zeros(VAD_CHUNK, np.float32)
        )

    async def _on_turn(self, event: Any) -> None:
        if isinstance(event, SpeechStarted):
            self._emit(
                p.SpeechStartedEvent(item_id=f"item_{event.at_ms}", audio_start_ms=event.at_ms)
            )
        elif isinstance(event, BargeIn) and self._response is not None:
            self._cancel_response("barge_in")
        elif isinstance(event, Paused) and self.turns.in_speech:
            audio = self._audio(self.turns.speech_start_ms or 0, event.at_ms)
            task = asyncio.ensure_future(
                self.hub.asr.transcribe(audio, self.cfg.models.asr.language)
            )
            self._spec = (event.at_ms, task)
        elif isinstance(event, Resumed) and self._spec is not None:
            self._spec[1].cancel()
            self._spec = None
        elif isinstance(event, SpeechStopped):
            await self._answer_ended(event)

    async def _answer_ended(self, event: SpeechStopped) -> None:
        self._turn_end = self.clock()
        self._turn_latency = asyncio.get_running_loop().create_future()
        self._emit(
            p.SpeechStoppedEvent(item_id=f"item_{event.start_ms}", audio_end_ms=event.end_ms)
        )
        audio = self._audio(event.start_ms, event.end_ms)
        if self._spec is not None and self._spec[0] - 32 <= event.end_ms <= self._spec[0] + 32:
            transcript = await self._spec[1]  # the speculative run saw exactly this audio
        else:
            transcript = await self.hub.asr.transcribe(audio, self.cfg.models.asr.language)
        self._spec = None
        self._heard, self._heard_from_ms = [], self.turns.now_ms
        question = self.flow.current
        duration = (event.end_ms - event.start_ms) / 1000
        decisions = self.flow.answer(transcript.text, duration)
        if question is not None and any(isinstance(d, Evaluate) for d in decisions):
            self._emit(
                p.TranscriptionCompletedEvent(
                    item_id=f"item_{event.start_ms}",
                    transcript=transcript.text,
                    confidence=transcript.confidence,
                    question_number=question.number,
                )
            )
        await self._carry_out(decisions, (transcript, duration))

    # --- decisions, responses --------------------------------------------------------------

    async def _carry_out(self, decisions: list[Decision], heard: Any) -> None:
        says: list[Say] = []
        for d in decisions:
            if isinstance(d, Evaluate) and self._tg is not None:
                self._scoring.add(
                    self._tg.create_task(self._score(d, heard, self._turn_latency), name="score")
                )
            elif isinstance(d, Say):
                says.append(d)
            elif isinstance(d, Finish):
                self._finish_db(d.status)
        if says:
            self._start_response(says, heard)
        if any(isinstance(d, Finish) for d in decisions) and self._tg is not None:
            self._tg.create_task(self._close_when_spoken(), name="close")

    def _start_response(self, says: list[Say], heard: Any) -> None:
        self._cancel_response(None)
        assert self._tg is not None
        self._response = self._tg.create_task(self._respond(says, heard), name="respond")

    async def _respond(self, says: list[Say], heard: Any) -> None:
        """One protocol response per spoken part (acknowledgement, question, ...), in order."""
        for say in says:
            rid = f"resp_{next(self._ids)}"
            self._response_id = rid
            if say.kind == "question" and (q := self.flow.current) is not None:
                self._emit(
                    p.ExamQuestionEvent(number=q.number, total=len(self.r.questions), text=q.text)
                )
                self.writer.enqueue(
                    ops.session_update(self.r.session_id, current_question=q.number)
                )
            self._emit(p.ResponseCreatedEvent(response_id=rid, kind=say.kind))
            items: AsyncIterator[tuple[str, bytes]]
            if say.kind == "acknowledge" and heard is not None and heard[0].text:
                items = self.speaker.acknowledge(self._asked_text(), heard[0].text, say.text)
            else:
                items = self.speaker.say(say.text)
            async for text, pcm in items:
                await self.audio_out.put((rid, text, pcm))
            await self.audio_out.put((rid, "", b""))  # end of this response

    def _asked_text(self) -> str:
        q = self.flow.current
        return q.text if q is not None else ""

    def _cancel_response(self, reason: str | None) -> None:
        if self._response is None or self._response.done():
            self._response = None
            return
        self._response.cancel()
        self._response = None
        while not self.audio_out.empty():
            self.audio_out.get_nowait()
        self.turns.examiner_stopped()
        if reason is not None and self._response_id is not None:
            self._emit(
                p.ResponseCancelledEvent(response_id=self._response_id, reason=reason, audio_ms=0)
            )  # type: ignore[arg-type]

    async def _close_when_spoken(self) -> None:
        """After the closing words are out and every answer is scored: the result, then end."""
        if self._response is not None:
            await asyncio.wait({self._response})
        await self.audio_out.join()
        await asyncio.gather(*self._scoring, return_exceptions=True)
        totals = session_totals(self._scored, len(self.r.questions), self.cfg.exam.max_score)
        status = "completed" if self.flow.answered >= len(self.r.questions) else "terminated"
        self._emit(
            p.ExamCompletedEvent(
                status=status,
                total_score=totals.total_score,
                max_score=totals.max_score,
                percentage=totals.percentage,
                grade=totals.grade,
                passed=totals.passed,  # type: ignore[arg-type]
            )
        )
        self._emit(p.SessionEndedEvent(reason=status))
        await self.control.join()
        await self.ws.close(code=p.CloseCode.NORMAL)
        raise _Over("finished")

    # --- scoring (off the voice path) --------------------------------------------------------

    async def _score(
        self, d: Evaluate, heard: Any, latency_f: asyncio.Future[float] | None
    ) -> None:
        transcript, duration = heard if heard is not None else (None, 0.0)
        answer = ops.upsert(
            "answers",
            session_id=self.r.session_id,
            question_bank_id=d.question.id,
            question_number=d.question.number,
            transcribed_text=d.transcript,
            answer_text=d.transcript,
            confidence_score=getattr(transcript, "confidence", None),
            audio_duration_seconds=duration,
        )
        self.writer.enqueue(answer)
        result = await evaluate(
            self.cfg.exam.evaluator,
            d.question,
            d.transcript,
            llm=self.hub.llm,
            threshold=self.cfg.exam.keyword_matching_threshold,
        )
        latency = None
        if latency_f is not None:
            # The turn's latency is known once its first audio left; a barge-in may mean never.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                latency = await asyncio.wait_for(asyncio.shield(latency_f), 30)
        self._scored.append(
            ScoredAnswer(
                d.question.number,
                d.question.text,
                d.transcript,
                result.score_obtained,
                result.max_score,
                result.feedback_type,
                latency,
            )
        )
        self.writer.enqueue(
            ops.upsert(
                "evaluations",
                answer_id=answer.row["id"],
                session_id=self.r.session_id,
                evaluator_type=result.evaluator_type,
                score_obtained=result.score_obtained,
                max_score=result.max_score,
                percentage_correct=result.percentage_correct,
                feedback=result.feedback,
                feedback_type=result.feedback_type,
                matched_keywords=list(result.matched_keywords),
                missing_keywords=list(result.missing_keywords),
                latency_ms=latency,
                processing_time_ms=result.processing_time_ms,
            )
        )
        self.writer.enqueue(
            ops.session_update(self.r.session_id, questions_answered=self.flow.answered)
        )
        if self.cfg.exam.show_scores:
            self._emit(
                p.ExamEvaluationEvent(
                    question_number=d.question.number,
                    score=result.score_obtained,
                    max_score=result.max_score,
                    feedback_type=result.feedback_type,
                    feedback=result.feedback,
                )
            )

    # --- send --------------------------------------------------------------------------------

    def _emit(self, event: p.WireEvent) -> None:
        self.control.put_nowait(p.dump(event))

    async def _send(self) -> None:
        while True:
            await self._drain_control()  # control before data
            try:
                rid, text, pcm = await asyncio.wait_for(self.audio_out.get(), 0.02)
            except TimeoutError:
                continue
            try:
                await self._send_audio(rid, text, pcm)
            finally:
                self.audio_out.task_done()

    async def _drain_control(self) -> None:
        while not self.control.empty():
            await self.ws.send_str(self.control.get_nowait())
            self.control.task_done()

    async def _send_audio(self, rid: str, text: str, pcm: bytes) -> None:
        if not pcm and not text:  # end of response
            done = p.ResponseDoneEvent(
                response_id=rid, latency_ms=self._pop_latency(), audio_ms=int(self._sent_ms)
            )
            self._emit(done)
            self.turns.examiner_stopped()
            self._sent_ms = 0.0
            return
        if text:
            self._emit(p.ResponseTranscriptDeltaEvent(response_id=rid, delta=text))
            await self._drain_control()
        if self._sent_ms == 0:
            self.turns.examiner_started()
        # Pace against the clock: the client buffers at most PLAYBACK_LEAD_S, so a barge-in
        # leaves little queued audio to flush.
        ahead = self._play_until - self.clock() - PLAYBACK_LEAD_S
        if ahead > 0:
            await asyncio.sleep(ahead)
        await self.ws.send_bytes(pcm)
        self._mark_first_audio()
        seconds = len(pcm) / 2 / self.hub.tts.sample_rate
        self._play_until = max(self._play_until, self.clock()) + seconds
        self._sent_ms += seconds * 1000

    def _mark_first_audio(self) -> None:
        if self._turn_end is not None:
            latency = (self.clock() - self._turn_end) * 1000
            self.latencies.append(latency)
            self._turn_end = None
            if self._turn_latency is not None and not self._turn_latency.done():
                self._turn_latency.set_result(latency)
            self._unreported_latency = round(latency, 1)

    def _pop_latency(self) -> float | None:
        latency, self._unreported_latency = self._unreported_latency, None
        return latency
