"""Shared fixtures: real SQLite files and real PostgreSQL databases, migrated and seeded."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from core.config import DatabaseConfig, WriterConfig
from db.engine import create_engine, sessionmaker
from db.setup import migrate_and_seed

PG_ADMIN_DSN = os.environ.get("VIVA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PG_HOST_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432"


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"viva_t_{secrets.token_hex(4)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_HOST_URL}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_database(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'viva.db'}"


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each dialect."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'viva.db'}"
    else:
        yield request.getfixturevalue("pg_database")


@pytest.fixture
async def db_url(empty_db_url: str) -> str:
    """A database of each dialect, migrated to head and seeded."""
    await migrate_and_seed(DatabaseConfig(url=empty_db_url, connect_attempts=1))
    return empty_db_url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator:
    eng = create_engine(DatabaseConfig(url=db_url))
    yield eng
    await eng.dispose()


@pytest.fixture
def db_session(engine):  # type: ignore[no-untyped-def]
    return sessionmaker(engine)


@pytest.fixture
def writer_config(tmp_path: Path) -> WriterConfig:
    return WriterConfig(
        journal_dir=str(tmp_path / "journal"),
        batch_interval_ms=20,
        retry_initial_seconds=0.05,
        retry_max_seconds=0.5,
    )
