"""What every RunPod job action uses: the worker context, the models, hearing and scoring an
answer, writing it, auditing, waiting for the writer, and reading a stored session back."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import asdict
from typing import Any

from core.config import Config
from db import ops
from db.ids import new_id
from db.queries.sessions import get_by_code
from db.tables import utcnow
from models.base import Transcript
from models.hub import Hub
from worker.exam.evaluators import Evaluation, Question, evaluate
from worker.runpod.audio import DecodedAudio, decode_audio
from worker.runpod.errors import JobError
from worker.runpod.jobs import Answer
from worker.service.context import WorkerContext
from worker.service.opening import Opened
from worker.service.records import session_json
from worker.service.resources import Database
from worker.session.scoring import RowIds, answer_row, evaluation_row
from worker.voice.listener import asr_prompt
from worker.voice.speaker import PromptCache

log = logging.getLogger(__name__)
FLUSH_TIMEOUT_S = 30.0  # a job's rows are in the journal already; past this, don't wait for them


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def evaluation_json(e: Evaluation) -> dict[str, Any]:
    out = asdict(e)
    out["matched_keywords"] = list(e.matched_keywords)
    out["missing_keywords"] = list(e.missing_keywords)
    return out


class JobServices:
    def __init__(self, ctx: WorkerContext, ws_base: str):
        self.ctx = ctx
        self.ws_base = ws_base  # where this worker's students connect (the session job says)

    @property
    def config(self) -> Config:
        return self.ctx.config

    @property
    def db(self) -> Database:
        return self.ctx.db()

    def models(self) -> tuple[Hub, PromptCache]:
        models = self.ctx.models
        if not models.ready or models.hub is None or models.prompts is None:
            raise JobError("models_not_ready", models.error or "models are still warming up")
        return models.hub, models.prompts

    async def hear(
        self,
        answer: Answer,
        question: Question,
        hub: Hub,
        timings: dict[str, float],
        audio: DecodedAudio | None = None,
    ) -> tuple[Transcript, str]:
        """The answer's transcript (ASR on its audio, primed with the question's keywords as
        the voice listener primes it, or its text) and where it came from."""
        if answer.text is not None:
            return Transcript(answer.text.strip(), (), 1.0, 0.0, "en"), "text"
        if audio is None:
            assert answer.audio_b64 is not None
            started = time.perf_counter()
            audio = decode_audio(answer.audio_b64, answer.sample_rate)
            timings["decode"] = ms_since(started)
        started = time.perf_counter()
        asr = self.config.models.asr
        terms = question.expected_keywords if asr.prompt_terms else ()
        transcript = await hub.asr.transcribe(
            audio.samples, asr.language, prompt=asr_prompt(terms, "")
        )
        timings["asr"] = ms_since(started)
        return transcript, "asr"

    async def score(self, hub: Hub, question: Question, text: str) -> Evaluation:
        exam = self.config.exam
        return await evaluate(
            exam.evaluator, question, text, llm=hub.llm, threshold=exam.keyword_matching_threshold
        )

    def store_answer(
        self,
        session_id: int,
        question: Question,
        transcript: Transcript,
        result: Evaluation,
        rows: RowIds | None = None,
    ) -> tuple[int, int, int]:
        """Enqueue the answer and its evaluation (rewriting `rows` when the question has them);
        (answer id, evaluation id, last seq)."""
        writer = self.db.writer
        rows = rows or RowIds(new_id(), new_id())
        answer = answer_row(
            session_id,
            question,
            transcript.text,
            transcript.confidence,
            transcript.duration_s or None,
            id=rows.answer,
        )
        evaluation = evaluation_row(rows.answer, session_id, result, id=rows.evaluation)
        writer.enqueue(answer)
        seq = writer.enqueue(evaluation)
        return answer.row["id"], evaluation.row["id"], seq

    def audit(self, action: str, opened: Opened, **details: Any) -> None:
        self.db.writer.enqueue(
            ops.audit(
                action,
                opened.code,
                session_id=opened.session_id,
                user_id=opened.user_id,
                details={"via": "runpod_job", **details},
            )
        )

    def end_session(
        self,
        opened: Opened,
        status: str,
        total_questions: int,
        end_reason: str,
        audit_reason: str,
        begun: dt.datetime | None = None,
    ) -> None:
        """A job's session ends: its status and end time (and duration, from `begun`) and its
        result, through the writer, then the audit entry. Never awaits: it also runs while a
        job is being cancelled."""
        writer, ended = self.db.writer, utcnow()
        duration = {} if begun is None else {"duration_seconds": (ended - begun).total_seconds()}
        writer.enqueue(
            ops.session_update(opened.session_id, status=status, end_time=ended, **duration)
        )
        extra = {"end_reason": end_reason, "via": "runpod_job"}
        max_score = self.config.exam.max_score
        writer.enqueue(ops.compute_result(opened.session_id, total_questions, max_score, extra))
        self.audit(f"session.{status}", opened, reason=audit_reason)

    async def flushed(self, session_id: int) -> bool:
        try:
            await asyncio.wait_for(self.db.writer.flush(session_id), FLUSH_TIMEOUT_S)
        except TimeoutError:
            log.warning("session %d not committed in %.0f s", session_id, FLUSH_TIMEOUT_S)
            return False
        return True

    async def stored_session(self, code: str) -> dict[str, Any] | None:
        async with self.db.sessions() as db:
            sess = await get_by_code(db, code, full=True)
            return None if sess is None else session_json(sess, full=True)
