"""Users: get, and upsert by username (race-safe create) for sessions the exam platform opens."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.tables import User


async def get_user(db: AsyncSession, user_id: int) -> User | None:
    return await db.get(User, user_id)


async def get_user_by_username(db: AsyncSession, username: str) -> User | None:
    return (await db.execute(select(User).where(User.username == username))).scalar_one_or_none()


class EmailInUse(Exception):
    """The email given for a new or updated student belongs to another user."""


async def upsert_user(
    db: AsyncSession, username: str, email: str | None = None, **fields: Any
) -> User:
    """The user named `username`, created when missing, its given fields updated when present.

    Race-safe: concurrent creates of one new username (on one worker or several) insert with
    ON CONFLICT DO NOTHING on any unique column, so exactly one row is made and every caller then
    updates that row. The conflict target is left open on purpose: naming only `username` lets
    a racing insert of the same new student fail on the (equally unique) email instead, because
    PostgreSQL checks a unique index that is not the arbiter without waiting to skip. An `email`
    that another user holds raises `EmailInUse` (the caller answers 409).
    """
    user = await get_user_by_username(db, username)
    if user is None:
        values = {"username": username, "email": email or f"{username}@students.invalid"}
        dialect = db.get_bind().dialect.name
        insert = sqlite_insert if dialect == "sqlite" else pg_insert
        await db.execute(insert(User).values(**values, **fields).on_conflict_do_nothing())
        user = await get_user_by_username(db, username)
        if user is None:  # nothing inserted, and not by a racing create: the email is taken
            raise EmailInUse(values["email"])
    if email is not None:
        user.email = email
    for key, value in fields.items():
        setattr(user, key, value)
    try:
        await db.flush()
    except IntegrityError as exc:  # an existing student given another user's email
        raise EmailInUse(email or "") from exc
    return user
