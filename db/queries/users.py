"""Users: get, and upsert by username (race-safe create) for sessions the exam platform opens."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.tables import User


async def get_user(db: AsyncSession, user_id: int) -> User | None:
    return await db.get(User, user_id)


async def get_user_by_username(db: AsyncSession, username: str) -> User | None:
    return (await db.execute(select(User).where(User.username == username))).scalar_one_or_none()


async def upsert_user(
    db: AsyncSession, username: str, email: str | None = None, **fields: Any
) -> User:
    """The user named `username`, created when missing, its given fields updated when present.

    Race-safe: concurrent creates of one new username (on one worker or several) insert with
    ON CONFLICT DO NOTHING, so exactly one row is made and every caller then updates that row.
    An `email` that another user holds still raises IntegrityError (the caller answers 409).
    """
    user = await get_user_by_username(db, username)
    if user is None:
        values = {"username": username, "email": email or f"{username}@students.invalid"}
        dialect = db.get_bind().dialect.name
        insert = sqlite_insert if dialect == "sqlite" else pg_insert
        stmt = insert(User).values(**values, **fields)
        await db.execute(stmt.on_conflict_do_nothing(index_elements=[User.username]))
        user = await get_user_by_username(db, username)
        assert user is not None  # inserted now, or by whoever won the race: updated below
    if email is not None:
        user.email = email
    for key, value in fields.items():
        setattr(user, key, value)
    await db.flush()
    return user
