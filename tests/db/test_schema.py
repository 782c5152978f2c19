"""The schema on both dialects: tables, constraints, cascades; Alembic up, diff-free, and down."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table, delete, inspect, select
from sqlalchemy.exc import IntegrityError

from core.config import DatabaseConfig
from db.batch import apply_ops
from db.engine import DatabaseNotMigrated, create_engine, ensure_migrated
from db.migrate import downgrade, upgrade
from db.tables import Answer, AuditLog, Base, Evaluation, QuestionBank, Result, Session
from tests.db.helpers import answer_and_evaluation, make_viva

TABLES = {
    "users",
    "sessions",
    "question_banks",
    "answers",
    "evaluations",
    "results",
    "audit_logs",
    "configuration",
}


async def test_upgrade_matches_models_and_downgrades(empty_db_url: str) -> None:
    engine = create_engine(DatabaseConfig(url=empty_db_url))
    try:
        with pytest.raises(DatabaseNotMigrated, match=r"scripts/init_db\.py"):
            await ensure_migrated(engine)
        await asyncio.to_thread(upgrade, empty_db_url)
        await ensure_migrated(engine)
        async with engine.connect() as conn:
            names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            assert names >= TABLES
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata
                )
            )
        assert diff == [], f"models and migration differ: {diff}"
        await asyncio.to_thread(downgrade, empty_db_url, "base")
        async with engine.connect() as conn:
            names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert not (TABLES & names)
    finally:
        await engine.dispose()


async def test_unique_constraints(db_session) -> None:  # type: ignore[no-untyped-def]
    viva = await make_viva(db_session)
    # unique session code
    async with db_session() as db:
        sess = await db.get(Session, viva.session_id)
        db.add(
            Session(
                user_id=viva.user_id,
                college_type="medical",
                scenario_id=sess.scenario_id,
                session_code=viva.code,
            )
        )
        with pytest.raises(IntegrityError):
            await db.commit()
    # unique question key
    async with db_session() as db:
        q = await db.get(QuestionBank, viva.question_ids[0])
        db.add(
            QuestionBank(
                college_type=q.college_type,
                scenario_id=q.scenario_id,
                scenario_name="dup",
                question_number=q.question_number,
                question_text="dup?",
            )
        )
        with pytest.raises(IntegrityError):
            await db.commit()
    # one evaluation per answer
    answer, evaluation = answer_and_evaluation(viva, 0)
    async with db_session() as db:
        db.add(Answer(**answer.row))
        db.add(Evaluation(**evaluation.row))
        await db.commit()
    second = dict(evaluation.row, id=evaluation.row["id"] + 1)
    async with db_session() as db:
        db.add(Evaluation(**second))
        with pytest.raises(IntegrityError):
            await db.commit()
    # one answer per question of a session
    again, _ = answer_and_evaluation(viva, 0)
    async with db_session() as db:
        db.add(Answer(**again.row))
        with pytest.raises(IntegrityError):
            await db.commit()
    # a question with answers cannot be deleted (RESTRICT)
    async with db_session() as db:
        qid = answer.row["question_bank_id"]
        with pytest.raises(IntegrityError):
            await db.execute(delete(QuestionBank).where(QuestionBank.id == qid))
            await db.commit()


async def test_upgrade_to_one_answer_per_question_keeps_the_latest(
    db_url: str, db_session: Any
) -> None:
    """Before 0002 a follow-up's answer was a row of its own holding every attempt joined: the
    upgrade keeps the latest row of each question (and its evaluation)."""
    viva = await make_viva(db_session)
    await asyncio.to_thread(downgrade, db_url, "0001")
    first, first_eval = answer_and_evaluation(viva, 0, score=3.0)
    later, later_eval = answer_and_evaluation(viva, 0, score=8.0)
    later.row["created_at"] = first.row["created_at"] + dt.timedelta(seconds=5)
    other, other_eval = answer_and_evaluation(viva, 1)
    engine = create_engine(DatabaseConfig(url=db_url))
    try:
        async with engine.begin() as conn:
            await apply_ops(conn, [first, later, other])
            # The evaluations table as revision 0001 made it (no `justification` yet).
            old = await conn.run_sync(lambda c: Table("evaluations", MetaData(), autoload_with=c))
            rows = [first_eval.row, later_eval.row, other_eval.row]
            await conn.execute(
                old.insert(), [{k: v for k, v in r.items() if k in old.c} for r in rows]
            )
        await asyncio.to_thread(upgrade, db_url)
        async with engine.connect() as conn:
            answers = (await conn.execute(select(Answer.id).order_by(Answer.id))).scalars().all()
            scores = (await conn.execute(select(Evaluation.score_obtained))).scalars().all()
    finally:
        await engine.dispose()
    assert sorted(answers) == sorted([later.row["id"], other.row["id"]])
    assert sorted(scores) == [7.0, 8.0]


async def test_cascades(db_session) -> None:  # type: ignore[no-untyped-def]
    from db.queries.sessions import complete_session

    viva = await make_viva(db_session)
    answer, evaluation = answer_and_evaluation(viva, 0)
    async with db_session() as db, db.begin():
        db.add(Answer(**answer.row))
        db.add(Evaluation(**evaluation.row))
        db.add(AuditLog(action="test", session_id=viva.session_id))
    async with db_session() as db, db.begin():
        await complete_session(db, viva.session_id)
    async with db_session() as db, db.begin():
        await db.execute(delete(Session).where(Session.id == viva.session_id))
    async with db_session() as db:
        for model in (Answer, Evaluation, Result):
            rows = (
                await db.execute(select(model).where(model.session_id == viva.session_id))
            ).all()
            assert rows == [], model.__tablename__
        log = (await db.execute(select(AuditLog).where(AuditLog.action == "test"))).scalar_one()
        assert log.session_id is None  # SET NULL keeps the audit trail
