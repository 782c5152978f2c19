"""Users: create, get, upsert (by username, for sessions created by the exam platform)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.tables import User


async def create_user(db: AsyncSession, username: str, email: str, **fields: Any) -> User:
    user = User(username=username, email=email, **fields)
    db.add(user)
    await db.flush()
    return user


async def get_user(db: AsyncSession, user_id: int) -> User | None:
    return await db.get(User, user_id)


async def get_user_by_username(db: AsyncSession, username: str) -> User | None:
    return (await db.execute(select(User).where(User.username == username))).scalar_one_or_none()


async def upsert_user(
    db: AsyncSession, username: str, email: str | None = None, **fields: Any
) -> User:
    """The user named `username`, created when missing, its given fields updated when present.

    Race-safe enough for one worker per session creation: a concurrent insert of the same
    username fails on the unique constraint and the caller's transaction rolls back.
    """
    user = await get_user_by_username(db, username)
    if user is None:
        return await create_user(db, username, email or f"{username}@students.invalid", **fields)
    if email is not None:
        user.email = email
    for key, value in fields.items():
        setattr(user, key, value)
    await db.flush()
    return user
