"""Viva sessions: create with a unique code, start, progress, complete, terminate, list, load.

These run on an AsyncSession for work outside the voice path (the HTTP API, batch vivas, tests).
During a live viva the same changes go through the writer as `db.ops.session_update`.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from db.ids import new_id
from db.queries.results import SessionNotFound, compute_and_store_result
from db.tables import Answer, Evaluation, Result, Session, utcnow

# No 0/O, 1/I/L: codes are read aloud and typed by people.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_PREFIX = "VIVA-"


class InvalidTransition(ValueError):
    """A session asked to move to a status it cannot reach from its current one."""


def new_session_code() -> str:
    return CODE_PREFIX + "".join(secrets.choice(CODE_ALPHABET) for _ in range(6))


async def create_session(
    db: AsyncSession,
    user_id: int,
    college_type: str,
    scenario_id: str,
    total_questions: int = 12,
    attempts: int = 5,
) -> Session:
    """A pending session with a fresh unique code (retried in a savepoint on a collision)."""
    for _ in range(attempts):
        sess = Session(
            user_id=user_id,
            college_type=college_type,
            scenario_id=scenario_id,
            session_code=new_session_code(),
            total_questions=total_questions,
            status="pending",
        )
        try:
            async with db.begin_nested():
                db.add(sess)
                await db.flush()
            return sess
        except IntegrityError as exc:
            if "session_code" not in str(exc.orig):
                raise
    raise RuntimeError(f"no unique session code after {attempts} attempts")


async def get_session(db: AsyncSession, session_id: int) -> Session | None:
    return await db.get(Session, session_id)


async def get_by_code(db: AsyncSession, code: str, *, full: bool = False) -> Session | None:
    """The session with `code`; `full` loads answers, evaluations and result eagerly."""
    stmt = select(Session).where(Session.session_code == code.upper())
    if full:
        stmt = stmt.options(
            selectinload(Session.answers).selectinload(Answer.evaluation),
            selectinload(Session.evaluations),
            selectinload(Session.result),
            selectinload(Session.user),
        )
    return (await db.execute(stmt)).scalar_one_or_none()


async def _require(db: AsyncSession, session_id: int) -> Session:
    sess = await db.get(Session, session_id)
    if sess is None:
        raise SessionNotFound(f"session {session_id} does not exist")
    return sess


async def start_session(
    db: AsyncSession, session_id: int, at: dt.datetime | None = None
) -> Session:
    sess = await _require(db, session_id)
    if sess.status not in ("pending", "in_progress"):
        raise InvalidTransition(f"session {sess.session_code} is {sess.status}; cannot start")
    if sess.status == "pending":
        sess.status = "in_progress"
        sess.start_time = at or utcnow()
    await db.flush()
    return sess


async def record_progress(db: AsyncSession, session_id: int, **values: Any) -> Session:
    sess = await _require(db, session_id)
    for key, value in values.items():
        setattr(sess, key, value)
    await db.flush()
    return sess


async def _finish(
    db: AsyncSession, session_id: int, status: str, max_score: float, at: dt.datetime | None
) -> Result:
    sess = await _require(db, session_id)
    if sess.status in ("completed", "terminated"):
        raise InvalidTransition(f"session {sess.session_code} is already {sess.status}")
    end = at or utcnow()
    sess.status = status
    sess.end_time = end
    if sess.start_time is not None:
        start = sess.start_time
        if start.tzinfo is None:  # SQLite returns naive datetimes
            start = start.replace(tzinfo=dt.UTC)
        sess.duration_seconds = (end - start).total_seconds()
    await db.flush()
    conn = await db.connection()
    await compute_and_store_result(conn, session_id, sess.total_questions, max_score, new_id())
    await db.refresh(sess)
    result = (await db.execute(select(Result).where(Result.session_id == session_id))).scalar_one()
    return result


async def complete_session(
    db: AsyncSession, session_id: int, max_score: float = 10, at: dt.datetime | None = None
) -> Result:
    """Mark the session completed and write its result from its evaluations."""
    return await _finish(db, session_id, "completed", max_score, at)


async def terminate_session(
    db: AsyncSession, session_id: int, max_score: float = 10, at: dt.datetime | None = None
) -> Result:
    """End a session early; it still gets a result for what was answered."""
    return await _finish(db, session_id, "terminated", max_score, at)


async def list_sessions(db: AsyncSession, status: str | None = "in_progress") -> Sequence[Session]:
    stmt = select(Session).options(selectinload(Session.user)).order_by(Session.id.desc())
    if status is not None:
        stmt = stmt.where(Session.status == status)
    return (await db.execute(stmt)).scalars().all()


async def answer_row_ids(
    db: AsyncSession, session_id: int, question_number: int
) -> tuple[int, int | None] | None:
    """The ids of the answer to `question_number` in a session and of its evaluation (None
    when it has none yet); None when the question has no answer row."""
    stmt = (
        select(Answer.id, Evaluation.id)
        .outerjoin(Evaluation, Evaluation.answer_id == Answer.id)
        .where(Answer.session_id == session_id, Answer.question_number == question_number)
    )
    row = (await db.execute(stmt)).first()
    return None if row is None else (row[0], row[1])
