"""Question banks: the questions of one college type and scenario, in asking order."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.tables import QuestionBank


async def questions_for(
    db: AsyncSession, college_type: str, scenario_id: str
) -> Sequence[QuestionBank]:
    stmt = (
        select(QuestionBank)
        .where(QuestionBank.college_type == college_type, QuestionBank.scenario_id == scenario_id)
        .order_by(QuestionBank.question_number)
    )
    return (await db.execute(stmt)).scalars().all()


async def get_question(db: AsyncSession, question_id: int) -> QuestionBank | None:
    return await db.get(QuestionBank, question_id)


async def scenarios(
    db: AsyncSession, college_type: str | None = None
) -> list[tuple[str, str, str]]:
    """(college_type, scenario_id, scenario_name) of every scenario, sorted."""
    stmt = (
        select(QuestionBank.college_type, QuestionBank.scenario_id, QuestionBank.scenario_name)
        .distinct()
        .order_by(QuestionBank.college_type, QuestionBank.scenario_id)
    )
    if college_type is not None:
        stmt = stmt.where(QuestionBank.college_type == college_type)
    return [(c, s, n) for c, s, n in (await db.execute(stmt)).all()]
