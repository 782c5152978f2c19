"""Whisper on a short window against the whole 30 s window: time per call and the words.

    python benchmarks/asr_window.py [--pads 0,3,8] [--set .cache/turn_set] [--limit N]
                                    [--json PATH]
    python benchmarks/asr_window.py --model-dir /models/large-v3-turbo --device cuda \
        --compute-type float16 --json PATH                                    # on a GPU

faster-whisper pads every input to 30 s, and encoding that window is most of a short answer's
cost on a CPU. `models.asr.pad_seconds` encodes the audio plus that much silence instead
(`models/whisper.py`). For each pad this transcribes, one call at a time, alternating pads
item by item so they share the machine's noise:
- `clips`: the committed speech clips, against the text they speak;
- `answers`: the turn set's answers (scripts/make_turn_set.py) whole, against their text;
- `windows`: what the listener transcribes at each labelled pause (the answer up to that pause,
  as the first window of an answer is), against the start of the answer's text that is closest
  to what was heard (the set keeps no text per pause), and against the whole window's
  transcript of it (`agreement_wer`);
- `segments`: each answer cut at its labelled pauses, every stretch of speech transcribed on
  its own with the text before it as the prompt and the texts joined, as the listener does
  under load (`turn.busy_window_ms` 0), against the answer's text: the words that keeping
  every pause's window costs, next to `answers` (the same answers transcribed whole).
It reports, per pad and part, the median and p95 time per call, the word error rate (errors
over reference words, pooled) and how many decodes were redone whole because they looked
degenerate. Measure with nothing else running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its `models.py` would shadow
# the project's `models` package.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

from benchmarks.latency_client import percentile  # noqa: E402
from models.whisper import WhisperASR, tiny_en_path  # noqa: E402
from tests.integration.conftest import CLIPS, clips, read_wav  # noqa: E402
from tests.integration.wer import edit_distance, wer, words  # noqa: E402

PAD_MS = 96  # as the listener cuts a window (worker/voice/listener.py)
LEAD_MS = 300  # audio kept before the answer's first word


def turn_set_items(folder: Path, limit: int | None) -> tuple[list[tuple], list[tuple], list[tuple]]:
    manifest = json.loads((folder / "manifest.json").read_text())
    answers, windows, segments = [], [], []
    for entry in manifest["answers"][:limit]:
        with wave.open(str(folder / entry["file"])) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
        first = max(0, int((500 - LEAD_MS) * 16))  # the set leads with 0.5 s of silence
        end = min(len(pcm), int((entry["true_end_ms"] + PAD_MS) * 16))
        answers.append((entry["file"], pcm[first:end], entry["text"]))
        for pause in entry["pauses"]:
            cut = int((pause["start_ms"] + PAD_MS) * 16)
            if (cut - first) / 16000 <= 30:
                windows.append(
                    (f"{entry['file']}@{pause['start_ms']}", pcm[first:cut], entry["text"])
                )
        cuts = [first]
        for pause in entry["pauses"]:
            cuts += [int((pause["start_ms"] + PAD_MS) * 16), int((pause["end_ms"] - PAD_MS) * 16)]
        cuts.append(end)
        stretches = [pcm[a:b] for a, b in zip(cuts[::2], cuts[1::2], strict=True)]
        segments.append((entry["file"], stretches, entry["text"]))
    return answers, windows, segments


def prefix_of(text: str, heard: str) -> str:
    """The start of `text` closest to what was heard (fewest word errors)."""
    ref, hyp = words(text), words(heard)
    best = min(range(len(ref) + 1), key=lambda k: (edit_distance(ref[:k], hyp), -k))
    return " ".join(ref[:best])


def summary(times: list[float], refs: list[str], hyps: list[str], redone: int) -> dict[str, Any]:
    return {
        "calls": len(times),
        "ms_p50": round(statistics.median(times) * 1000, 1),
        "ms_p95": round((percentile(times, 95) or 0.0) * 1000, 1),
        "wer": round(wer(refs, hyps), 4),  # errors over reference words, pooled
        "redone": redone,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = Path(args.model_dir) if args.model_dir else tiny_en_path()
    asrs = {
        pad: WhisperASR(model_dir, args.device, args.compute_type, pad_s=pad) for pad in args.pads
    }
    parts: dict[str, list[tuple]] = {
        "clips": [
            (c["name"], read_wav(CLIPS / c["file"]), c["text"])
            for c in clips("speech")
            if c["duration_s"] <= 30
        ]
    }
    if (args.set / "manifest.json").is_file():
        parts["answers"], parts["windows"], parts["segments"] = turn_set_items(args.set, args.limit)
    else:
        print(f"no turn set at {args.set}: make it with scripts/make_turn_set.py", flush=True)
    rows = []
    try:
        for asr in asrs.values():
            await asr.transcribe(parts["clips"][0][1])  # warm
        for part, items in parts.items():
            got: dict[float, dict[str, list]] = {p: {"t": [], "text": []} for p in args.pads}
            before = {p: a.redone for p, a in asrs.items()}
            for i, (_name, audio, _ref) in enumerate(items):
                order = args.pads if i % 2 == 0 else args.pads[::-1]
                for pad in order:
                    said: list[str] = []
                    for stretch in audio if part == "segments" else [audio]:
                        prompt = " ".join(said) or None
                        started = time.perf_counter()
                        transcript = await asrs[pad].transcribe(stretch, prompt=prompt)
                        got[pad]["t"].append(time.perf_counter() - started)
                        said.append(transcript.text.strip())
                    got[pad]["text"].append(" ".join(t for t in said if t))
            for pad in args.pads:
                refs = [ref for _n, _a, ref in items]
                heard = got[pad]["text"]
                if part == "windows":
                    refs = [prefix_of(ref, h) for ref, h in zip(refs, heard, strict=True)]
                row: dict[str, Any] = {"part": part, "pad_s": pad}
                row.update(summary(got[pad]["t"], refs, heard, asrs[pad].redone - before[pad]))
                row["agreement_wer"] = round(wer(got[0.0]["text"], heard), 4)
                rows.append(row)
                print(row, flush=True)
    finally:
        for asr in asrs.values():
            asr.close()
    return {"model": model_dir.name, "device": args.device, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pads", default="0,3,8")
    parser.add_argument("--model-dir")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--set", type=Path, default=ROOT / ".cache" / "turn_set")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.pads = [float(p) for p in args.pads.split(",") if p.strip()]
    if 0.0 not in args.pads:
        parser.error("--pads must include 0: the windows are judged against the whole window")
    result = asyncio.run(run(args))
    print(
        f"{'part':>8} {'pad s':>5} {'calls':>5} {'p50 ms':>7} {'p95 ms':>7} {'WER':>6} "
        "vs-whole redone"
    )
    for r in result["rows"]:
        print(
            f"{r['part']:>8} {r['pad_s']:>5} {r['calls']:>5} {r['ms_p50']:>7} {r['ms_p95']:>7} "
            f"{r['wer']:>6} {r['agreement_wer']:>8} {r['redone']}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
