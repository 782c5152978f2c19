"""Stored rows as the worker uses them, each conversion written once: a question bank row as the
exam's `Question`, and a stored session as the JSON the sessions API and the RunPod jobs return."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.grading import ScoredAnswer
from db.nodes import session_owners
from db.queries.questions import questions_for
from db.tables import QuestionBank, Session, User
from worker.exam.evaluators import Question


async def sessions_elsewhere(db: AsyncSession, here: set[str]) -> list[dict[str, Any]]:
    """Monitor summaries of the sessions in progress that other live workers serve (their
    shape is `VivaSession.summary()`'s, with `worker` and state "elsewhere")."""
    owners = await session_owners(db)
    rows = await db.execute(
        select(Session, User.full_name, User.username)
        .join(User, User.id == Session.user_id)
        .where(Session.status == "in_progress")
    )
    out: list[dict[str, Any]] = []
    for sess, full_name, username in rows:
        if sess.session_code in here or sess.id not in owners:
            continue
        out.append(
            {
                "session_code": sess.session_code,
                "student": full_name or username,
                "college_type": sess.college_type,
                "question_number": sess.current_question or None,
                "question_count": sess.total_questions,
                "answered": sess.questions_answered,
                "state": "elsewhere",
                "worker": owners[sess.id],
                "last_latency_ms": sess.max_latency_ms,
                "latencies_ms": [],
            }
        )
    return out


def scored_answers(sess: Session) -> tuple[ScoredAnswer, ...]:
    """A session's evaluated answers (loaded with `full=True`), as its result counts them."""
    return tuple(
        ScoredAnswer(
            a.question_number,
            "",
            a.transcribed_text,
            a.evaluation.score_obtained,
            a.evaluation.max_score,
            a.evaluation.feedback_type,
            a.evaluation.latency_ms,
        )
        for a in sess.answers
        if a.evaluation is not None
    )


def question_from_row(row: QuestionBank, max_score: int) -> Question:
    return Question(
        row.id,
        row.question_number,
        row.question_text,
        tuple(row.expected_keywords or ()),
        row.answer_guidelines or "",
        max_score,
        synonyms_of(row),
    )


def question_from_seed(row: Mapping[str, Any], id: int, max_score: int) -> Question:
    """A question bank seed row (db/seed_data, as `db.seed.load_banks` reads it) as the exam
    would ask it once seeded: the same conversion as a stored row's."""
    columns = {c.key for c in QuestionBank.__table__.columns}
    bank = QuestionBank(**{k: v for k, v in row.items() if k in columns}, id=id)
    return question_from_row(bank, max_score)


def synonyms_of(row: QuestionBank) -> dict[str, tuple[str, ...]]:
    """The bank's synonyms per expected keyword, as the evaluators take them."""
    raw = row.keyword_synonyms if isinstance(row.keyword_synonyms, dict) else {}
    return {
        k: tuple(str(v) for v in vs)
        for k, vs in raw.items()
        if k in (row.expected_keywords or ()) and isinstance(vs, list)
    }


async def exam_questions(
    db: AsyncSession, college_type: str, scenario_id: str, max_score: int
) -> list[Question]:
    """The scenario's questions in order, as the exam asks them."""
    rows = await questions_for(db, college_type, scenario_id)
    return [question_from_row(row, max_score) for row in rows]


def session_json(sess: Session, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "session_code": sess.session_code,
        # Loaded eagerly by both queries that feed this (no lazy loads under asyncio).
        "student": (sess.user.full_name or sess.user.username) if "user" in sess.__dict__ else None,
        "status": sess.status,
        "college_type": sess.college_type,
        "scenario_id": sess.scenario_id,
        "current_question": sess.current_question,
        "questions_answered": sess.questions_answered,
        "total_questions": sess.total_questions,
        "avg_latency_ms": sess.avg_latency_ms,
        "max_latency_ms": sess.max_latency_ms,
        "start_time": sess.start_time.isoformat() if sess.start_time else None,
        "end_time": sess.end_time.isoformat() if sess.end_time else None,
    }
    if full:
        out["answers"] = [
            {
                "question_number": a.question_number,
                "transcript": a.transcribed_text,
                "confidence": a.confidence_score,
                "audio_duration_seconds": a.audio_duration_seconds,
                "evaluation": None
                if a.evaluation is None
                else {
                    "score": a.evaluation.score_obtained,
                    "max_score": a.evaluation.max_score,
                    "feedback_type": a.evaluation.feedback_type,
                    "feedback": a.evaluation.feedback,
                    "latency_ms": a.evaluation.latency_ms,
                },
            }
            for a in sess.answers
        ]
        r = sess.result
        out["result"] = (
            None
            if r is None
            else {
                "total_score": r.total_score,
                "max_score": r.max_score,
                "percentage": r.percentage_correct,
                "grade": r.grade,
                "passed": r.pass_status,
                "details": r.result_json,
            }
        )
    return out
