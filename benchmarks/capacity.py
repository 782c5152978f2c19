"""How many sessions one worker carries inside the turn budget: a sweep of concurrent sessions.

    python benchmarks/capacity.py --profile gpu-sim --sessions 1,8,16,24,32,48,64 --json out.json
    python benchmarks/capacity.py --profile cpu --sessions 1,2,3,4 --policy both --json out.json

For each session count (and each scheduling policy: `priority`, the model scheduler, or `fifo`,
arrival order as before it; `--policy both` runs the two side by side), a fresh local worker is
started and that many simulated students (benchmarks/latency.py's, real speech clips at real-time
pace) answer `--turns` questions each. Per row: turn latency p50/p95/p99 (the server's figure),
v2v p50/p95 (client side, complete answers), each model's queue wait (from the worker's
`viva_model_queue_wait_seconds` histogram: requests, mean, p95 bucket bound), the worker's
event-loop lag, and errors. `capacity_sessions_at_p95_400` is the largest session count whose
turn p95 <= 400 ms (counts are tried in increasing order; a count past the first failure does
not count), for the `priority` policy when it ran, else for the one that did;
`capacity_by_policy` has each. `clag99` is the simulated clients' own event-loop lag: when it
is large the clients, sharing the machine, are the bottleneck. Prints a table, writes
`--json PATH` and a plot of turn p95 against sessions next to it.

Profile `gpu-sim` (config.yaml) runs fakes that queue like a GPU (models/gpu_sim.py); `cpu` the
real cpu-profile models. Measure with nothing else running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its `models.py` would shadow
# the project's `models` package.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

from benchmarks import latency  # noqa: E402

BUDGET_MS = 400.0
WAIT_METRIC = "viva_model_queue_wait_seconds"


def queue_waits(metrics_text: str) -> dict[str, dict[str, Any]]:
    """Per model: requests started, mean wait and the p95 bucket's upper bound (ms)."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != WAIT_METRIC:
            continue
        for sample in family.samples:
            model = sample.labels.get("model", "?")
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                per = buckets.setdefault(model, {})
                per[le] = per.get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                sums[model] = sums.get(model, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                counts[model] = counts.get(model, 0.0) + sample.value
    out: dict[str, dict[str, Any]] = {}
    for model, n in sorted(counts.items()):
        p95 = None
        for le, cumulative in sorted(buckets.get(model, {}).items()):
            if n and cumulative >= 0.95 * n:
                p95 = None if le == float("inf") else round(le * 1000, 1)
                break
        mean = round(1000 * sums.get(model, 0.0) / n, 1) if n else None
        out[model] = {"requests": int(n), "mean_ms": mean, "p95_le_ms": p95}
    return out


async def _metrics(url: str) -> str:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(f"{url}/metrics") as resp:
        return await resp.text()


async def one_row(args: argparse.Namespace, policy: str, sessions: int) -> dict[str, Any]:
    """A fresh worker, `sessions` students, `args.turns` answers each."""
    run_args = latency.parse_args(
        [
            "--profile", args.profile,
            "--sessions", str(sessions),
            "--turns", str(args.turns),
            "--ramp-s", str(args.ramp_s),
            "--turn-timeout-s", str(args.turn_timeout_s),
            "--timeout-s", str(args.timeout_s),
            "--worker-env", f"VIVA__MODELS__SCHEDULING__POLICY={policy}",
            # Dozens of real-time clients on the worker's own cores fall behind and catch up in
            # bursts; a deep audio burst keeps the pacing limit from dropping their audio.
            "--worker-env", "VIVA__SERVER__AUDIO_BURST_SECONDS=30",
            # ... and all of them open their sockets from one address.
            "--worker-env", "VIVA__LIMITS__WS_OPENS_BURST=500",
            *[a for kv in args.worker_env for a in ("--worker-env", kv)],
        ]
    )  # fmt: skip
    api_key = f"bench-{secrets.token_hex(12)}"
    async with latency.local_worker(run_args, api_key) as url:
        result = await latency.run_students(run_args, url, api_key)
        waits = queue_waits(await _metrics(url))
    result.pop("_records", None)
    turn, v2v = result["turn_latency_ms"], result["v2v_ms"]
    lag = result.get("loop_lag_ms") or {}
    return {
        "policy": policy,
        "sessions": sessions,
        "turns": result["turns"],
        "sessions_completed": result["sessions_completed"],
        "turn_p50_ms": turn.get("p50"),
        "turn_p95_ms": turn.get("p95"),
        "turn_p99_ms": turn.get("p99"),
        "v2v_p50_ms": v2v.get("p50"),
        "v2v_p95_ms": v2v.get("p95"),
        "queue_wait": waits,
        "loop_lag_ms": dict(lag),
        "client_loop_lag_ms": dict(result.get("client_loop_lag_ms") or {}),
        "errors": dict(result["errors"]),
        "duration_s": result["duration_s"],
    }


def capacity(rows: list[dict[str, Any]], policy: str, budget_ms: float = BUDGET_MS) -> int:
    """The largest session count, tried in increasing order, whose turn p95 is within budget."""
    best = 0
    for row in sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["sessions"]):
        p95 = row["turn_p95_ms"]
        if p95 is None or p95 > budget_ms or row["errors"]:
            break
        best = row["sessions"]
    return best


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'policy':9} {'sess':>4} {'turns':>5} {'p50':>7} {'p95':>7} {'p99':>7} "
        f"{'v2v50':>7} {'v2v95':>7} {'asr wait':>14} {'tts wait':>14} {'lag99':>6} {'clag99':>6} "
        "errors"
    )
    out = [head]
    for r in rows:

        def wait(model: str, row: dict[str, Any] = r) -> str:
            w = row["queue_wait"].get(model)
            return "-" if not w else f"{w['mean_ms']}/{w['p95_le_ms']}"

        out.append(
            f"{r['policy']:9} {r['sessions']:>4} {r['turns']:>5} {_n(r['turn_p50_ms']):>7} "
            f"{_n(r['turn_p95_ms']):>7} {_n(r['turn_p99_ms']):>7} {_n(r['v2v_p50_ms']):>7} "
            f"{_n(r['v2v_p95_ms']):>7} {wait('asr'):>14} {wait('tts'):>14} "
            f"{_n(r['loop_lag_ms'].get('p99')):>6} {_n(r['client_loop_lag_ms'].get('p99')):>6} "
            f"{r['errors'] or ''}"
        )
    out.append("queue waits: mean/p95-bucket ms")
    return "\n".join(out)


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def plot(rows: list[dict[str, Any]], path: Path, profile: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy in sorted({r["policy"] for r in rows}):
        mine = sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["sessions"])
        xs = [r["sessions"] for r in mine]
        ax.plot(xs, [r["turn_p95_ms"] for r in mine], marker="o", label=f"{policy}: turn p95")
        ax.plot(xs, [r["turn_p50_ms"] for r in mine], ls=":", marker=".", label=f"{policy}: p50")
    ax.axhline(BUDGET_MS, color="grey", ls="--", lw=1, label="400 ms budget")
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("turn latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"Turn latency against sessions ({profile} profile)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


async def sweep(args: argparse.Namespace) -> dict[str, Any]:
    policies = ["fifo", "priority"] if args.policy == "both" else [args.policy]
    rows: list[dict[str, Any]] = []
    for sessions in args.sessions:
        for policy in policies:  # side by side at each count: drift hits both alike
            try:
                row = await one_row(args, policy, sessions)
            except SystemExit as exc:  # the worker did not start (a port taken meanwhile...)
                print(f"worker start failed ({exc}); once more", flush=True)
                row = await one_row(args, policy, sessions)
            rows.append(row)
            print(table([row]).splitlines()[1], flush=True)
    by_policy = {p: capacity(rows, p) for p in policies}
    main_policy = "priority" if "priority" in policies else policies[0]
    return {
        "profile": args.profile,
        "turns_per_session": args.turns,
        "budget_ms": BUDGET_MS,
        "rows": rows,
        "capacity_sessions_at_p95_400": by_policy[main_policy],
        "capacity_by_policy": by_policy,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["gpu-sim", "cpu", "fake", "gpu"], default="gpu-sim")
    parser.add_argument(
        "--sessions", default="1,8,16,24,32,48,64", help="comma-separated session counts"
    )
    parser.add_argument("--policy", choices=["priority", "fifo", "both"], default="priority")
    parser.add_argument("--turns", type=int, default=2, help="answers per session")
    parser.add_argument("--ramp-s", type=float, default=10.0, help="spread of session starts")
    parser.add_argument("--turn-timeout-s", type=float, default=90)
    parser.add_argument("--timeout-s", type=float, default=900)
    parser.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG path (default: the JSON path, .png)")
    args = parser.parse_args(argv)
    try:
        args.sessions = sorted({int(n) for n in args.sessions.split(",") if n.strip()})
    except ValueError:
        parser.error("--sessions takes comma-separated integers")
    if not args.sessions or min(args.sessions) < 1 or args.turns < 1:
        parser.error("session counts and --turns must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(sweep(args))
    print(table(result["rows"]))
    print(f"capacity at turn p95 <= {BUDGET_MS:g} ms: {result['capacity_by_policy']}")
    plot_path = args.plot or (args.json.with_suffix(".png") if args.json else None)
    if plot_path:
        plot(result["rows"], plot_path, args.profile)
        result["plot"] = str(plot_path)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(r["turns"] for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
