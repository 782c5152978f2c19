"""Per-model latency of the real models of a profile: VAD, ASR, LLM, TTS, end of turn.

    python benchmarks/models.py [--config config.yaml] [--repeats 5] --json PATH

Medians of `--repeats` runs after the hub's warm-up, all measured in one process side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `models` package; drop the folder so the imports below find the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from benchmarks.report import emit  # noqa: E402
from core.config import load_config  # noqa: E402
from models.base import SAMPLE_RATE, VAD_CHUNK, Sampling, Usage  # noqa: E402
from models.hub import _build_tts, load_hub  # noqa: E402

CLIPS = Path(__file__).resolve().parents[1] / "tests" / "data" / "clips"
PROMPT = [
    {"role": "system", "content": "You are a friendly viva examiner. Reply in one sentence."},
    {"role": "user", "content": "A contract needs an offer, acceptance and consideration."},
]
SENTENCE = "Thank you, that is a good answer. Now tell me about the duty of care."


def _clip(seconds: float) -> np.ndarray:
    with wave.open(str(CLIPS / "engineering_bridge_long.wav")) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = (data.astype(np.float32) / 32768.0).astype(np.float32)
    n = int(seconds * SAMPLE_RATE)
    return np.pad(audio, (0, max(0, n - len(audio))))[:n].astype(np.float32)


async def _llm_once(llm: Any) -> tuple[float, float]:
    usage = Usage()
    start = time.perf_counter()
    first = None
    async for _ in llm.stream(PROMPT, Sampling(temperature=0, max_tokens=64), usage):
        first = first or time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    rate = (usage.completion_tokens - 1) / (end - first) if end > first else 0.0
    return (first - start) * 1000, rate


async def _tts_once(tts: Any) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    samples = 0
    async for chunk in tts.stream(SENTENCE):
        first = first or time.perf_counter()
        samples += len(chunk) // 2
    total = time.perf_counter() - start
    assert first is not None
    return (first - start) * 1000, total / (samples / tts.sample_rate)


async def run(config_path: str, repeats: int) -> dict[str, Any]:
    cfg = load_config(config_path, {})
    hub = await load_hub(cfg.models)
    out: dict[str, Any] = {"profile": cfg.profile, "repeats": repeats}
    try:
        stream = hub.vad.stream()
        chunk = _clip(1.0)[:VAD_CHUNK]
        t = time.perf_counter()
        for _ in range(2000):
            stream.probability(chunk)
        out["vad_ms_per_chunk"] = round((time.perf_counter() - t) / 2000 * 1000, 3)
        for secs in (1, 3, 8):
            audio = _clip(secs)
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                await hub.asr.transcribe(audio)
                times.append((time.perf_counter() - t) * 1000)
            out[f"asr_ms_{secs}s"] = round(statistics.median(times), 1)
        # The end-of-turn model always sees an 8 s window, so one length is enough.
        audio = _clip(8)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            await hub.eot.probability(audio)
            times.append((time.perf_counter() - t) * 1000)
        out["eot_ms"] = round(statistics.median(times), 1)
        runs = [await _llm_once(hub.llm) for _ in range(repeats)]
        out["llm_ttft_ms"] = round(statistics.median(r[0] for r in runs), 1)
        out["llm_tokens_per_s"] = round(statistics.median(r[1] for r in runs), 1)
        conc = await asyncio.gather(*(_llm_once(hub.llm) for _ in range(4)))
        out["llm_ttft_ms_concurrency_4"] = round(statistics.median(r[0] for r in conc), 1)
        for backend in ("piper", "kokoro"):
            tts_cfg = cfg.models.tts.model_copy(update={"backend": backend})
            tts = _build_tts(cfg.models.model_copy(update={"tts": tts_cfg}))
            await _tts_once(tts)  # warm
            runs = [await _tts_once(tts) for _ in range(repeats)]
            out[f"tts_first_audio_ms_{backend}"] = round(statistics.median(r[0] for r in runs), 1)
            out[f"tts_rtf_{backend}"] = round(statistics.median(r[1] for r in runs), 3)
            getattr(tts, "close", lambda: None)()
    finally:
        await hub.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    emit(asyncio.run(run(args.config, args.repeats)), args.json)


if __name__ == "__main__":
    main()
