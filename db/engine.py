"""Async engines for SQLite (aiosqlite) and PostgreSQL (asyncpg), and start-up checks.

SQLite gets WAL, foreign keys and a busy timeout on every connection; PostgreSQL gets a pool with
pre-ping so connections that died in a server restart are replaced instead of failing a batch.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from core.config import DatabaseConfig

log = logging.getLogger(__name__)

MIGRATE_COMMAND = "python scripts/init_db.py"


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached within the configured attempts."""


class DatabaseNotMigrated(RuntimeError):
    """The database lacks the schema (or is behind the code's head revision)."""


def is_unreachable(exc: BaseException) -> bool:
    """True when `exc` says the database could not be reached (refused, reset, timed out, shut
    down), as opposed to a fault in what was asked of it: a request failing this way deserves a
    retry-later answer, not an internal error. A bare OSError or TimeoutError counts only when
    it came up through the database drivers."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for e in chain:
        if isinstance(e, OperationalError | InterfaceError):
            return True
        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
        if type(e).__name__ in _ASYNCPG_UNREACHABLE:  # without importing asyncpg
            return True
    return any(isinstance(e, OSError | TimeoutError) and _from_driver(e) for e in chain)


def _from_driver(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if any(f"/{m}/" in tb.tb_frame.f_code.co_filename for m in _DRIVERS):
            return True
        tb = tb.tb_next
    return False


_DRIVERS = ("sqlalchemy", "asyncpg", "aiosqlite")
_ASYNCPG_UNREACHABLE = frozenset(
    {
        "CannotConnectNowError",
        "ConnectionDoesNotExistError",
        "AdminShutdownError",
        "CrashShutdownError",
        "ConnectionFailureError",
        "ClientCannotConnectError",
    }
)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The sqlite3 driver's own implicit BEGIN breaks SAVEPOINT (the writer isolates a bad
        # op in a savepoint); turn it off and emit BEGIN ourselves (SQLAlchemy's documented
        # recipe for pysqlite/aiosqlite).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return on_connect


def create_engine(cfg: DatabaseConfig, **overrides: Any) -> AsyncEngine:
    """Build the engine for `cfg.url`; SQLite files get their parent folder created."""
    url = make_url(cfg.url)
    if is_sqlite(cfg.url):
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **overrides)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(cfg.sqlite_busy_timeout_ms))
        # IMMEDIATE: a transaction that reads and then writes (create a session while the
        # writer commits) would otherwise fail at once with "database is locked", because
        # SQLite does not wait on a read lock's upgrade; taking the write lock up front makes
        # it wait out busy_timeout instead. Measured: 27 of 100 concurrent creates failed.
        event.listen(
            engine.sync_engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE")
        )
        return engine
    kwargs: dict[str, Any] = {
        "pool_size": cfg.pool_size,
        "max_overflow": cfg.max_overflow,
        "pool_pre_ping": True,
        # asyncpg's own connect timeout, so an unreachable host fails fast instead of hanging.
        "connect_args": {"timeout": 5},
    }
    kwargs.update(overrides)
    return create_async_engine(url, **kwargs)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def wait_for_database(engine: AsyncEngine, attempts: int, interval_s: float) -> None:
    """Connect, retrying `attempts` times; raise DatabaseUnavailable naming the URL."""
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return
        except (SQLAlchemyError, OSError) as exc:
            last = exc
            log.warning("database not reachable (attempt %d/%d): %s", attempt, attempts, exc)
            if attempt < attempts:
                await asyncio.sleep(interval_s)
    safe = engine.url.render_as_string(hide_password=True)
    raise DatabaseUnavailable(f"database {safe} unreachable after {attempts} attempts: {last}")


async def current_revision(engine: AsyncEngine) -> str | None:
    """The Alembic revision the database is at, or None when it has none."""
    async with engine.connect() as conn:
        has_table = await conn.run_sync(
            lambda sync: sync.dialect.has_table(sync, "alembic_version")
        )
        if not has_table:
            return None
        row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
        return row[0] if row else None


async def ensure_migrated(engine: AsyncEngine) -> None:
    """Raise DatabaseNotMigrated, naming the command to run, unless the schema is at head."""
    from db.migrate import head_revision

    rev = await current_revision(engine)
    head = head_revision()
    if rev != head:
        where = "has no schema" if rev is None else f"is at revision {rev}, the code needs {head}"
        raise DatabaseNotMigrated(
            f"the database {where}; run `{MIGRATE_COMMAND}` "
            "(with DATABASE_URL set to the same database) and start again"
        )
