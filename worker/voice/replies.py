"""The examiner's replies on one connection, and each turn's latency.

A reply is a list of `Say`s (an acknowledgement, then the next question...), made one at a time
into the outbox as one protocol response each; a new reply or a barge-in cuts the one in
progress at once. The turn latency runs from the moment the answer was decided to the first
byte of the reply's audio written to the socket; a reply cut before that has none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from models.scheduler import Priority, at_priority
from worker import protocol as p
from worker.exam.flow import Say
from worker.voice.host import Heard, SessionHost
from worker.voice.metrics import WS_ERRORS, TurnStages
from worker.voice.outbox import Outbox
from worker.voice.turns import TurnDetector


class Replies:
    def __init__(
        self,
        host: SessionHost,
        ws: web.WebSocketResponse,
        turns: TurnDetector,
        on_created: Callable[[str, Say], None],
        on_first_audio: Callable[[str], None],
        on_done: Callable[[str], None],
    ):
        self.s, self.turns, self.clock = host, turns, host.clock
        self._on_created, self._on_first_audio, self._on_done = on_created, on_first_audio, on_done
        self.out = Outbox(
            ws,
            host.hub.tts.sample_rate,
            host.clock,
            host.cfg.server.send_timeout_seconds,
            self._first_audio,
            self._response_done,
        )
        self.tg: asyncio.TaskGroup | None = None  # the connection's, while it runs
        self._response: asyncio.Task[None] | None = None  # producing the reply's audio
        self._queued: dict[str, Say] = {}  # responses made and not yet heard out, in order
        self._interrupted: list[Say] = []  # what a barge-in cut, to resume if it had no words
        self._turn_end: float | None = None
        self.turn_latency: asyncio.Future[float] | None = None
        self._stages: TurnStages | None = None
        self._done_stages: tuple[float, TurnStages] | None = None  # for the next response.done

    @property
    def speaking(self) -> bool:
        """The examiner is talking, or about to (a reply is being made or queued)."""
        running = self._response is not None and not self._response.done()
        return running or self.out.busy

    def begin_turn(self, decided: float, stages: TurnStages) -> None:
        """An answer was decided at `decided`: the next reply's first audio ends its turn."""
        self._turn_end = decided
        self.turn_latency = asyncio.get_running_loop().create_future()
        self._stages = stages

    def start(self, says: list[Say], heard: Heard | None) -> None:
        self.cancel("barge_in")  # the student spoke over it; they were not listening
        assert self.tg is not None
        with at_priority(Priority.FIRST_SPEECH):  # the models serve a waiting student first
            self._response = self.tg.create_task(self._respond(says, heard), name="respond")

    async def finished(self) -> None:
        """The reply in progress is made and all its audio is out."""
        if self._response is not None:
            await asyncio.wait({self._response})
        await self.out.audio.join()

    @property
    def interrupted(self) -> bool:
        """A barge-in cut a reply that has not been resumed or dropped since."""
        return bool(self._interrupted)

    def barge_in(self) -> None:
        self._interrupted = list(self._queued.values())
        self.cancel("barge_in")

    def resume_interrupted(self) -> None:
        """What a barge-in cut, said again (the interruption had nothing to answer)."""
        resume, self._interrupted = self._interrupted, []
        if resume and not self.speaking:
            self.start(resume, None)

    def forget_interrupted(self) -> None:
        self._interrupted = []

    def cancel(self, reason: p.CancelReason) -> bool:
        """Cut the reply in progress; False when there was none."""
        if not self.speaking:
            return False
        if self._response is not None:
            self._response.cancel()
            self._response = None
        if self.turn_latency is not None and not self.turn_latency.done():
            # Cut before its first audio: this turn has no latency, and scoring must not wait.
            self.turn_latency.cancel()
            self._turn_end = None
        self._queued.clear()
        heard, audio_ms = self.out.cancel()
        self.turns.examiner_stopped()
        if heard is not None:  # responses the client never heard of vanish silently
            self.emit(p.ResponseCancelledEvent(response_id=heard, reason=reason, audio_ms=audio_ms))
        return True

    def close(self) -> None:
        if self.turn_latency is not None and not self.turn_latency.done():
            self.turn_latency.cancel()

    def emit(self, event: p.WireEvent) -> None:
        if isinstance(event, p.ErrorEvent):
            WS_ERRORS.labels(event.code).inc()
        self.out.emit(event)

    def checkpoint(self) -> None:
        """The exam's progress written from the voice path; the time it takes is this turn's
        `db_enqueue` stage."""
        started = time.perf_counter()
        self.s.checkpoint()
        if self._stages is not None:
            self._stages.db_enqueue += (time.perf_counter() - started) * 1000

    def announce_question(self) -> p.ExamQuestionEvent | None:
        """The question now asked, as an event, with the session's progress written."""
        q = self.s.flow.current
        if q is None:
            return None
        self.checkpoint()
        self.s.changed()
        return p.ExamQuestionEvent(number=q.number, total=len(self.s.r.questions), text=q.text)

    async def _respond(self, says: list[Say], heard: Heard | None) -> None:
        """One protocol response per spoken part (acknowledgement, question, ...), in order."""
        stages = heard.stages if heard is not None else None
        cfg = self.s.cfg.exam
        for say in says:
            rid = f"resp_{next(self.s.response_ids)}"
            self._queued[rid] = say
            opening: list[p.WireEvent] = []
            question = self.announce_question() if say.kind in ("question", "repeat") else None
            if question is not None:
                opening.append(question)
            opening.append(p.ResponseCreatedEvent(response_id=rid, kind=say.kind))
            self._on_created(rid, say)
            await self.out.start_response(rid, opening)
            items: AsyncIterator[tuple[str, bytes]]
            speaker = self.s.speaker
            by_llm = say.kind == "acknowledge" and cfg.acknowledgement == "llm"
            asked = self.s.flow.current
            probing = say.kind in ("followup", "clarify") and cfg.followups == "llm"
            if by_llm and heard and heard.transcript.text:
                answer = heard.transcript.text
                items = speaker.acknowledge(heard.question, answer, say.text, stages)
            elif probing and asked is not None:
                items = speaker.probe(say, asked, self.s.flow.said_so_far, stages)
            else:
                # Repeats and clarifications carry varying words; the probes are a fixed set.
                fixed = say.kind not in ("repeat", "clarify")
                items = speaker.say(say.text, stages, fixed=fixed)
            async for text, pcm in items:
                await self.out.put_audio(rid, text, pcm)
            await self.out.end_response(rid)
            stages = None

    def _first_audio(self, rid: str) -> None:
        self.turns.examiner_started()
        self._on_first_audio(rid)
        if self._turn_end is None:
            return
        latency = (self.clock() - self._turn_end) * 1000
        self._turn_end = None
        self.s.latencies.append(latency)
        if self.turn_latency is not None and not self.turn_latency.done():
            self.turn_latency.set_result(latency)
        if self._stages is not None:
            question = self.s.flow.current.number if self.s.flow.current else None
            budget = self.s.cfg.turn.latency_target_ms
            self._stages.report(self.s.r.code, question, latency, budget)
            self._done_stages = (round(latency, 1), self._stages)
            self._stages = None
        self.s.changed()

    def _response_done(self, rid: str, audio_ms: int) -> None:
        self._queued.pop(rid, None)
        latency, stages = self._done_stages if self._done_stages else (None, None)
        self._done_stages = None
        self.emit(
            p.ResponseDoneEvent(
                response_id=rid,
                latency_ms=latency,
                audio_ms=audio_ms,
                stages_ms=stages.as_dict() if stages else None,
            )
        )
        self.turns.examiner_stopped()
        self._on_done(rid)
