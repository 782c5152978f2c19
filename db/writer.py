"""The write-behind writer: the only path for database writes made during a viva.

`enqueue(op)` appends to an in-memory deque and returns a sequence number; it does no I/O and
never awaits. Two background tasks move ops on:
1. the journal task appends whatever has queued up to the on-disk journal with one fsync (group
   commit); an op is *accepted* once that fsync returns (`wait_accepted`);
2. the commit task takes journaled ops in order, by size or by interval, and commits each batch in
   one transaction of multi-row upserts (`db.batch`). Transient errors (the database is down,
   locked, restarting) are retried with capped backoff for as long as it takes; permanent errors
   (a constraint) isolate the bad op in a savepoint, dead-letter it with the reason and let the
   rest of the batch land.
Committed ops are trimmed from the journal; on start-up, ops the journal still holds are replayed
before anything new. Past `journal_max_bytes` the writer reports itself unhealthy (so the server
refuses new sessions) but keeps accepting: it never drops an accepted op.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from core.config import WriterConfig
from db import metrics
from db.batch import apply_isolated, apply_ops, is_permanent
from db.journal import Journal, ReplayReport
from db.ops import InvalidOp, Op, decode, describe, encode

log = logging.getLogger(__name__)


class WriterClosed(RuntimeError):
    """`enqueue` after `close()` began."""


class _Watermark:
    """A monotonically increasing sequence number that coroutines can wait on."""

    def __init__(self, value: int = 0):
        self.value = value
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._n = 0

    def advance(self, value: int) -> None:
        if value <= self.value:
            return
        self.value = value
        while self._waiters and self._waiters[0][0] <= value:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    async def wait_for(self, value: int) -> None:
        if value <= self.value:
            return
        fut = asyncio.get_running_loop().create_future()
        self._n += 1
        heapq.heappush(self._waiters, (value, self._n, fut))
        await fut


class Writer:
    """Journaled, batching, retrying writer for one database."""

    def __init__(
        self,
        engine: AsyncEngine,
        cfg: WriterConfig,
        *,
        commit_delay_s: float = 0.0,
    ):
        self.engine = engine
        self.cfg = cfg
        # Fault injection for the slow-database benchmark: every commit takes this long.
        self.commit_delay_s = commit_delay_s
        self.journal = Journal(cfg.journal_dir, cfg.journal_segment_bytes)
        self.dead_letter_path = Path(cfg.journal_dir) / "rejected.jsonl"
        self.replay: ReplayReport | None = None
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer-journal")
        self._incoming: deque[tuple[int, Op]] = deque()
        self._to_commit: deque[tuple[int, Op]] = deque()
        self._incoming_ready = asyncio.Event()
        self._commit_ready = asyncio.Event()
        self._next_seq = 1
        self.accepted = _Watermark()
        self.committed = _Watermark()
        self._session_last: dict[int, int] = {}
        self._flush_to = 0
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self.db_ok = True
        self.journal_ok = True
        self.rejected = 0
        self.rows_written = 0
        self.retries = 0

    # --- public API --------------------------------------------------------------------------

    async def start(self) -> ReplayReport:
        """Open the journal, queue what it holds for replay, start the background tasks."""
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(self._io, self.journal.open, self._seq_of)
        self.replay = report
        self._next_seq = report.last_seq + 1
        self.accepted.value = self.committed.value = report.last_seq
        if report.pending:
            first = report.pending[0][0]
            self.committed.value = first - 1
            for seq, payload in report.pending:
                _, op = decode(payload)
                self._to_commit.append((seq, op))
            self._flush_to = report.pending[-1][0]
            self._commit_ready.set()
            log.info("writer: replaying %d journaled ops", len(report.pending))
        metrics.JOURNAL_BYTES.set(self.journal.bytes_on_disk)
        self._tasks = [
            asyncio.create_task(self._journal_loop(), name="writer-journal"),
            asyncio.create_task(self._commit_loop(), name="writer-commit"),
        ]
        return report

    def enqueue(self, op: Op) -> int:
        """Queue an op; returns its sequence number. No I/O, no await."""
        if self._closing:
            raise WriterClosed("the writer is closing; no new ops are accepted")
        seq = self._next_seq
        self._next_seq = seq + 1
        self._incoming.append((seq, op))
        sid = op.session_id
        if sid is not None:
            self._session_last[sid] = seq
        self._incoming_ready.set()
        return seq

    async def wait_accepted(self, seq: int) -> None:
        """Return once op `seq` is durable in the journal."""
        await self.accepted.wait_for(seq)

    async def flush(self, session_id: int | None = None) -> None:
        """Commit everything enqueued so far (or so far for one session) before returning."""
        target = self._next_seq - 1 if session_id is None else self._session_last.get(session_id, 0)
        if target <= self.committed.value:
            return
        self._flush_to = max(self._flush_to, target)
        self._commit_ready.set()
        await self.committed.wait_for(target)

    async def close(self, drain_timeout_s: float | None = None) -> bool:
        """Stop accepting, drain everything to the database; False if the drain timed out.

        Ops still uncommitted when `drain_timeout_s` runs out stay in the journal and are
        replayed at next start.
        """
        self._closing = True
        drained = True
        try:
            await asyncio.wait_for(self.flush(), drain_timeout_s)
        except TimeoutError:
            drained = False
            log.error(
                "writer: %d ops not committed at close; they stay in the journal for replay",
                self.pending,
            )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, self._mark_committed, self.committed.value)
        await loop.run_in_executor(self._io, self.journal.close)
        self._io.shutdown(wait=True)
        return drained

    @property
    def pending(self) -> int:
        return self._next_seq - 1 - self.committed.value

    @property
    def healthy(self) -> bool:
        return self.journal_ok and self.journal.bytes_on_disk <= self.cfg.journal_max_bytes

    def stats(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "database_ok": self.db_ok,
            "journal_ok": self.journal_ok,
            "pending_ops": self.pending,
            "accepted_seq": self.accepted.value,
            "committed_seq": self.committed.value,
            "journal_bytes": self.journal.bytes_on_disk,
            "rows_written": self.rows_written,
            "retries": self.retries,
            "rejected": self.rejected,
        }

    # --- journal ----------------------------------------------------------------------------

    def _seq_of(self, payload: bytes) -> int:
        try:
            return decode(payload)[0]
        except InvalidOp as exc:
            self._dead_letter_sync({"payload": payload.decode(errors="replace")}, str(exc))
            return 0

    def _append(self, batch: list[tuple[int, Op]]) -> None:
        records = [(seq, encode(seq, op)) for seq, op in batch]
        started = time.perf_counter()
        self.journal.append(records)
        metrics.JOURNAL_FSYNC_SECONDS.observe(time.perf_counter() - started)

    async def _journal_loop(self) -> None:
        loop = asyncio.get_running_loop()
        spacing = self.cfg.journal_fsync_interval_ms / 1000
        backoff = self.cfg.retry_initial_seconds
        while True:
            await self._incoming_ready.wait()
            self._incoming_ready.clear()
            if not self._incoming:
                continue
            batch = list(self._incoming)
            started = loop.time()
            try:
                await loop.run_in_executor(self._io, self._append, batch)
            except OSError as exc:
                # A full or failing disk: nothing is accepted until the journal takes it.
                self.journal_ok = False
                log.error("writer: journal append failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.retry_max_seconds)
                self._incoming_ready.set()
                continue
            self.journal_ok, backoff = True, self.cfg.retry_initial_seconds
            for _ in range(len(batch)):
                self._incoming.popleft()
            self._to_commit.extend(batch)
            self.accepted.advance(batch[-1][0])
            metrics.JOURNAL_BYTES.set(self.journal.bytes_on_disk)
            metrics.QUEUE_DEPTH.set(self.pending)
            self._commit_ready.set()
            # Bound the fsync rate under load; ops arriving meanwhile share the next fsync.
            rest = spacing - (loop.time() - started)
            if rest > 0:
                await asyncio.sleep(rest)

    # --- commits ----------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.cfg.batch_interval_ms / 1000
        limit = self.cfg.batch_max_ops
        trim: asyncio.Future[None] | None = None
        while True:
            await self._commit_ready.wait()
            self._commit_ready.clear()
            if not self._to_commit:
                continue
            deadline = loop.time() + interval
            while (
                len(self._to_commit) < limit
                and not self._closing
                and self._flush_to < self._to_commit[0][0]
                and (rest := deadline - loop.time()) > 0
            ):
                self._commit_ready.clear()
                try:
                    await asyncio.wait_for(self._commit_ready.wait(), rest)
                except TimeoutError:
                    break
            n = min(limit, len(self._to_commit))
            batch = [self._to_commit[i] for i in range(n)]
            await self._commit_with_retry(batch)
            for _ in range(n):
                self._to_commit.popleft()
            last = batch[-1][0]
            self.committed.advance(last)
            self._forget_sessions(last)
            metrics.QUEUE_DEPTH.set(self.pending)
            # Trimming shares the journal's thread; never make the next batch wait for it, and
            # skip a mark while one is in flight (the next mark covers it).
            if trim is None or trim.done():
                trim = loop.run_in_executor(self._io, self._mark_committed, last)
            if self._to_commit:
                self._commit_ready.set()

    def _mark_committed(self, seq: int) -> None:
        try:
            self.journal.mark_committed(seq)
        except OSError as exc:
            # Only costs a longer (idempotent) replay at next start.
            log.warning("writer: could not trim the journal: %s", exc)
        metrics.JOURNAL_BYTES.set(self.journal.bytes_on_disk)

    def _forget_sessions(self, committed: int) -> None:
        if len(self._session_last) > 1024:
            self._session_last = {s: q for s, q in self._session_last.items() if q > committed}

    async def _commit_with_retry(self, batch: list[tuple[int, Op]]) -> None:
        delay = self.cfg.retry_initial_seconds
        failures = 0
        ops = [op for _, op in batch]
        while True:
            started = time.perf_counter()
            try:
                async with self.engine.begin() as conn:
                    await apply_ops(conn, ops)
                    if self.commit_delay_s:
                        await asyncio.sleep(self.commit_delay_s)
                self._committed(len(ops), started)
                return
            except Exception as exc:
                permanent = is_permanent(exc)
                # A database that answers but keeps failing the same batch holds a poison op
                # that a transient-looking error hides; isolate rather than retry forever.
                if not permanent and failures >= 3 and await self._reachable():
                    permanent = True
                # When isolation itself hits a transient error, fall through to retry.
                if permanent and await self._isolate(batch, started):
                    return
                failures += 1
                self.db_ok = False
                self.retries += 1
                metrics.RETRIES.inc()
                log.warning(
                    "writer: batch of %d ops failed (%s: %s); retry %d in %.2fs",
                    len(ops),
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200],
                    failures,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.retry_max_seconds)

    async def _isolate(self, batch: list[tuple[int, Op]], started: float) -> bool:
        try:
            async with self.engine.begin() as conn:
                bad = await apply_isolated(conn, [op for _, op in batch])
        except Exception as exc:
            if not is_permanent(exc):
                return False
            # Every op passed its savepoint yet the commit itself was refused: keep them all,
            # with the reason, rather than retry a commit that cannot succeed.
            bad = [(op, exc) for _, op in batch]
        for op, err in bad:
            await self._dead_letter(describe(op), f"{type(err).__name__}: {err}")
        self._committed(len(batch) - len(bad), started)
        return True

    def _committed(self, n: int, started: float) -> None:
        self.db_ok = True
        self.rows_written += n
        metrics.ROWS_WRITTEN.inc(n)
        metrics.BATCH_SIZE.observe(n)
        metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)

    async def _reachable(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    async def _dead_letter(self, op: dict[str, Any], reason: str) -> None:
        await asyncio.get_running_loop().run_in_executor(
            self._io, self._dead_letter_sync, op, reason
        )

    def _dead_letter_sync(self, op: dict[str, Any], reason: str) -> None:
        self.rejected += 1
        metrics.REJECTED.inc()
        log.error("writer: op rejected (%s): %s", reason.splitlines()[0][:300], op)
        line = json.dumps({"at": time.time(), "reason": reason, "op": op}, default=str)
        self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.dead_letter_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
