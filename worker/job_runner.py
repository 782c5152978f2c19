"""The RunPod job actions, run on the worker's own event loop (see `worker.runtime`), beside the
HTTP/WebSocket server and with the same models, database and writer.

`JobRunner.run(input)` yields a job's output items and never raises: a problem is yielded as the
last item, `{"error": {"code", "message"}}` (RunPod's SDK ends a job at such an item anyway).
- `evaluate`: one answer -> transcript, evaluation, the examiner's reply as text and WAV audio,
  stage timings; the answer and its evaluation go through the writer when a session is named.
- `viva`: a recorded viva -> one item per answer, then the session's result (computed by the
  writer's `compute_result` and read back).
- `session`: a realtime session -> how to reach it, its live summaries, and a final item.
- `health`: models, database and writer, live sessions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import asdict
from typing import Any

from aiohttp import web

from core.grading import ScoredAnswer, session_totals
from db import ops
from db.queries.questions import get_question, questions_for
from db.queries.sessions import get_by_code
from db.tables import QuestionBank, utcnow
from models.base import ModelError, Transcript
from models.hub import Hub
from worker.api import CONFIG, DATABASE, LIVE, session_json
from worker.evaluators import Evaluation, EvaluationFailed, Question, evaluate
from worker.job_session import SessionJobRun
from worker.jobs import (
    Answer,
    DecodedAudio,
    EvaluateJob,
    JobError,
    SessionJob,
    VivaJob,
    decode_audio,
    examiner_reply,
    parse_job,
    wav_bytes,
)
from worker.opening import CreateSession, Opened, OpenRefused, open_session
from worker.resources import Database
from worker.scoring import answer_row, evaluation_row
from worker.speaker import PromptCache
from worker.warmup import MODELS

log = logging.getLogger(__name__)
FLUSH_TIMEOUT_S = 30.0  # a job's rows are in the journal already; past this, don't wait for them


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _question(row: QuestionBank, max_score: int) -> Question:
    return Question(
        row.id,
        row.question_number,
        row.question_text,
        tuple(row.expected_keywords or ()),
        row.answer_guidelines or "",
        max_score,
    )


def _evaluation_json(e: Evaluation) -> dict[str, Any]:
    out = asdict(e)
    out["matched_keywords"] = list(e.matched_keywords)
    out["missing_keywords"] = list(e.missing_keywords)
    return out


class JobRunner:
    def __init__(self, app: web.Application, ws_base: str):
        self.app = app
        self.ws_base = ws_base

    async def run(self, raw: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            job = parse_job(raw)
            if isinstance(job, EvaluateJob):
                yield await self._evaluate(job)
            elif isinstance(job, VivaJob | SessionJob):
                # aclosing: a job closed early (cancelled) closes its steps at once, not at GC.
                steps = (
                    self._viva(job)
                    if isinstance(job, VivaJob)
                    else SessionJobRun(self, job).items()
                )
                async with contextlib.aclosing(steps) as items:
                    async for item in items:
                        yield item
            else:
                yield self.health()
        except JobError as exc:
            yield exc.as_item()
        except OpenRefused as exc:
            yield JobError(exc.code, exc.message).as_item()  # type: ignore[arg-type]
        except EvaluationFailed as exc:
            yield JobError("evaluation_failed", str(exc)).as_item()
        except ModelError as exc:
            yield JobError("model_error", f"{type(exc).__name__}: {exc}").as_item()
        except Exception as exc:
            log.exception("job failed")
            yield JobError("internal_error", f"{type(exc).__name__}: {exc}").as_item()

    # --- shared ----------------------------------------------------------------------------

    @property
    def db(self) -> Database:
        return self.app[DATABASE]

    def models(self) -> tuple[Hub, PromptCache]:
        models = self.app[MODELS]
        if not models.ready or models.hub is None or models.prompts is None:
            raise JobError("models_not_ready", models.error or "models are still warming up")
        return models.hub, models.prompts

    async def _hear(
        self, answer: Answer, hub: Hub, timings: dict[str, float], audio: DecodedAudio | None = None
    ) -> tuple[Transcript, str]:
        """The answer's transcript (ASR on its audio, or its text) and where it came from."""
        if answer.text is not None:
            return Transcript(answer.text.strip(), (), 1.0, 0.0, "en"), "text"
        if audio is None:
            assert answer.audio_b64 is not None
            started = time.perf_counter()
            audio = decode_audio(answer.audio_b64, answer.sample_rate)
            timings["decode"] = _ms(started)
        started = time.perf_counter()
        transcript = await hub.asr.transcribe(audio.samples, self.db.config.models.asr.language)
        timings["asr"] = _ms(started)
        return transcript, "asr"

    async def _score(self, hub: Hub, question: Question, text: str) -> Evaluation:
        exam = self.db.config.exam
        return await evaluate(
            exam.evaluator, question, text, llm=hub.llm, threshold=exam.keyword_matching_threshold
        )

    def _store_answer(
        self, session_id: int, question: Question, transcript: Transcript, result: Evaluation
    ) -> tuple[int, int, int]:
        """Enqueue the answer and its evaluation; (answer id, evaluation id, last seq)."""
        writer = self.db.writer
        answer = answer_row(
            session_id,
            question,
            transcript.text,
            transcript.confidence,
            transcript.duration_s or None,
        )
        evaluation = evaluation_row(answer.row["id"], session_id, result)
        writer.enqueue(answer)
        seq = writer.enqueue(evaluation)
        return answer.row["id"], evaluation.row["id"], seq

    def audit(self, action: str, opened: Opened, **details: Any) -> None:
        self.db.writer.enqueue(
            ops.upsert(
                "audit_logs",
                session_id=opened.session_id,
                user_id=opened.user_id,
                action=action,
                resource_type="session",
                resource_id=opened.code,
                details={"via": "runpod_job", **details},
            )
        )

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

    # --- evaluate --------------------------------------------------------------------------

    async def _evaluate(self, job: EvaluateJob) -> dict[str, Any]:
        started = time.perf_counter()
        hub, prompts = self.models()
        exam = self.db.config.exam
        timings: dict[str, float] = {}
        clip = None
        if job.audio_b64 is not None:  # checked before anything else is looked up
            clip = decode_audio(job.audio_b64, job.sample_rate)
            timings["decode"] = _ms(started)
        session_id = await self._open_for_answers(job.session_code)
        if job.question_id is not None:
            async with self.db.sessions() as db:
                row = await get_question(db, job.question_id)
            if row is None:
                raise JobError("unknown_question", f"no question with id {job.question_id}")
            question = _question(row, exam.max_score)
        else:
            assert job.question_text is not None
            text, keywords = job.question_text, job.expected_keywords
            question = Question(0, 1, text, keywords, job.answer_guidelines, exam.max_score)
        transcript, source = await self._hear(job, hub, timings, clip)
        reply = examiner_reply(question, transcript.text, exam)

        async def timed_score() -> Evaluation:
            t = time.perf_counter()
            result = await self._score(hub, question, transcript.text)
            timings["evaluate"] = _ms(t)
            return result

        async def timed_speech() -> bytes:
            t = time.perf_counter()
            pcm = await prompts.make(reply.text)
            timings["tts"] = _ms(t)
            return pcm

        # Scoring and the spoken reply both need only the transcript: run them side by side.
        async with asyncio.TaskGroup() as tg:
            scoring, speech = tg.create_task(timed_score()), tg.create_task(timed_speech())
        result, pcm = scoring.result(), speech.result()
        persisted = None
        if session_id is not None:
            answer_id, evaluation_id, seq = self._store_answer(
                session_id, question, transcript, result
            )
            await self.db.writer.wait_accepted(seq)  # durable in the journal
            persisted = {"answer_id": answer_id, "evaluation_id": evaluation_id}
        timings["total"] = _ms(started)
        rate = hub.tts.sample_rate
        return {
            "type": "evaluation",
            "question": {"id": job.question_id, "number": question.number, "text": question.text},
            "transcript": {
                "text": transcript.text,
                "source": source,
                "confidence": round(transcript.confidence, 3),
                "duration_s": round(transcript.duration_s, 3),
            },
            "evaluation": _evaluation_json(result),
            "reply": {
                "kind": reply.kind,
                "text": reply.text,
                "audio_b64": base64.b64encode(wav_bytes(pcm, rate)).decode(),
                "sample_rate": rate,
                "audio_s": round(len(pcm) / 2 / rate, 3),
            },
            "timings_ms": timings,
            "persisted": persisted,
        }

    async def _open_for_answers(self, code: str | None) -> int | None:
        if code is None:
            return None
        async with self.db.sessions() as db:
            sess = await get_by_code(db, code)
        if sess is None:
            raise JobError("unknown_session", f"no session {code}")
        if sess.status in ("completed", "terminated"):
            raise JobError("session_closed", f"session {sess.session_code} is {sess.status}")
        return sess.id

    # --- viva ------------------------------------------------------------------------------

    async def _viva(self, job: VivaJob) -> AsyncGenerator[dict[str, Any]]:
        hub, _ = self.models()
        cfg = self.app[CONFIG]
        exam = self.db.config.exam
        # Every clip is decoded (and so checked) before anything is created.
        clips = [
            None if a.audio_b64 is None else decode_audio(a.audio_b64, a.sample_rate)
            for a in job.answers
        ]
        async with self.db.sessions() as db:
            rows = await questions_for(db, job.college_type, job.scenario_id)
        available = min(cfg.exam.total_questions, len(rows))
        if rows and len(job.answers) > available:
            raise JobError(
                "invalid_input", f"{len(job.answers)} answers for a viva of {available} questions"
            )
        body = CreateSession.model_validate(job.model_dump(include=set(CreateSession.model_fields)))
        opened = await open_session(cfg, self.db, None, body, total_questions=len(job.answers))
        questions = [_question(r, exam.max_score) for r in rows[: opened.total_questions]]
        writer = self.db.writer
        begun = utcnow()
        started_op = ops.session_update(opened.session_id, status="in_progress", start_time=begun)
        writer.enqueue(started_op)
        self.audit("session.started", opened)
        scored: list[ScoredAnswer] = []
        status, reason = "terminated", "the job stopped early"
        try:
            for question, answer, clip in zip(questions, job.answers, clips, strict=True):
                timings: dict[str, float] = {}
                transcript, source = await self._hear(answer, hub, timings, clip)
                started = time.perf_counter()
                result = await self._score(hub, question, transcript.text)
                timings["evaluate"] = _ms(started)
                self._store_answer(opened.session_id, question, transcript, result)
                writer.enqueue(
                    ops.session_update(
                        opened.session_id,
                        questions_answered=len(scored) + 1,
                        current_question=question.number,
                    )
                )
                scored.append(
                    ScoredAnswer(
                        question.number,
                        question.text,
                        transcript.text,
                        result.score_obtained,
                        result.max_score,
                        result.feedback_type,
                        None,
                    )
                )
                yield {
                    "type": "question",
                    "session_code": opened.code,
                    "question_number": question.number,
                    "question": question.text,
                    "transcript": {"text": transcript.text, "source": source},
                    "evaluation": _evaluation_json(result),
                    "timings_ms": timings,
                }
            status, reason = "completed", "all recorded answers evaluated"
        finally:  # also when the job fails or is cancelled: the session still gets a result
            ended = utcnow()
            writer.enqueue(
                ops.session_update(
                    opened.session_id,
                    status=status,
                    end_time=ended,
                    duration_seconds=(ended - begun).total_seconds(),
                )
            )
            extra = {"end_reason": reason, "via": "runpod_job"}
            writer.enqueue(
                ops.compute_result(opened.session_id, len(questions), exam.max_score, extra)
            )
            self.audit(f"session.{status}", opened, reason=reason)
        yield await self._viva_result(opened, scored, len(questions), exam.max_score)

    async def _viva_result(
        self, opened: Opened, scored: list[ScoredAnswer], total: int, max_score: int
    ) -> dict[str, Any]:
        stored = await self.flushed(opened.session_id)
        session = await self.stored_session(opened.code) if stored else None
        if session is not None and session["result"] is not None:
            return {"type": "result", "session_code": opened.code, "stored": True, **session}
        # Not committed yet (the database is slow or down; the journal has it): same arithmetic.
        totals = session_totals(scored, total, max_score)
        return {
            "type": "result",
            "session_code": opened.code,
            "stored": False,
            "status": "completed" if len(scored) == total else "terminated",
            "result": {
                "total_score": totals.total_score,
                "max_score": totals.max_score,
                "percentage": totals.percentage,
                "grade": totals.grade,
                "passed": totals.passed,
                "details": totals.result_json,
            },
        }

    # --- session ---------------------------------------------------------------------------

    # --- health ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        models = self.app[MODELS]
        database = self.app.get(DATABASE)
        live = self.app[LIVE]
        writer = database.writer.stats() if database is not None else None
        ok = models.ready and writer is not None and writer["healthy"] and live.accepting
        return {
            "type": "health",
            "status": "ok" if ok else "degraded",
            "profile": self.app[CONFIG].profile,
            "models": models.hub.describe()
            if models.hub is not None
            else {"ready": False, "error": models.error},
            "database": None
            if database is None
            else {"dialect": database.engine.dialect.name, "writer": writer},
            "sessions": {
                "live": len(live),
                "max": live.max_sessions,
                "accepting": live.accepting,
                "summaries": live.summaries(),
            },
            "ws_base": self.ws_base,
        }
