"""Silero VAD batched across sessions against one call per chunk: event-loop time per tick.

    python benchmarks/vad_batch.py [--sessions 1,8,16,32,64] [--ticks 300] --json PATH

Every 32 ms tick each live session brings one 512-sample chunk, and Silero runs on the event
loop. For N sessions (each streaming a committed speech clip, cycled) this times N one-chunk
calls (`probability`, `turn.vad.batch_ms` 0) against one call over all N chunks (what the
batcher makes of them), alternating the two per tick; medians over `--ticks`. Reports the loop
time per tick, its share of the 32 ms tick, and the speed-up; checks the two give the same
probabilities. Measure with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

from models.base import VAD_CHUNK  # noqa: E402
from models.silero import SileroVAD  # noqa: E402
from tests.integration.conftest import CLIPS, clips, read_wav  # noqa: E402

TICK_MS = 32.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    vad = SileroVAD()
    audios = [read_wav(CLIPS / c["file"]) for c in clips("speech")]
    rows = []
    for n in args.sessions:
        one_streams = [vad.stream() for _ in range(n)]
        many_streams = [vad.stream() for _ in range(n)]
        sources = [audios[i % len(audios)] for i in range(n)]
        one_t, many_t, worst = [], [], 0.0
        for tick in range(args.ticks):
            chunks = []
            for i, audio in enumerate(sources):
                at = ((tick + 7 * i) * VAD_CHUNK) % (len(audio) - VAD_CHUNK)
                chunks.append(np.ascontiguousarray(audio[at : at + VAD_CHUNK]))
            started = time.perf_counter()
            alone = [s.probability(c) for s, c in zip(one_streams, chunks, strict=True)]
            one_t.append(time.perf_counter() - started)
            started = time.perf_counter()
            together = vad.run(many_streams, chunks)
            many_t.append(time.perf_counter() - started)
            worst = max(worst, float(np.max(np.abs(np.asarray(alone) - together))))
        one_ms, many_ms = statistics.median(one_t) * 1000, statistics.median(many_t) * 1000
        rows.append(
            {
                "sessions": n,
                "one_by_one_ms": round(one_ms, 3),
                "batched_ms": round(many_ms, 3),
                "one_by_one_tick_share": round(one_ms / TICK_MS, 4),
                "batched_tick_share": round(many_ms / TICK_MS, 4),
                "speedup": round(one_ms / many_ms, 2),
                "max_abs_difference": worst,
            }
        )
    return {"tick_ms": TICK_MS, "ticks": args.ticks, "rows": rows}


def table(result: dict[str, Any]) -> str:
    lines = ["sessions  one-by-one ms  batched ms  share of tick (1 / batched)  speed-up  max diff"]
    for r in result["rows"]:
        lines.append(
            f"{r['sessions']:>8}  {r['one_by_one_ms']:>13.3f}  {r['batched_ms']:>10.3f}  "
            f"{100 * r['one_by_one_tick_share']:>12.1f} % / {100 * r['batched_tick_share']:.1f} %"
            f"  {r['speedup']:>8.2f}  {r['max_abs_difference']:.1e}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,8,16,32,64")
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.sessions = [int(n) for n in args.sessions.split(",") if n.strip()]
    result = run(args)
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
