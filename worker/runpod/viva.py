"""The `viva` job: a recorded viva. The session is created, each answer is heard (ASR or its
text), scored and written, one item per answer, and then the session's result: computed by the
writer's `compute_result` and read back, or, when the database has not committed it in time, the
same arithmetic done here."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

from core.grading import ScoredAnswer, session_totals
from db import ops
from db.tables import utcnow
from worker.runpod.audio import decode_audio
from worker.runpod.errors import JobError
from worker.runpod.jobs import VivaJob
from worker.runpod.shared import JobServices, evaluation_json, ms_since
from worker.service.opening import CreateSession, Opened, open_session
from worker.service.records import exam_questions


async def viva_job(s: JobServices, job: VivaJob) -> AsyncGenerator[dict[str, Any]]:
    hub, _ = s.models()
    cfg = s.config
    exam = s.config.exam
    # Every clip is decoded (and so checked) before anything is created.
    clips = [
        None if a.audio_b64 is None else decode_audio(a.audio_b64, a.sample_rate)
        for a in job.answers
    ]
    async with s.db.sessions() as db:
        bank = await exam_questions(db, job.college_type, job.scenario_id, exam.max_score)
    available = min(cfg.exam.total_questions, len(bank))
    if bank and len(job.answers) > available:
        raise JobError(
            "invalid_input", f"{len(job.answers)} answers for a viva of {available} questions"
        )
    body = CreateSession.model_validate(job.model_dump(include=set(CreateSession.model_fields)))
    opened = await open_session(cfg, s.db, None, body, total_questions=len(job.answers))
    questions = bank[: opened.total_questions]
    writer = s.db.writer
    begun = utcnow()
    started_op = ops.session_update(opened.session_id, status="in_progress", start_time=begun)
    writer.enqueue(started_op)
    s.audit("session.started", opened)
    scored: list[ScoredAnswer] = []
    status, reason = "terminated", "the job stopped early"
    try:
        for question, answer, clip in zip(questions, job.answers, clips, strict=True):
            timings: dict[str, float] = {}
            transcript, source = await s.hear(answer, question, hub, timings, clip)
            started = time.perf_counter()
            result = await s.score(hub, question, transcript.text)
            timings["evaluate"] = ms_since(started)
            s.store_answer(opened.session_id, question, transcript, result)
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
                "evaluation": evaluation_json(result),
                "timings_ms": timings,
            }
        status, reason = "completed", "all recorded answers evaluated"
    finally:  # also when the job fails or is cancelled: the session still gets a result
        s.end_session(opened, status, len(questions), reason, reason, begun=begun)
    yield await _viva_result(s, opened, scored, len(questions), exam.max_score)


async def _viva_result(
    s: JobServices, opened: Opened, scored: list[ScoredAnswer], total: int, max_score: int
) -> dict[str, Any]:
    stored = await s.flushed(opened.session_id)
    session = await s.stored_session(opened.code) if stored else None
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
