"""End-to-end latency of the voice viva, measured the way a student meets it.

    python benchmarks/latency.py --url http://HOST:PORT --api-key KEY [options]   any deployment
    python benchmarks/latency.py --profile cpu|fake [options]                     a local worker

`--sessions N` simulated students (one asyncio process) each create a session, stream real speech
clips from tests/data/clips at real-time pace for `--turns T` answers, and measure:
- v2v_ms: the last voiced sample of the answer sent -> the first examiner audio frame received;
- turn_latency_ms: the server's own figure (`response.done.latency_ms`), and its stage breakdown
  (`response.done.stages_ms`, p50 per stage); turn_latency_ms_by_length and v2v_ms_by_length:
  the same per answer length (voiced seconds: <5 s, 5-10 s, 10-20 s), p50/p95 and n. The clips
  are taken with their lengths interleaved, so a few turns already include 15-19 s answers;
  v2v is only measured on complete answers (a reply that began before the answer's last voiced
  sample counts as `reply_before_end_of_speech` instead);
- overhead_ms: turn latency less the model time on the critical path (`stages_ms.
  critical_path_models`), meaningful with the fake profile's fixed model delays;
- loop_lag_ms: the server's event-loop lag from GET /healthz at the end; client_loop_lag_ms: this
  process's own, so a saturated client is visible.
Prints a table, writes `--json PATH` and a PNG next to it (`--plot`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its `models.py` would shadow
# the `models` package; put the repository root there instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

from benchmarks.latency_client import (  # noqa: E402
    LoopLag,
    StudentConfig,
    StudentResult,
    TurnRecord,
    by_length,
    interleave_by_length,
    load_clips,
    percentile,
    quantiles,
    run_student,
)
from benchmarks.report import emit  # noqa: E402

# Stages in the order they happen; any others the server reports follow, sorted.
STAGE_ORDER = (
    "endpoint_wait",
    "asr",
    "llm_first_token",
    "llm_first_sentence",
    "tts_first_audio",
    "db_enqueue",
)


class Row(dict[str, Any]):
    """A dict that prints as `p50 312.5  p95 340.1` in the table and stays a dict in the JSON."""

    def __str__(self) -> str:
        return "  ".join(f"{k} {'-' if v is None else v}" for k, v in self.items()) or "-"


class Lengths(dict[str, dict[str, Any]]):
    """Per-length figures; prints as `<5s p50 210.0 p95 260.0 n 4 | 5-10s ...` in the table."""

    def __str__(self) -> str:
        return " | ".join(f"{name} {Row(v)}" for name, v in self.items())


def length_pairs(records: Sequence[TurnRecord], figure: str) -> list[tuple[float, float]]:
    """(answer seconds, figure) of the records that have both."""
    out = []
    for r in records:
        value = getattr(r, figure)
        if r.answer_s is not None and value is not None:
            out.append((r.answer_s, float(value)))
    return out


# --- figures ---------------------------------------------------------------------------------


def stage_p50s(records: Sequence[TurnRecord]) -> dict[str, float | None]:
    names = {name for r in records for name in r.stages_ms}
    ordered = [s for s in STAGE_ORDER if s in names] + sorted(names - set(STAGE_ORDER))
    out: dict[str, float | None] = {}
    for name in ordered:
        value = percentile([r.stages_ms[name] for r in records if name in r.stages_ms], 50)
        out[name] = None if value is None else round(value, 1)
    return out


def summarize(
    results: Sequence[StudentResult],
    errors: Counter[str],
    client_lag: Sequence[float],
    server: dict[str, Any],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The benchmark's result: what the table prints and the JSON holds."""
    records = [r for res in results for r in res.records]
    for res in results:
        errors.update(res.errors)
    overheads = [o for r in records if (o := r.overhead_ms) is not None]
    lag = server.get("loop_lag_ms")
    return {
        "profile": meta["profile"],
        "url": meta["url"],
        "sessions": len(results),
        "sessions_completed": sum(res.finished for res in results),
        "turns": len(records),
        "turn_latency_ms": Row(
            quantiles([r.latency_ms for r in records if r.latency_ms is not None])
        ),
        "turn_latency_ms_by_length": Lengths(by_length(length_pairs(records, "latency_ms"))),
        "v2v_ms": Row(quantiles([r.v2v_ms for r in records if r.v2v_ms is not None])),
        "v2v_ms_by_length": Lengths(by_length(length_pairs(records, "v2v_ms"))),
        "stages_ms": Row(stage_p50s(records)),
        "overhead_ms": Row(quantiles(overheads, (50, 95))) if overheads else None,
        "loop_lag_ms": Row(lag) if isinstance(lag, dict) else None,
        "client_loop_lag_ms": Row(
            {**quantiles(client_lag, (50, 99)), "max": round(max(client_lag, default=0), 1)}
        ),
        "client_send_late_ms_max": round(max((r.max_late_ms for r in results), default=0), 1),
        "reply_kinds": Row(Counter(r.reply_kind for r in records)),
        "errors": Row(sorted(errors.items())),
        "duration_s": meta["duration_s"],
    }


# --- a local worker --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(profile: str, tmp: Path, port: int, api_key: str, sessions: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VIVA_PROFILE": profile,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/bench.db",
        "PORT": str(port),
        "VIVA_API_KEY": api_key,
        "VIVA__SERVER__MAX_SESSIONS": str(sessions + 10),
        "VIVA__WRITER__JOURNAL_DIR": str(tmp / "journal"),
    }


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def init_db(env: dict[str, str]) -> None:
    """Migrate and seed the database the worker environment `env` names (exit on failure)."""
    done = await asyncio.create_subprocess_exec(
        sys.executable, "scripts/init_db.py", cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await done.communicate()
    if done.returncode != 0:
        raise SystemExit(f"init_db failed:\n{output.decode(errors='replace')}")


@asynccontextmanager
async def local_worker(args: argparse.Namespace, api_key: str) -> AsyncIterator[str]:
    """Migrate a fresh SQLite database, start `handler.py --serve`, wait for GET /ping == 200;
    SIGTERM at the end (SIGKILL after `--stop-timeout-s`). Yields the base URL."""
    with tempfile.TemporaryDirectory(prefix="viva-bench-") as tmpdir:
        tmp, port = Path(tmpdir), _free_port()
        env = worker_env(args.profile, tmp, port, api_key, args.sessions)
        env.update(kv.split("=", 1) for kv in args.worker_env)
        await init_db(env)
        log_path = args.worker_log or tmp / "worker.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "handler.py", "--serve", cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        url, ready = f"http://127.0.0.1:{port}", False
        try:
            await _wait_ready(url, proc, args.startup_timeout_s)
            ready = True
            yield url
        finally:
            await _stop(proc, args.stop_timeout_s)
            if not ready or proc.returncode not in (0, -15):
                print(f"worker exited {proc.returncode}; its log ends:\n{_tail(log_path)}")


async def _wait_ready(url: str, proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while time.monotonic() - started < timeout_s:
            if proc.returncode is not None:
                raise SystemExit(f"worker exited {proc.returncode} while starting")
            try:
                async with http.get(f"{url}/ping") as resp:
                    if resp.status == 200:
                        print(f"worker ready in {time.monotonic() - started:.1f} s at {url}")
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass  # not listening yet
            await asyncio.sleep(0.5)
    raise SystemExit(f"worker not ready after {timeout_s:.0f} s")


async def _stop(proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()


# --- the run ---------------------------------------------------------------------------------


async def _healthz(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    try:
        async with http.get(f"{url}/healthz") as resp:
            body = await resp.json(content_type=None)
            return body if isinstance(body, dict) else {}
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}


async def run_students(args: argparse.Namespace, url: str, api_key: str) -> dict[str, Any]:
    started = time.monotonic()
    clips = interleave_by_length(load_clips())
    lag = LoopLag()
    errors: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=0)  # one WebSocket per student, and the POSTs
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        profile = (await _healthz(http, url)).get("profile", args.profile)
        cfg = StudentConfig(
            http, url, api_key, clips, args.turns, args.turn_timeout_s,
            args.college, args.scenario, secrets.token_hex(3),
        )  # fmt: skip
        results = [StudentResult(i) for i in range(args.sessions)]
        spread = args.ramp_s / max(1, args.sessions - 1) if args.sessions > 1 else 0.0
        sampler = asyncio.create_task(lag.run(), name="loop-lag")
        tasks = [
            asyncio.create_task(run_student(cfg, i, i * spread, results[i]), name=f"student-{i}")
            for i in range(args.sessions)
        ]
        _done, pending = await asyncio.wait(tasks, timeout=args.timeout_s)
        for task in [*pending, sampler]:
            task.cancel()
        await asyncio.wait(tasks)
        await asyncio.wait([sampler])
        for task in tasks:
            if task.cancelled():
                errors["run_timeout"] += 1
            elif (exc := task.exception()) is not None:
                errors[f"crash:{type(exc).__name__}"] += 1
        server = await _healthz(http, url)
    meta = {"profile": profile, "url": url, "duration_s": round(time.monotonic() - started, 1)}
    return summarize(results, errors, lag.samples, server, meta) | {"_records": results}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.url:
        return await run_students(args, args.url.rstrip("/"), args.api_key)
    api_key = f"bench-{secrets.token_hex(12)}"
    async with local_worker(args, api_key) as url:
        return await run_students(args, url, api_key)


# --- the plot --------------------------------------------------------------------------------


def plot(result: dict[str, Any], records: Sequence[TurnRecord], path: Path) -> None:
    """Latency CDFs (turn latency, v2v) and the p50 stage stack, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, stack) = plt.subplots(1, 2, figsize=(11, 4.5), width_ratios=(3, 1.3))
    series = {
        "turn latency (server)": [r.latency_ms for r in records if r.latency_ms is not None],
        "voice-to-voice (client)": [r.v2v_ms for r in records if r.v2v_ms is not None],
    }
    for label, values in series.items():
        if values:
            xs = [min(values), *sorted(values)]
            ys = [0.0] + [(i + 1) / len(values) for i in range(len(values))]
            cdf.step(xs, ys, where="post", label=f"{label}, p50 {percentile(values, 50):.0f} ms")
    cdf.axvline(400, color="grey", linestyle=":", label="400 ms budget")
    cdf.set(xlabel="ms", ylabel="fraction of turns", ylim=(0, 1.02))
    cdf.set_title(
        f"{result['profile']}: {result['sessions']} sessions, {result['turns']} turns", fontsize=10
    )
    cdf.legend(loc="lower right", fontsize=8)
    cdf.grid(alpha=0.3)
    bottom = 0.0
    stages = {k: v for k, v in result["stages_ms"].items() if v and k != "critical_path_models"}
    for name, value in _disjoint(stages).items():
        stack.bar(0, value, bottom=bottom, label=f"{name} {value:.0f}")
        bottom += value
    # The endpoint wait comes before the turn latency starts; the rest should fit inside it.
    turn_p50, v2v_p50 = result["turn_latency_ms"].get("p50"), result["v2v_ms"].get("p50")
    wait = stages.get("endpoint_wait", 0.0)
    if turn_p50 is not None:
        label = f"{'endpoint wait + ' if wait else ''}turn p50 {wait + turn_p50:.0f}"
        stack.axhline(wait + turn_p50, color="black", linestyle="--", label=label)
    if v2v_p50 is not None:
        stack.axhline(v2v_p50, color="grey", linestyle=":", label=f"v2v p50 {v2v_p50:.0f}")
    stack.set(xticks=[], ylabel="ms (p50)")
    stack.set_title("stage p50s (over turns that had the stage)", fontsize=9)
    if stack.get_legend_handles_labels()[0]:
        stack.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _disjoint(stages: dict[str, float]) -> dict[str, float]:
    """Time to first sentence includes time to first token: stack only the difference."""
    out = dict(stages)
    first, sentence = out.get("llm_first_token"), out.get("llm_first_sentence")
    if first is not None and sentence is not None and sentence >= first:
        out["llm_first_sentence"] = sentence - first
    return out


# --- entry -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running worker, http://host:port")
    where.add_argument(
        "--profile", choices=["cpu", "fake", "gpu", "gpu-sim"], help="start a local worker"
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("VIVA_API_KEY", "dev-api-key-change-me")
    )
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--ramp-s", type=float, default=2.0, help="spread of session starts")
    parser.add_argument("--timeout-s", type=float, default=600, help="bound on the sessions")
    parser.add_argument("--turn-timeout-s", type=float, default=60, help="bound on each wait")
    parser.add_argument("--startup-timeout-s", type=float, default=600)
    parser.add_argument("--stop-timeout-s", type=float, default=15)
    parser.add_argument("--college", default="law")
    parser.add_argument("--scenario", default="law_of_contract")
    parser.add_argument(
        "--worker-env", action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for the local worker, e.g. VIVA__TURN__END_SILENCE_MS=300",
    )  # fmt: skip
    parser.add_argument("--worker-log", type=Path, help="keep the local worker's output here")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG path (default: the JSON path, .png)")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.turns < 1:
        parser.error("--sessions and --turns must be at least 1")
    if any("=" not in kv for kv in args.worker_env):
        parser.error("--worker-env takes KEY=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    results: list[StudentResult] = result.pop("_records")
    plot_path = args.plot or (args.json.with_suffix(".png") if args.json else None)
    if plot_path:
        plot(result, [r for res in results for r in res.records], plot_path)
        result["plot"] = str(plot_path)
    emit(result, args.json)
    return 0 if result["turns"] else 1


if __name__ == "__main__":
    sys.exit(main())
