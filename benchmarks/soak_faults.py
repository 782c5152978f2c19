"""The machinery around benchmarks/soak.py's students: the local PostgreSQL (restart it, make and
drop a scratch database, read back what was stored), the worker's RSS from /proc, and the
database check at the end for SQLite too.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
ANSWERS_SQL = (
    "SELECT s.session_code, a.question_number, a.transcribed_text "
    "FROM answers a JOIN sessions s ON s.id = a.session_id"
)
RESULTS_SQL = (
    "SELECT s.session_code, count(r.id), s.status FROM sessions s "
    "LEFT JOIN results r ON r.session_id = s.id GROUP BY s.session_code, s.status"
)
STATUS_SQL = "SELECT status, count(*) FROM sessions GROUP BY status"


# --- PostgreSQL ------------------------------------------------------------------------------


def _pg_version() -> str:
    versions = sorted(os.listdir("/etc/postgresql"))
    return versions[-1]


def pg_ctl(action: str) -> None:
    """start / stop / restart the local cluster (no systemd here)."""
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", action],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def pg_running() -> bool:
    status = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", "status"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    return status.returncode == 0


def ensure_pg_started() -> None:
    """Whatever happened, leave PostgreSQL running."""
    if not pg_running():
        pg_ctl("start")


async def pg_restart(down_s: float) -> None:
    """Stop, stay down `down_s`, start: an outage the writer has to ride out."""
    await asyncio.to_thread(pg_ctl, "stop")
    try:
        await asyncio.sleep(down_s)
    finally:
        await asyncio.to_thread(ensure_pg_started)


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(name: str) -> str:
    await _pg_admin(f'CREATE DATABASE "{name}"')
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def drop_database(name: str) -> None:
    await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def read_rows(url: str) -> dict[str, Any]:
    """answers (code, question, transcript), results per session code, and session statuses."""
    if url.startswith("sqlite"):
        return await asyncio.to_thread(_read_sqlite, url.split("///", 1)[1])
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = None
    for _ in range(30):  # PostgreSQL may still be coming back from the last restart
        try:
            conn = await asyncpg.connect(dsn)
            break
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(1)
    if conn is None:
        raise SystemExit("cannot reach PostgreSQL to check the rows")
    try:
        answers = [tuple(r) for r in await conn.fetch(ANSWERS_SQL)]
        got = await conn.fetch(RESULTS_SQL)
        results = {r[0]: int(r[1]) for r in got}
        ended = [r[0] for r in got if r[2] in ("completed", "terminated")]
        statuses = {r[0]: int(r[1]) for r in await conn.fetch(STATUS_SQL)}
    finally:
        await conn.close()
    return {"answers": answers, "results": results, "statuses": statuses, "ended": ended}


def _read_sqlite(path: str) -> dict[str, Any]:
    with sqlite3.connect(path) as conn:
        answers = [tuple(r) for r in conn.execute(ANSWERS_SQL)]
        got = list(conn.execute(RESULTS_SQL))
        results = {r[0]: int(r[1]) for r in got}
        ended = [r[0] for r in got if r[2] in ("completed", "terminated")]
        statuses = {r[0]: int(r[1]) for r in conn.execute(STATUS_SQL)}
    return {"answers": answers, "results": results, "statuses": statuses, "ended": ended}


# --- RSS -------------------------------------------------------------------------------------


def vm_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


class RssSampler:
    """VmRSS of the worker (and, apart, of its child processes, e.g. vLLM's engine) every
    `interval_s`, as (seconds since `t0`, MB)."""

    def __init__(self, pid: int, t0: float, interval_s: float = 5.0):
        self.pid, self.t0, self.interval_s = pid, t0, interval_s
        self.main: list[tuple[float, float]] = []
        self.children: list[tuple[float, float]] = []

    def sample(self) -> None:
        now = time.monotonic() - self.t0
        rss = vm_rss_mb(self.pid)
        if rss is None:
            return
        self.main.append((now, rss))
        kids = [vm_rss_mb(c) for c in descendants(self.pid)]
        self.children.append((now, sum(k for k in kids if k is not None)))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)
