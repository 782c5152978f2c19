"""Batched Whisper against one-by-one: throughput of several answers at once.

    python benchmarks/asr_batch.py [--batches 1,2,4,8] [--repeats 3] --json PATH
    python benchmarks/asr_batch.py --model-dir /models/large-v3-turbo --device cuda \
        --compute-type float16 --json PATH                                  # on a GPU

For each batch size B, B answers (the committed speech clips, cycled) are transcribed one after
another (`transcribe`, as the worker does today) and together (`transcribe_batch`: one encoder
pass, one CTranslate2 `generate`), alternating, `--repeats` times; medians. Reports the wall
time of each, audio seconds transcribed per second, the speed-up, and whether the transcripts
are the same. Measure with nothing else running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its `models.py` would shadow
# the project's `models` package.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

from models.whisper import WhisperASR, tiny_en_path  # noqa: E402
from tests.integration.conftest import CLIPS, clips, read_wav  # noqa: E402


async def run(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = Path(args.model_dir) if args.model_dir else tiny_en_path()
    asr = WhisperASR(model_dir, args.device, args.compute_type)
    audios = [read_wav(CLIPS / c["file"]) for c in clips("speech") if c["duration_s"] <= 30]
    rows = []
    try:
        await asr.transcribe(audios[0])  # warm
        for b in args.batches:
            batch = [audios[i % len(audios)] for i in range(b)]
            seconds = sum(len(a) for a in batch) / 16000
            one_t, many_t = [], []
            same = True
            for _ in range(args.repeats):
                started = time.perf_counter()
                one = [await asr.transcribe(a) for a in batch]
                one_t.append(time.perf_counter() - started)
                started = time.perf_counter()
                many = await asr.transcribe_batch(batch)
                many_t.append(time.perf_counter() - started)
                same = same and [t.text for t in one] == [t.text for t in many]
            one_s, many_s = statistics.median(one_t), statistics.median(many_t)
            rows.append(
                {
                    "batch": b,
                    "audio_s": round(seconds, 1),
                    "one_by_one_ms": round(one_s * 1000, 1),
                    "batched_ms": round(many_s * 1000, 1),
                    "one_by_one_audio_s_per_s": round(seconds / one_s, 1),
                    "batched_audio_s_per_s": round(seconds / many_s, 1),
                    "speedup": round(one_s / many_s, 2),
                    "same_transcripts": same,
                }
            )
            print(rows[-1], flush=True)
    finally:
        asr.close()
    return {"model": model_dir.name, "device": args.device, "repeats": args.repeats, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-dir")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    result = asyncio.run(run(args))
    print(f"{'batch':>5} {'audio s':>7} {'1-by-1 ms':>9} {'batched ms':>10} {'speedup':>7} same")
    for r in result["rows"]:
        print(
            f"{r['batch']:>5} {r['audio_s']:>7} {r['one_by_one_ms']:>9} {r['batched_ms']:>10} "
            f"{r['speedup']:>7} {r['same_transcripts']}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(r["same_transcripts"] for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
