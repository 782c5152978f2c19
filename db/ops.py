"""Write operations the write-behind writer accepts, and their journal encoding.

Three kinds, all idempotent so a journal replay never duplicates or reverts anything:
- `Upsert`: insert a row of `answers`, `evaluations` or `audit_logs`, keyed by its application id;
  a second copy of the same id overwrites the first with the same values.
- `SessionUpdate`: set absolute values on one `sessions` row (progress, status, latencies).
- `ComputeResult`: compute a session's result from its evaluations inside the batch transaction,
  after everything enqueued before it, and upsert it keyed by the session.
Ops are validated when they are built, so a typo fails at the caller, not in a batch minutes later.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import DateTime, Table

from core.text import stripped
from db.ids import new_id
from db.tables import Answer, AuditLog, Evaluation, Session, table, utcnow

UPSERT_TABLES: dict[str, Table] = {t.name: t for t in map(table, (Answer, Evaluation, AuditLog))}
SESSION_TABLE: Table = table(Session)
# Columns a SessionUpdate may set: progress, not identity.
SESSION_UPDATABLE = frozenset(
    {
        "status",
        "start_time",
        "end_time",
        "duration_seconds",
        "total_score",
        "total_questions",
        "current_question",
        "questions_answered",
        "progress",
        "voice_detected_count",
        "avg_latency_ms",
        "max_latency_ms",
    }
)


class InvalidOp(ValueError):
    """An op that names an unknown table or column, or lacks a required value."""


def _datetime_columns(table: Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns if isinstance(c.type, DateTime))


_DT_COLUMNS = {t.name: _datetime_columns(t) for t in (*UPSERT_TABLES.values(), SESSION_TABLE)}


def _required(table: Table) -> frozenset[str]:
    return frozenset(
        c.name
        for c in table.columns
        if not c.nullable and c.default is None and c.server_default is None
    )


_REQUIRED = {name: _required(t) for name, t in UPSERT_TABLES.items()}


@dataclass(frozen=True, slots=True)
class Upsert:
    table: str
    row: dict[str, Any]
    kind: str = field(default="upsert", init=False)

    @property
    def session_id(self) -> int | None:
        return self.row.get("session_id")


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    session_id: int
    values: dict[str, Any]
    kind: str = field(default="session_update", init=False)


@dataclass(frozen=True, slots=True)
class ComputeResult:
    session_id: int
    total_questions: int
    max_score_per_question: float
    result_id: int
    extra: dict[str, Any] = field(default_factory=dict)  # merged into result_json (usage...)
    kind: str = field(default="compute_result", init=False)


Op = Upsert | SessionUpdate | ComputeResult


class OpSink(Protocol):
    """Where a live session hands its ops: the write-behind writer (`db.writer.Writer`), or an
    in-memory list in tests. `enqueue` returns the op's sequence number; no I/O, no await."""

    def enqueue(self, op: Op) -> int: ...


def upsert(table: str, **values: Any) -> Upsert:
    """A validated Upsert; `id`, `created_at` and `updated_at` are filled in when missing."""
    tbl = UPSERT_TABLES.get(table)
    if tbl is None:
        raise InvalidOp(
            f"the writer does not write table {table!r}; one of {sorted(UPSERT_TABLES)}"
        )
    unknown = set(values) - set(tbl.columns.keys())
    if unknown:
        raise InvalidOp(f"{table}: unknown columns {sorted(unknown)}")
    row = dict(values)
    now = utcnow()
    row.setdefault("id", new_id())
    row.setdefault("created_at", now)
    row.setdefault("updated_at", now)
    for col in tbl.columns:
        default: Any = col.default
        if col.name in row or default is None:
            continue
        # Callable defaults (list, utcnow...) are wrapped by SQLAlchemy to take a context.
        row[col.name] = default.arg(None) if default.is_callable else default.arg
    missing = _REQUIRED[table] - {k for k, v in row.items() if v is not None}
    if missing:
        raise InvalidOp(f"{table}: missing required values {sorted(missing)}")
    return Upsert(table, row)


def audit(
    action: str,
    code: str,
    *,
    session_id: int | None = None,
    user_id: int | None = None,
    details: dict[str, Any] | None = None,
    status: str = "success",
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> Upsert:
    """An `audit_logs` row about the session `code`: the one builder of the audit rows that go
    through the writer (the live session, the RunPod jobs, a refused token)."""
    return upsert(
        "audit_logs",
        session_id=session_id,
        user_id=user_id,
        action=action,
        resource_type="session",
        resource_id=code[:64],
        status=status,
        details=details or {},
        ip_address=stripped(ip_address, 64),
        user_agent=stripped(user_agent, 512),
    )


def session_update(session_id: int, **values: Any) -> SessionUpdate:
    unknown = set(values) - SESSION_UPDATABLE
    if unknown:
        raise InvalidOp(f"sessions: cannot update {sorted(unknown)} through the writer")
    if not values:
        raise InvalidOp("sessions: an update needs at least one value")
    return SessionUpdate(session_id, dict(values))


def compute_result(
    session_id: int,
    total_questions: int,
    max_score_per_question: float,
    extra: dict[str, Any] | None = None,
) -> ComputeResult:
    return ComputeResult(
        session_id, total_questions, max_score_per_question, new_id(), dict(extra or {})
    )


# --- journal encoding ----------------------------------------------------------------------


def _encode_values(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in values.items()}


def _decode_values(table: str, values: dict[str, Any]) -> dict[str, Any]:
    dt_cols = _DT_COLUMNS[table]
    return {
        k: dt.datetime.fromisoformat(v) if k in dt_cols and isinstance(v, str) else v
        for k, v in values.items()
    }


def encode(seq: int, op: Op) -> bytes:
    """One journal record's payload: the op as compact JSON with its sequence number."""
    if isinstance(op, Upsert):
        body: dict[str, Any] = {"k": "upsert", "t": op.table, "r": _encode_values(op.row)}
    elif isinstance(op, SessionUpdate):
        body = {"k": "session_update", "s": op.session_id, "v": _encode_values(op.values)}
    else:
        body = {
            "k": "compute_result",
            "s": op.session_id,
            "q": op.total_questions,
            "m": op.max_score_per_question,
            "id": op.result_id,
            "x": op.extra,
        }
    body["seq"] = seq
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def decode(payload: bytes) -> tuple[int, Op]:
    """Inverse of `encode`; raises InvalidOp on a payload that is not a known op."""
    try:
        body = json.loads(payload)
        kind = body["k"]
        seq = int(body["seq"])
        if kind == "upsert":
            if body["t"] not in UPSERT_TABLES:
                raise InvalidOp(f"unknown table {body['t']!r}")
            return seq, Upsert(body["t"], _decode_values(body["t"], body["r"]))
        if kind == "session_update":
            return seq, SessionUpdate(int(body["s"]), _decode_values("sessions", body["v"]))
        if kind == "compute_result":
            return seq, ComputeResult(
                int(body["s"]), int(body["q"]), float(body["m"]), body["id"], body.get("x") or {}
            )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidOp(f"undecodable journal record: {exc}") from exc
    raise InvalidOp(f"unknown op kind {kind!r}")


def describe(op: Op) -> dict[str, Any]:
    """A JSON-safe description of an op for logs and the dead-letter file."""
    return json.loads(encode(0, op))
