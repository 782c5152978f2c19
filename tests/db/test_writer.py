"""The write-behind writer against real SQLite files and the real PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from sqlalchemy import select

from core.config import WriterConfig
from db import ops
from db.journal import Journal
from db.ops import encode
from db.tables import Answer, Evaluation, Result, Session
from db.writer import Writer, WriterClosed
from tests.db.helpers import TABLE_MODELS, Viva, answer_and_evaluation, count_ids, make_viva

ROOT = Path(__file__).resolve().parents[2]
PG_VERSION = sorted(os.listdir("/etc/postgresql"))[-1] if os.path.isdir("/etc/postgresql") else ""


async def _assert_exactly_once(db_session, ids: dict[str, list[int]]) -> None:  # type: ignore[no-untyped-def]
    for table, wanted in ids.items():
        found, dup = await count_ids(db_session, TABLE_MODELS[table], wanted)
        assert (found, dup) == (len(set(wanted)), 0), table


async def test_enqueue_is_synchronous_and_does_no_io(engine, writer_config) -> None:  # type: ignore[no-untyped-def]
    writer = Writer(engine, writer_config)
    await writer.start()
    try:
        before = writer.journal.bytes_on_disk
        op = ops.upsert("audit_logs", action="probe")
        seq = writer.enqueue(op)  # a plain call: nothing to await
        assert writer.journal.bytes_on_disk == before and writer.accepted.value < seq
        await writer.wait_accepted(seq)
        assert writer.journal.bytes_on_disk > before
    finally:
        assert await writer.close()


@pytest.mark.slow
async def test_10k_ops_from_50_producers_land_exactly_once(
    engine, db_session, writer_config
) -> None:  # type: ignore[no-untyped-def]
    viva = await make_viva(db_session)
    writer = Writer(engine, writer_config)
    await writer.start()
    ids: dict[str, list[int]] = {"answers": [], "evaluations": []}

    async def producer(p: int) -> None:
        for i in range(100):
            for op in answer_and_evaluation(viva, p * 1000 + i):
                ids[op.table].append(op.row["id"])
                seq = writer.enqueue(op)
                if i % 10 == 0:
                    # A replayed or retried write must not duplicate: send some twice.
                    writer.enqueue(op)
            if i % 25 == 0:
                await writer.wait_accepted(seq)
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        for p in range(50):
            tg.create_task(producer(p))
    assert sum(map(len, ids.values())) == 10_000
    assert await writer.close(drain_timeout_s=120)
    await _assert_exactly_once(db_session, ids)
    assert writer.rejected == 0


async def test_close_drains_everything(engine, db_session, writer_config) -> None:  # type: ignore[no-untyped-def]
    viva = await make_viva(db_session)
    writer = Writer(engine, writer_config.model_copy(update={"batch_interval_ms": 5000}))
    await writer.start()
    ids: dict[str, list[int]] = {"answers": [], "evaluations": []}
    for i in range(500):
        for op in answer_and_evaluation(viva, i):
            ids[op.table].append(op.row["id"])
            writer.enqueue(op)
    assert await writer.close(drain_timeout_s=60)
    with pytest.raises(WriterClosed):
        writer.enqueue(ops.upsert("audit_logs", action="late"))
    await _assert_exactly_once(db_session, ids)


async def test_constraint_violations_are_isolated(engine, db_session, writer_config) -> None:  # type: ignore[no-untyped-def]
    viva = await make_viva(db_session)
    writer = Writer(engine, writer_config)
    await writer.start()
    answer, evaluation = answer_and_evaluation(viva, 0)
    good = [answer, evaluation, *answer_and_evaluation(viva, 1)]
    orphan = ops.upsert(  # FK: no such answer
        "evaluations",
        answer_id=123,
        session_id=viva.session_id,
        evaluator_type="keyword_match",
        score_obtained=1,
        max_score=10,
        percentage_correct=10,
        feedback_type="incorrect",
    )
    second_eval = ops.upsert(  # unique: one evaluation per answer
        "evaluations", **{**evaluation.row, "id": evaluation.row["id"] + 7}
    )
    missing_session = ops.session_update(42, current_question=3)
    for op in [good[0], orphan, good[1], second_eval, good[2], missing_session, good[3]]:
        writer.enqueue(op)
    assert await writer.close(drain_timeout_s=30)
    assert writer.rejected == 3
    lines = writer.dead_letter_path.read_text().splitlines()
    reasons = [json.loads(line)["reason"] for line in lines]
    assert len(reasons) == 3 and all(reasons)
    assert any("SessionNotFound" in r for r in reasons)
    ids = {
        "answers": [good[0].row["id"], good[2].row["id"]],
        "evaluations": [good[1].row["id"], good[3].row["id"]],
    }
    await _assert_exactly_once(db_session, ids)


async def test_result_is_computed_after_the_answers(engine, db_session, writer_config) -> None:  # type: ignore[no-untyped-def]
    viva = await make_viva(db_session)
    writer = Writer(engine, writer_config)
    await writer.start()
    for i, score in enumerate([10, 8, 5, 0]):
        for op in answer_and_evaluation(viva, i, score=score):
            writer.enqueue(op)
    writer.enqueue(ops.session_update(viva.session_id, status="terminated", questions_answered=4))
    writer.enqueue(
        ops.compute_result(viva.session_id, total_questions=12, max_score_per_question=10)
    )
    await writer.flush(viva.session_id)
    async with db_session() as db:
        result = (
            await db.execute(select(Result).where(Result.session_id == viva.session_id))
        ).scalar_one()
        sess = await db.get(Session, viva.session_id)
    assert (result.total_score, result.max_score) == (23, 120)
    assert result.percentage_correct == pytest.approx(19.17, abs=0.01)
    assert (result.grade, result.pass_status) == ("F", False)
    assert result.result_json["questions_answered"] == 4
    assert result.result_json["latency"]["turns"] == 4
    assert sess.status == "terminated" and sess.total_score == 23
    assert await writer.close()


def _tear_last_segment(journal_dir: Path) -> None:
    """Append what a crash mid-write leaves: a header promising more bytes than follow."""
    segment = sorted(journal_dir.glob("seg-*.log"))[-1]
    with open(segment, "ab") as f:
        f.write(b"\x10\x00\x00\x00garbage-after-a-crash")


async def test_corrupt_journal_tail_replays_valid_prefix(engine, db_session, tmp_path) -> None:  # type: ignore[no-untyped-def]
    viva = await make_viva(db_session)
    journal_dir = tmp_path / "journal"
    journal = Journal(journal_dir, 1 << 20)
    journal.open(lambda payload: json.loads(payload)["seq"])
    good = [op for i in range(3) for op in answer_and_evaluation(viva, i)]
    journal.append([(seq, encode(seq, op)) for seq, op in enumerate(good, start=1)])
    journal.close()
    _tear_last_segment(journal_dir)
    writer = Writer(engine, WriterConfig(journal_dir=str(journal_dir), batch_interval_ms=10))
    report = await writer.start()
    assert len(report.pending) == len(good)
    assert len(report.corrupt) == 1 and "not replayed" in report.corrupt[0]
    assert list(journal_dir.glob("*.corrupt-*"))
    assert await writer.close(drain_timeout_s=30)
    await _assert_exactly_once(
        db_session,
        {t: [op.row["id"] for op in good if op.table == t] for t in ("answers", "evaluations")},
    )


async def test_journal_over_limit_is_unhealthy_but_keeps_everything(
    engine, db_session, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    viva = await make_viva(db_session)
    cfg = WriterConfig(
        journal_dir=str(tmp_path / "j"),
        journal_segment_bytes=4096,
        journal_max_bytes=8192,
        batch_interval_ms=10,
    )
    writer = Writer(engine, cfg, commit_delay_s=5.0)
    await writer.start()
    ids: dict[str, list[int]] = {"answers": [], "evaluations": []}
    for i in range(100):
        for op in answer_and_evaluation(viva, i):
            ids[op.table].append(op.row["id"])
            seq = writer.enqueue(op)
    await writer.wait_accepted(seq)
    assert not writer.healthy
    writer.commit_delay_s = 0.0
    assert await writer.close(drain_timeout_s=60)
    await _assert_exactly_once(db_session, ids)


@pytest.mark.slow
async def test_sigkill_after_accept_then_replay(db_url, engine, db_session, tmp_path) -> None:  # type: ignore[no-untyped-def]
    viva = await make_viva(db_session)
    journal_dir = tmp_path / "journal"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.db.writer_child",
        db_url,
        str(journal_dir),
        json.dumps(asdict(viva)),
        "400",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = (await asyncio.wait_for(child.stdout.readline(), 120)).decode()
        assert line.startswith("ACCEPTED "), line
        ids = json.loads(line.split(" ", 1)[1])
    finally:
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 30)
    found, _ = await count_ids(db_session, Answer, ids["answers"])
    assert found < len(ids["answers"]), "the child should have died before committing everything"
    writer = Writer(engine, WriterConfig(journal_dir=str(journal_dir), batch_interval_ms=10))
    report = await writer.start()
    assert report.pending, "the journal should hold the accepted ops"
    assert await writer.close(drain_timeout_s=60)
    await _assert_exactly_once(db_session, ids)


def _pg(action: str, check: bool = True) -> int:
    done = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, "main", action],
        check=check,
        capture_output=True,
        timeout=60,
    )
    return done.returncode


def _pg_ensure_up() -> None:
    if _pg("status", check=False) != 0:  # 3: not running
        _pg("start")


@pytest.mark.postgres
@pytest.mark.slow
async def test_postgres_stopped_mid_stream(pg_database, writer_config) -> None:  # type: ignore[no-untyped-def]
    from core.config import DatabaseConfig
    from db.engine import create_engine, sessionmaker
    from db.setup import migrate_and_seed

    cfg = DatabaseConfig(url=pg_database, connect_attempts=1)
    await migrate_and_seed(cfg)
    engine = create_engine(cfg)
    maker = sessionmaker(engine)
    viva: Viva = await make_viva(maker)
    writer = Writer(engine, writer_config)
    await writer.start()
    ids: dict[str, list[int]] = {"answers": [], "evaluations": []}
    stop_producing = asyncio.Event()
    accepted_during_outage = 0

    async def producer(p: int) -> None:
        nonlocal accepted_during_outage
        i = 0
        while not stop_producing.is_set():
            for op in answer_and_evaluation(viva, p * 100_000 + i):
                seq = writer.enqueue(op)
                ids[op.table].append(op.row["id"])
            await writer.wait_accepted(seq)
            if not writer.db_ok:
                accepted_during_outage += 2
            i += 1
            await asyncio.sleep(0.005)

    try:
        async with asyncio.TaskGroup() as tg:
            for p in range(10):
                tg.create_task(producer(p))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(_pg, "stop")
            await asyncio.sleep(4.0)
            await asyncio.to_thread(_pg, "start")
            await asyncio.sleep(1.0)
            stop_producing.set()
    finally:
        await asyncio.to_thread(_pg_ensure_up)  # never leave the server down
    assert writer.retries > 0, "the outage should have made commits fail and retry"
    assert accepted_during_outage > 0
    assert await writer.close(drain_timeout_s=120)
    await _assert_exactly_once(maker, ids)
    async with maker() as db:
        total = len((await db.execute(select(Evaluation.id))).all())
    assert total == len(ids["evaluations"])
    await engine.dispose()
