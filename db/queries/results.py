"""Results computed from evaluations: totals, percentage, grade, pass and the per-question JSON.

Works on a Core connection so the writer can compute a result inside its batch transaction
(after the answers and evaluations enqueued before it), and the query layer can call it too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from core.grading import ScoredAnswer, session_totals
from db.tables import Answer, Evaluation, QuestionBank, Result, Session, table, utcnow


class SessionNotFound(LookupError):
    """No session has the given id or code."""


async def scored_answers(conn: AsyncConnection, session_id: int) -> list[ScoredAnswer]:
    stmt = (
        select(
            Answer.question_number,
            QuestionBank.question_text,
            Answer.transcribed_text,
            Evaluation.score_obtained,
            Evaluation.max_score,
            Evaluation.feedback_type,
            Evaluation.latency_ms,
        )
        .join(Evaluation, Evaluation.answer_id == Answer.id)
        .join(QuestionBank, QuestionBank.id == Answer.question_bank_id)
        .where(Answer.session_id == session_id)
        .order_by(Answer.id)
    )
    rows = (await conn.execute(stmt)).all()
    return [ScoredAnswer(*row) for row in rows]


async def compute_and_store_result(
    conn: AsyncConnection,
    session_id: int,
    total_questions: int,
    max_score_per_question: float,
    result_id: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute the session's result from its evaluations and upsert it (keyed by session)."""
    sess = (
        await conn.execute(
            select(
                Session.user_id, Session.college_type, Session.status, Session.scenario_id
            ).where(Session.id == session_id)
        )
    ).first()
    if sess is None:
        raise SessionNotFound(f"session {session_id} does not exist")
    answers = await scored_answers(conn, session_id)
    totals = session_totals(
        answers,
        total_questions,
        max_score_per_question,
        extra={**(extra or {}), "status": sess.status, "scenario_id": sess.scenario_id},
    )
    now = utcnow()
    values: dict[str, Any] = {
        "id": result_id,
        "session_id": session_id,
        "user_id": sess.user_id,
        "college_type": sess.college_type,
        "total_score": totals.total_score,
        "max_score": totals.max_score,
        "percentage_correct": totals.percentage,
        "grade": totals.grade,
        "pass_status": totals.passed,
        "result_json": totals.result_json,
        "generated_at": now,
        "created_at": now,
        "updated_at": now,
    }
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    ins = insert(Result).values(values)
    keep = {"id", "session_id", "created_at"}
    stmt = ins.on_conflict_do_update(
        index_elements=[Result.session_id],
        set_={k: ins.excluded[k] for k in values if k not in keep},
    )
    await conn.execute(stmt)
    await conn.execute(
        table(Session)
        .update()
        .where(Session.id == session_id)
        .values(total_score=totals.total_score, updated_at=now)
    )
    return values
