"""Soak and fault suite: N simulated students for M minutes against a local worker, with
PostgreSQL restarts, dropped and stalled links, bad frames, barge-ins and abandoned sessions;
then the database is checked against what the clients were told. Prints a table and writes
`--json PATH` with a PNG beside it (RSS over time, turn latency per minute).

Usage:
  python benchmarks/soak.py --profile fake --db postgres --sessions 50 --minutes 10 \
      --pg-restarts 3 --json results/soak_fake.json --worker-log results/soak_fake.log

`--workers N` starts N worker processes on the one PostgreSQL; each student creates its
sessions at a random worker and reconnects (after every drop) to a random one, retrying another
when told `session_elsewhere` (the owner still holds the session).

Each student answers every question at real-time pace with the clips of tests/data/clips and
starts a new session when one ends, so the load stays at N. Faults come every `--fault-every-s`
(round robin over `--faults`, each to a random student); PostgreSQL is restarted `--pg-restarts`
times, evenly spread, and always left running. At the end the students end their vivas, the
worker is stopped with SIGTERM (it drains its writer) and the rows are counted: see
benchmarks/soak_accounting.py for the rules. Exit status 1 when a row is missing or duplicated,
the worker logged an unhandled exception, its RSS grew by `--max-rss-growth-pct` (5) or more
from the minute after `--warmup-s` (180: the first vivas have completed and been graded, so every
path has run once; the growth from the first minute is reported beside it) to the last minute,
or the last minute's turn p95 rose more than `--max-p95-rise-pct` (10) over the first minute's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

from benchmarks import soak_faults as sf  # noqa: E402
from benchmarks.latency import (  # noqa: E402
    _free_port,
    _stop,
    _tail,
    _wait_ready,
    init_db,
    worker_env,
)
from benchmarks.latency_client import StudentConfig, load_clips, quantiles  # noqa: E402
from benchmarks.report import emit  # noqa: E402
from benchmarks.soak_accounting import (  # noqa: E402
    check_rows,
    growth_pct,
    log_problems,
    per_minute,
    slope_per_min,
    window_mean,
)
from benchmarks.soak_plot import plot  # noqa: E402
from benchmarks.soak_student import CLIENT_FAULTS, Shared, Student  # noqa: E402

FAULTS = ("pg_restart", *CLIENT_FAULTS)
RCVBUF_BYTES = 196_608  # a few loopback segments (MSS 64 KiB); a smaller window stalls


@asynccontextmanager
async def scratch_database(args: argparse.Namespace, tmp: Path) -> AsyncIterator[str]:
    """A fresh database for this run: a SQLite file, or `soak_<hex>` on the local PostgreSQL,
    dropped afterwards unless `--keep-db`."""
    if args.db == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp}/soak.db"
        return
    await asyncio.to_thread(sf.ensure_pg_started)
    name = f"soak_{secrets.token_hex(4)}"
    url = await sf.create_database(name)
    print(f"database {name}")
    try:
        yield url
    finally:
        await asyncio.to_thread(sf.ensure_pg_started)
        if not args.keep_db:
            await sf.drop_database(name)


@asynccontextmanager
async def soak_workers(
    args: argparse.Namespace, tmp: Path, db_url: str, api_key: str
) -> AsyncIterator[list[tuple[str, asyncio.subprocess.Process]]]:
    """`--workers` worker processes on the one database (each its own port, journal and log;
    node ids leased from PostgreSQL), started in turn, stopped together with SIGTERM."""
    async with contextlib.AsyncExitStack() as stack:
        started = []
        for i in range(args.workers):
            log = args.worker_log if i == 0 else args.worker_log.with_name(f"worker{i}.log")
            started.append(
                await stack.enter_async_context(
                    soak_worker(args, tmp / f"w{i}", db_url, api_key, log, init=i == 0)
                )
            )
        yield started


@asynccontextmanager
async def soak_worker(
    args: argparse.Namespace,
    tmp: Path,
    db_url: str,
    api_key: str,
    log_path: Path,
    init: bool = True,
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    port = _free_port()
    await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
    env = worker_env(args.profile, tmp, port, api_key, args.sessions)
    env |= {
        "DATABASE_URL": db_url,
        "VIVA__SERVER__SEND_TIMEOUT_SECONDS": str(args.send_timeout_s),
        "VIVA__EXAM__RECONNECT_GRACE_SECONDS": str(args.grace_s),
        "VIVA__SERVER__MAX_SESSIONS": str(args.sessions * 2 + 10),  # abandoned ones linger
    }
    if args.questions:
        env["VIVA__EXAM__TOTAL_QUESTIONS"] = str(args.questions)
    env["VIVA_TOKEN_SECRET"] = f"{api_key}-tokens"  # shared: a token opens on any worker
    env.update(kv.split("=", 1) for kv in args.worker_env)
    if init:
        await init_db(env)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "handler.py", "--serve", cwd=ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        await _wait_ready(f"http://127.0.0.1:{port}", proc, args.startup_timeout_s)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        await _stop(proc, args.stop_timeout_s)
        print(f"worker exited {proc.returncode}")
        if proc.returncode not in (0, -15):
            print(f"its log ends:\n{_tail(log_path)}")


async def schedule_faults(args: argparse.Namespace, sh: Shared, students: list[Student]) -> None:
    """Client faults round robin every `--fault-every-s`; PostgreSQL restarts evenly spread."""
    duration = args.minutes * 60
    restarts = [duration * (i + 1) / (args.pg_restarts + 1) for i in range(args.pg_restarts)]
    if "pg_restart" not in args.faults or args.db != "postgres":
        restarts = []
    kinds = [f for f in args.faults if f != "pg_restart"]
    next_fault, k = args.ramp_s + args.fault_every_s, 0
    while not sh.stop.is_set():
        now = time.monotonic() - sh.t0
        if restarts and now >= restarts[0]:
            restarts.pop(0)
            print(f"[{now:5.0f} s] restarting PostgreSQL")
            sh.faults["pg_restart"] += 1
            sh.restarts_s.append(now)
            await sf.pg_restart(args.pg_down_s)
        if kinds and now >= next_fault:
            idle = [s for s in students if s.pending is None]
            if idle:
                random.choice(idle).pending = kinds[k % len(kinds)]
                k += 1
            next_fault += args.fault_every_s
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    api_key = f"soak-{secrets.token_hex(12)}"
    with tempfile.TemporaryDirectory(prefix="viva-soak-") as tmpdir:
        tmp = Path(tmpdir)
        args.worker_log = args.worker_log or tmp / "worker.log"
        async with scratch_database(args, tmp) as db_url:
            async with soak_workers(args, tmp, db_url, api_key) as started:
                urls = [url for url, _ in started]
                sh, sampler = await drive(args, urls, api_key, started[0][1])
            rows = await sf.read_rows(db_url)
        # Inside the temporary folder: the worker's log is read there unless --worker-log.
        codes = [proc.returncode for _, proc in started]
        result = summarize(args, sh, sampler, rows, codes[0] if len(codes) == 1 else codes)
    if args.json:
        plot(result, sampler.main, sh.restarts_s, args.json.with_suffix(".png"))
        result["plot"] = str(args.json.with_suffix(".png"))
    return result


def _small_window_socket(addr_info: Any) -> socket.socket:
    """Client sockets with a small receive buffer, set before connecting so the TCP window
    stays small: a student that stops reading fills the server's socket in seconds, not after
    megabytes of examiner audio."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    return sock


async def drive(
    args: argparse.Namespace, urls: list[str], api_key: str, proc: asyncio.subprocess.Process
) -> tuple[Shared, sf.RssSampler]:
    connector = aiohttp.TCPConnector(limit=0, socket_factory=_small_window_socket)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        cfg = StudentConfig(
            http, urls[0], api_key, load_clips(), 0, 60.0,
            args.college, args.scenario, secrets.token_hex(3),
        )  # fmt: skip
        sh = Shared(cfg, time.monotonic(), args.send_timeout_s, workers=urls)
        sampler = sf.RssSampler(proc.pid, sh.t0, args.rss_every_s)
        students = [Student(sh, i) for i in range(args.sessions)]
        spread = args.ramp_s / max(1, args.sessions - 1)
        tasks = [
            asyncio.create_task(s.run(i * spread), name=f"s{i}") for i, s in enumerate(students)
        ]
        helpers = [
            asyncio.create_task(sampler.run(), name="rss"),
            asyncio.create_task(schedule_faults(args, sh, students), name="faults"),
        ]
        try:
            await asyncio.sleep(args.minutes * 60)
        finally:
            sh.stop.set()
            print(f"[{time.monotonic() - sh.t0:5.0f} s] stopping the students")
            _, pending = await asyncio.wait(tasks, timeout=60)
            for task in [*pending, *helpers]:
                task.cancel()
            await asyncio.wait([*tasks, *helpers])
            sampler.sample()
            sh.errors["student_stuck_at_stop"] += len(pending)
            for task in tasks:
                if not task.cancelled() and (exc := task.exception()) is not None:
                    sh.errors[f"crash:{type(exc).__name__}"] += 1
                    print(f"student crashed: {exc!r}")
            for task in helpers:
                if not task.cancelled() and (exc := task.exception()) is not None:
                    raise exc
    return sh, sampler


def summarize(
    args: argparse.Namespace,
    sh: Shared,
    sampler: sf.RssSampler,
    rows: dict[str, Any],
    exit_code: int | list[int | None] | None,
) -> dict[str, Any]:
    check = check_rows(sh.sessions, rows["answers"], rows["results"], rows["ended"])
    end = args.minutes * 60
    first = window_mean(sampler.main, args.ramp_s, args.ramp_s + 60)
    # A run too short for the warm-up compares the minute before the last one with the last.
    warm_from = min(args.warmup_s, max(args.ramp_s, end - 120))
    warm = window_mean(sampler.main, warm_from, warm_from + 60)
    last = window_mean(sampler.main, end - 60, end)
    half = [s for s in sampler.main if end / 2 <= s[0] <= end]
    minutes = per_minute(sh.latencies, end)
    keys = list(minutes)
    p95_first = minutes[keys[0]]["p95"] if keys else None
    p95_last = minutes[keys[-1]]["p95"] if keys else None
    log_path: Path = args.worker_log
    logs = [log_path] + [log_path.with_name(f"worker{i}.log") for i in range(1, args.workers)]
    problems = log_problems(
        [line for p in logs for line in p.read_text(errors="replace").splitlines()]
    )
    errors = {k: v for k, v in sorted(sh.errors.items()) if v}
    rss: dict[str, Any] = {
        "start": round(sampler.main[0][1], 1) if sampler.main else None,
        "end": round(sampler.main[-1][1], 1) if sampler.main else None,
        "first_full_minute_mean": None if first is None else round(first, 1),
        "warm_minute_from_s": warm_from,
        "warm_minute_mean": None if warm is None else round(warm, 1),
        "last_minute_mean": None if last is None else round(last, 1),
        # The verdict's figure: from the minute after --warmup-s (every path has run once: the
        # first vivas completed and were graded) to the last minute. The first-minute figure
        # also counts that warm-up.
        "growth_pct": growth_pct(warm, last),
        "growth_from_first_minute_pct": growth_pct(first, last),
        "slope_mb_per_min": _round(slope_per_min(sampler.main)),
        "slope_second_half_mb_per_min": _round(slope_per_min(half)),
    }
    if any(v for _, v in sampler.children):
        rss["children_end"] = round(sampler.children[-1][1], 1)
        rss["children_slope_mb_per_min"] = _round(slope_per_min(sampler.children))
    return {
        "profile": args.profile,
        "db": args.db,
        "sessions": args.sessions,
        "workers": args.workers,
        "minutes": args.minutes,
        "sessions_started": sum(s.connected for s in sh.sessions),
        "sessions_completed": sum(s.completed_status == "completed" for s in sh.sessions),
        "sessions_terminated": sum(s.completed_status == "terminated" for s in sh.sessions),
        "turns": sum(len(s.transcripts) for s in sh.sessions),
        "reconnects_resumed": sh.resumed,
        "rows_expected": check.rows_expected,
        "rows_found": check.rows_found,
        "rows_duplicated": check.rows_duplicated,
        "rows_unacknowledged": check.rows_unacknowledged,
        "rows_missing_first": check.missing,
        "rows_duplicated_first": check.duplicates,
        "db_session_statuses": rows["statuses"],
        "errors": {"unexpected": errors, "provoked": dict(sorted(sh.provoked.items()))},
        "faults_injected": dict(sorted(sh.faults.items())),
        "rss_mb": rss,
        "turn_latency_ms": {"all": quantiles([v for _, v in sh.latencies]), "per_minute": minutes},
        "p95_last_vs_first_minute_pct": growth_pct(p95_first, p95_last),
        "worker_exit_code": exit_code,
        "worker_log": str(log_path) if args.worker_log_kept else None,
        "worker_log_problems": problems,
        # What the client saw last in the first few sessions that met an unexpected error.
        "problem_sessions": [
            {"code": s.code, "problem": s.problem, "trail": list(s.trail)}
            for s in sh.sessions
            if s.problem is not None
        ][:5],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def verdict(
    result: dict[str, Any], max_rss_growth_pct: float, max_p95_rise_pct: float
) -> list[str]:
    """Why the run failed; empty when it passed. RSS growth is the last minute's mean against the
    first full minute after the ramp; the p95 check fails only on a rise (a faster last minute
    is no regression)."""
    out = []
    if result["rows_found"] != result["rows_expected"]:
        out.append(f"rows_found {result['rows_found']} != rows_expected {result['rows_expected']}")
    if result["rows_duplicated"]:
        out.append(f"rows_duplicated {result['rows_duplicated']}")
    if result["worker_log_problems"]["count"]:
        out.append(f"worker log problems {result['worker_log_problems']['count']}")
    if any(k.startswith("crash:") for k in result["errors"]["unexpected"]):
        out.append("a student crashed")
    growth = result["rss_mb"]["growth_pct"]
    if growth is None or growth >= max_rss_growth_pct:
        out.append(f"RSS growth {growth} % (limit {max_rss_growth_pct:g} %)")
    rise = result["p95_last_vs_first_minute_pct"]
    if rise is None or rise > max_p95_rise_pct:
        out.append(f"turn p95 last vs first minute {rise} % (limit +{max_p95_rise_pct:g} %)")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["fake", "cpu", "gpu"], default="fake")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument(
        "--workers", type=int, default=1,
        help="worker processes on the one database (PostgreSQL); students create and reconnect"
        " at a random one, and retry another when told session_elsewhere",
    )  # fmt: skip
    parser.add_argument("--minutes", type=float, default=2)
    parser.add_argument("--questions", type=int, default=6, help="questions per viva (0: config)")
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated subset")
    parser.add_argument("--fault-every-s", type=float, default=10)
    parser.add_argument("--pg-restarts", type=int, default=1)
    parser.add_argument("--pg-down-s", type=float, default=3)
    parser.add_argument("--send-timeout-s", type=float, default=3)
    parser.add_argument("--grace-s", type=float, default=10)
    parser.add_argument("--ramp-s", type=float, default=20, help="spread of the first sessions")
    parser.add_argument(
        "--warmup-s", type=float, default=180, help="RSS growth is measured from this minute on"
    )
    parser.add_argument("--rss-every-s", type=float, default=5)
    parser.add_argument("--startup-timeout-s", type=float, default=600)
    parser.add_argument("--stop-timeout-s", type=float, default=60)
    parser.add_argument("--college", default="law")
    parser.add_argument("--scenario", default="law_of_contract")
    parser.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--worker-log", type=Path, help="keep the worker's output here")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--max-rss-growth-pct", type=float, default=5.0)
    parser.add_argument("--max-p95-rise-pct", type=float, default=10.0)
    args = parser.parse_args(argv)
    args.faults = [f for f in args.faults.split(",") if f]
    if unknown := set(args.faults) - set(FAULTS):
        parser.error(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    if args.sessions < 1 or args.minutes <= 0 or args.workers < 1:
        parser.error("--sessions, --workers and --minutes must be positive")
    if args.workers > 1 and args.db != "postgres":
        parser.error("--workers needs --db postgres (SQLite has one writer process)")
    args.worker_log_kept = args.worker_log is not None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = asyncio.run(run(args))
    finally:
        sf.ensure_pg_started()  # even after an error or Ctrl-C mid-restart
    failed = verdict(result, args.max_rss_growth_pct, args.max_p95_rise_pct)
    result["verdict"] = "pass" if not failed else "; ".join(failed)
    emit(result, args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
