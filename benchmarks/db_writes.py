"""Database write throughput and enqueue latency: the naive pattern against the writer.

    python benchmarks/db_writes.py --db sqlite|postgres [--rows N] --json PATH

- per_row_rows_per_s: one transaction per answer (what a handler that awaits the database does);
- writer_rows_per_s: the same rows through the write-behind writer, enqueue to committed;
- enqueue_p50_us / enqueue_p99_us: the cost of `enqueue` on the caller's path while the writer is
  busy committing; enqueue_p99_us_slow_db: the same while every commit is made to take 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.report import emit
from core.config import DatabaseConfig, WriterConfig
from db import ops
from db.engine import create_engine, sessionmaker
from db.queries.questions import questions_for, scenarios
from db.queries.sessions import create_session
from db.queries.users import upsert_user
from db.setup import migrate_and_seed
from db.tables import Answer
from db.writer import Writer

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _answer(session_id: int, question_id: int, n: int) -> ops.Upsert:
    return ops.upsert(
        "answers",
        session_id=session_id,
        question_bank_id=question_id,
        question_number=n % 12 + 1,
        transcribed_text=f"benchmark answer number {n} with a realistic sentence of words",
        confidence_score=0.91,
        audio_duration_seconds=6.5,
    )


async def _fresh_database(kind: str, workdir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute('DROP DATABASE IF EXISTS "viva_bench" WITH (FORCE)')
    await conn.execute('CREATE DATABASE "viva_bench"')
    await conn.close()
    return "postgresql+asyncpg://postgres@127.0.0.1:5432/viva_bench"


async def _per_row(maker: Any, sid: int, qid: int, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        async with maker() as db, db.begin():
            db.add(Answer(**_answer(sid, qid, i).row))
    return n / (time.perf_counter() - started)


async def _writer_run(
    engine: Any, journal: Path, sid: int, qid: int, n: int, commit_delay_s: float
) -> tuple[float, list[float]]:
    writer = Writer(engine, WriterConfig(journal_dir=str(journal)), commit_delay_s=commit_delay_s)
    await writer.start()
    batch = [_answer(sid, qid, i) for i in range(n)]
    samples: list[float] = []
    started = time.perf_counter()
    for i, op in enumerate(batch):
        t0 = time.perf_counter_ns()
        writer.enqueue(op)
        samples.append((time.perf_counter_ns() - t0) / 1000)
        if i % 16 == 15:
            # Yield as a real session would between ops, so the writer runs concurrently.
            await asyncio.sleep(0)
    await writer.flush()
    elapsed = time.perf_counter() - started
    await writer.close()
    return n / elapsed, samples


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(kind: str, rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = await _fresh_database(kind, workdir)
        cfg = DatabaseConfig(url=url)
        await migrate_and_seed(cfg)
        engine = create_engine(cfg)
        maker = sessionmaker(engine)
        async with maker() as db, db.begin():
            user = await upsert_user(db, "bench")
            scenario = next(s for _, s, _ in await scenarios(db, "medical"))
            qs = await questions_for(db, "medical", scenario)
            sess = await create_session(db, user.id, "medical", qs[0].scenario_id)
            sid, qid = sess.id, qs[0].id
        per_row = await _per_row(maker, sid, qid, max(200, rows // 10))
        writer_rps, fast = await _writer_run(engine, workdir / "j1", sid, qid, rows, 0.0)
        _, slow = await _writer_run(engine, workdir / "j2", sid, qid, rows, 0.2)
        await engine.dispose()
    return {
        "db": kind,
        "rows": rows,
        "per_row_rows_per_s": round(per_row, 1),
        "writer_rows_per_s": round(writer_rps, 1),
        "ratio": round(writer_rps / per_row, 1),
        "enqueue_p50_us": round(statistics.median(fast), 2),
        "enqueue_p99_us": round(_pct(fast, 0.99), 2),
        "enqueue_p50_us_slow_db": round(statistics.median(slow), 2),
        "enqueue_p99_us_slow_db": round(_pct(slow, 0.99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    emit(asyncio.run(run(args.db, args.rows)), args.json)


if __name__ == "__main__":
    main()
