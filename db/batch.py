"""Applying a batch of writer ops inside one transaction, on either dialect.

Order inside a batch follows the foreign keys, not arrival: answers, then evaluations, then audit
logs, then session updates, then results (computed from what the batch just wrote). Ops on the
same row are collapsed (last one wins), because PostgreSQL refuses an `ON CONFLICT DO UPDATE`
that touches one row twice in a statement. Rows go out as multi-row `INSERT .. ON CONFLICT (id)
DO UPDATE`, one compiled statement per table executed for the whole batch.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
    StatementError,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from db.ops import SESSION_TABLE, UPSERT_TABLES, ComputeResult, InvalidOp, Op, SessionUpdate, Upsert
from db.queries.results import SessionNotFound, compute_and_store_result
from db.tables import utcnow

TABLE_ORDER = ("answers", "evaluations", "audit_logs")
_NOT_UPDATED = frozenset({"id", "created_at"})


def is_permanent(exc: BaseException) -> bool:
    """True for errors that the same op would hit again (constraints, bad values, bad ops)."""
    if isinstance(exc, IntegrityError | DataError | ProgrammingError | NotSupportedError):
        return True
    if isinstance(exc, InvalidOp | SessionNotFound | TypeError | ValueError):
        return True
    # A StatementError that is not a DBAPIError failed while binding values, before the
    # database saw anything: a bad value, not a bad connection.
    return isinstance(exc, StatementError) and not hasattr(exc, "connection_invalidated")


def _insert_for(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


async def _upsert_rows(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> None:
    columns = list(table.columns.keys())
    full = [{c: row.get(c) for c in columns} for row in rows]
    ins = _insert_for(conn)(table)
    stmt = ins.on_conflict_do_update(
        index_elements=[table.c.id],
        set_={c: ins.excluded[c] for c in columns if c not in _NOT_UPDATED},
    )
    # One statement executed for many parameter sets: compiled once and cached, then sent as
    # the driver's batched executemany (asyncpg pipelines it; SQLAlchemy's "insertmanyvalues"
    # turns it into multi-row VALUES where the dialect supports that).
    await conn.execute(stmt.returning(table.c.id), full)


async def apply_ops(conn: AsyncConnection, ops: list[Op]) -> None:
    """Apply `ops` on `conn` (the caller owns the transaction)."""
    by_table: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in TABLE_ORDER}
    sessions: dict[int, dict[str, Any]] = {}
    results: list[ComputeResult] = []
    for op in ops:
        if isinstance(op, Upsert):
            by_table[op.table][op.row["id"]] = op.row
        elif isinstance(op, SessionUpdate):
            sessions.setdefault(op.session_id, {}).update(op.values)
        elif isinstance(op, ComputeResult):
            results.append(op)
        else:
            raise InvalidOp(f"not a writer op: {op!r}")
    for name in TABLE_ORDER:
        if by_table[name]:
            await _upsert_rows(conn, UPSERT_TABLES[name], list(by_table[name].values()))
    for session_id, values in sessions.items():
        res = await conn.execute(
            SESSION_TABLE.update()
            .where(SESSION_TABLE.c.id == session_id)
            .values(**values, updated_at=utcnow())
        )
        if res.rowcount == 0:
            raise SessionNotFound(f"session {session_id} does not exist; update {values}")
    for cr in results:
        await compute_and_store_result(
            conn,
            cr.session_id,
            cr.total_questions,
            cr.max_score_per_question,
            cr.result_id,
            extra=cr.extra,
        )


async def apply_isolated(conn: AsyncConnection, ops: list[Op]) -> list[tuple[Op, BaseException]]:
    """Apply ops one by one, each in a savepoint; return the ones that failed permanently.

    Transient errors propagate (the caller retries the whole batch later).
    """
    bad: list[tuple[Op, BaseException]] = []
    for op in ops:
        try:
            async with conn.begin_nested():
                await apply_ops(conn, [op])
        except Exception as exc:
            if not is_permanent(exc):
                raise
            bad.append((op, exc))
    return bad
