"""End-of-turn benchmark: how often each way of ending a turn cuts a student off inside a pause,
and how long it keeps a student waiting after a true end.

    python benchmarks/turns.py [--set .cache/turn_set] [--limit N] [--asr-ms MS] [--eot-ms MS]
                               [--json PATH]

The set is scripts/make_turn_set.py's (made first if missing): answers with labelled pauses
(`mid_clause`, `after_filler`, `after_sentence`) and a labelled true end. Each answer's audio goes
through the real Silero VAD once; its frames are then replayed through the turn detector
(`worker/voice/turns.py`) with each method's policy (benchmarks/turn_replay.py):
- `vad_300`, `vad_500`, `vad_800`: VAD alone, a fixed silence ends the answer;
- `smart_turn`: Pipecat's default, Smart Turn v3.2 run on the audio so far after a 200 ms pause
  (that audio includes the pause, as Pipecat's does), end if > 0.5, else a 3 s fallback;
- `policy`: the worker's own (config.yaml `turn`, `worker/voice/policy.py`), fed as the
  listener (`worker/voice/listener.py`) feeds it: at each pause of `turn.segment_pause_ms` the
  open window of the answer is transcribed by faster-whisper tiny.en (the question's keywords
  and the sealed windows' text as the prompt) and the end-of-turn model hears the answer through
  the pause so far, as Pipecat's does (`--policy-eot-audio segment` cuts its audio at the
  segment's end instead).
  After a premature end the student's next words continue the same answer, as in the worker
  (which takes its reply back): they are transcribed and judged with the answer so far.
A signal asked for at audio time t reaches the detector at t + its latency: by default the wall
time the real call took here (each call made once and reused by every method, and by later runs
on the same set unless `--fresh`: signals_cache.json in the set's folder), or fixed values
from `--asr-ms` / `--eot-ms`. Turn settings come from config.yaml's cpu profile and the
environment (e.g. VIVA__TURN__SEGMENT_PAUSE_MS=200). A false cut-off is a decision inside a
labelled pause (or within 150 ms after it, before the VAD hears the student again); the delay is
true end -> decision. Prints a table; `--json PATH` writes the figures per method and a PNG
(cut-offs against p50 delay) beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its `models.py` would shadow
# the `models` package; put the repository root there instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

from benchmarks.turn_replay import (  # noqa: E402
    LABELS,
    Answer,
    Pause,
    PauseResult,
    replay,
    score,
    summarize,
)
from core.config import Config, TurnConfig, load_config  # noqa: E402
from models.base import SAMPLE_RATE, VAD_CHUNK  # noqa: E402
from worker.voice.listener import WINDOW_MS, asr_prompt, coverage  # noqa: E402
from worker.voice.policy import (  # noqa: E402
    FixedSilence,
    Policy,
    SmartTurnOnly,
    VivaPolicy,
    policy_for,
)
from worker.voice.turns import Paused, Relisten, TurnSettings  # noqa: E402

EXTRA_SILENCE_S = 2.0  # after each file: room for the 3 s fallback past its 3.5 s tail
SEGMENT_PAD_MS = 96  # as worker/voice/listener.py: word edges the VAD called silence
EOT_WINDOW_MS = 8000


@dataclass
class Item:
    answer: Answer
    audio: np.ndarray
    probabilities: list[float]
    keywords: tuple[str, ...]
    meta: dict[str, Any]


@dataclass(frozen=True)
class Method:
    name: str
    settings: TurnSettings
    policy: Policy
    eot: str | None = None  # "pause": audio through the pause so far; "segment": to its start
    asr: bool = False


def methods(cfg: Config, policy_eot_audio: str = "pause") -> list[Method]:
    t = cfg.turn
    base = TurnSettings(
        threshold=t.vad_threshold,
        min_speech_ms=t.min_speech_ms,
        speculative_ms=200,
        max_wait_ms=max(t.max_wait_ms, 3000),
    )
    out = [Method(f"vad_{ms}", base, FixedSilence(ms)) for ms in (300, 500, 800)]
    out.append(Method("smart_turn", base, SmartTurnOnly(0.5, 3000), eot="pause"))
    policy = TurnSettings(
        threshold=t.vad_threshold,
        min_speech_ms=t.min_speech_ms,
        speculative_ms=t.segment_pause_ms,
        max_wait_ms=t.max_wait_ms,
        relisten_ms=t.relisten_ms,
    )
    if policy_eot_audio == "both":
        variants = [("policy", "pause"), ("policy_eot_segment", "segment")]
    else:
        variants = [("policy", policy_eot_audio)]
    for name, audio in variants:
        out.append(Method(name, policy, policy_for(t), eot=audio, asr=True))
    return out


def load_set(folder: Path, limit: int | None, turn: TurnConfig) -> list[Item]:
    from models.silero import SileroVAD

    vad = SileroVAD()
    # the policy's own test of a whole answer, on the words the script says
    judge = policy_for(turn.model_copy(update={"policy": "viva"}))
    assert isinstance(judge, VivaPolicy)
    entries = json.loads((folder / "manifest.json").read_text())["answers"][:limit]
    items = []
    for e in entries:
        with wave.open(str(folder / e["file"])) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        audio = (pcm.astype(np.float32) / 32768.0).astype(np.float32)
        audio = np.concatenate([audio, np.zeros(int(EXTRA_SILENCE_S * SAMPLE_RATE), np.float32)])
        stream = vad.stream()
        n = len(audio) // VAD_CHUNK
        probs = [stream.probability(audio[i * VAD_CHUNK : (i + 1) * VAD_CHUNK]) for i in range(n)]
        pauses = tuple(Pause(p["start_ms"], p["end_ms"], p["label"]) for p in e["pauses"])
        complete = judge.whole(e["text"], coverage(e["text"], e["expected_keywords"]))
        answer = Answer(e["file"], pauses, e["true_end_ms"], complete)
        items.append(Item(answer, audio, probs, tuple(e["expected_keywords"]), e))
    return items


@dataclass
class Models:
    """The real ASR and end-of-turn model, each call made once and remembered with its time."""

    asr: Any
    eot: Any
    asr_ms: float | None
    eot_ms: float | None
    prompt_terms: bool = False
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    texts: dict[tuple[Any, ...], tuple[str, float]] = field(default_factory=dict)
    eots: dict[tuple[Any, ...], tuple[float, float]] = field(default_factory=dict)

    def load(self, path: Path, manifest_sha: str) -> None:
        """Answers (and measured times) of an earlier run on the same set, so a rerun that only
        changes the policy takes seconds; the times are that run's."""
        if not path.is_file():
            return
        saved = json.loads(path.read_text())
        if saved.get("manifest_sha256") != manifest_sha:
            return
        self.texts.update({tuple(k): (v, ms) for k, v, ms in saved["asr"]})
        self.eots.update({tuple(k): (v, ms) for k, v, ms in saved["eot"]})

    def save(self, path: Path, manifest_sha: str) -> None:
        data = {
            "manifest_sha256": manifest_sha,
            "asr": [[list(k), v, ms] for k, (v, ms) in self.texts.items()],
            "eot": [[list(k), v, ms] for k, (v, ms) in self.eots.items()],
        }
        path.write_text(json.dumps(data))

    def timed(self, coro: Any) -> tuple[Any, float]:
        start = time.perf_counter()
        value = self.loop.run_until_complete(coro)
        return value, (time.perf_counter() - start) * 1000

    def eot_at(self, item: Item, start_ms: int, end_ms: int) -> tuple[float, float]:
        key = (item.answer.name, max(start_ms, end_ms - EOT_WINDOW_MS), end_ms)
        if key not in self.eots:
            audio = item.audio[key[1] * 16 : end_ms * 16]
            self.eots[key] = self.timed(self.eot.probability(audio))
        p, ms = self.eots[key]
        return p, ms if self.eot_ms is None else self.eot_ms

    def text_of(self, item: Item, seg: tuple[int, int], before: str) -> tuple[str, float]:
        # as the listener prompts it: the question's keywords (models.asr.prompt_terms), then
        # the answer so far
        prompt = asr_prompt(item.keywords if self.prompt_terms else (), before)
        key = (item.answer.name, *seg, prompt or "")
        if key not in self.texts:
            start, end = max(0, seg[0] - SEGMENT_PAD_MS) * 16, (seg[1] + SEGMENT_PAD_MS) * 16
            audio = item.audio[start : max(end, start + SAMPLE_RATE // 10)]
            transcript, ms = self.timed(self.asr.transcribe(audio, "en", prompt=prompt))
            self.texts[key] = (transcript.text, ms)
        text, ms = self.texts[key]
        return text, ms if self.asr_ms is None else self.asr_ms


def signals_for(method: Method, models: Models | None, item: Item) -> Any:
    """The method's Signals over one answer: what its pauses learn, and when. Each model runs
    one call at a time (its own executor), so a call waits for the one before it."""

    # answer start -> (sealed windows, the open window's start, how far it reaches), as the
    # listener keeps them (worker/voice/listener.py)
    windows: dict[int, tuple[list[tuple[int, int]], int, int]] = {}
    # answer start -> the text it continues. After a premature end the worker takes its reply
    # back when the student goes on, and the continuation is judged (and transcribed) with the
    # answer so far (worker/voice/connection.py carries `flow.pending_text` to the listener).
    carried: dict[int, str] = {}
    latest = [""]  # the text of the answer heard last, through its last pause
    free_at = {"asr": 0.0, "eot": 0.0}  # audio ms when each model is next idle

    def queued(model: str, now: int, ms: float) -> float:
        done = max(now, free_at[model]) + ms
        free_at[model] = done
        return done - now

    def signals(event: Paused | Relisten, answer_start: int) -> PauseResult:
        assert models is not None
        now = event.at_ms + 32  # the frame that made the pause is in
        eot, eot_ms = None, 0.0
        if isinstance(event, Relisten):  # the model again, through the pause so far
            eot, eot_ms = models.eot_at(item, answer_start, now)
            return PauseResult(eot=eot, eot_ms=queued("eot", now, eot_ms))
        if method.eot == "pause":  # Pipecat: the audio so far, the pause's first 200 ms included
            eot, eot_ms = models.eot_at(item, answer_start, now)
        elif (
            method.eot == "segment"
        ):  # worker/voice/listener.py: the answer up to the segment's end
            eot, eot_ms = models.eot_at(item, answer_start, event.segment_end_ms)
        if eot is not None:
            eot_ms = queued("eot", now, eot_ms)
        if not method.asr:
            return PauseResult(eot=eot, eot_ms=eot_ms)
        if answer_start not in carried:
            carried[answer_start] = latest[0]
        sealed, start, reach = windows.get(answer_start, ([], answer_start, answer_start))
        if event.segment_start_ms > reach and reach - start >= WINDOW_MS:
            sealed = [*sealed, (start, reach)]  # sealed at the resume, a new window opens
            start = event.segment_start_ms
        windows[answer_start] = (sealed, start, event.segment_end_ms)
        text = carried[answer_start]
        for window in sealed:  # transcribed before, at their own pauses
            part, _ = models.text_of(item, window, text)
            text = f"{text} {part}".strip()
        part, asr_ms = models.text_of(item, (start, event.segment_end_ms), text)
        text = f"{text} {part}".strip()
        latest[0] = text
        covered = coverage(text, item.keywords)  # as the listener judges it
        return PauseResult(eot, eot_ms, text, covered, queued("asr", now, asr_ms))

    return signals if method.eot or method.asr else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    # config.yaml's cpu profile, with VIVA__TURN__... from the environment to try other settings.
    cfg = load_config(ROOT / "config.yaml", {**os.environ, "VIVA_PROFILE": "cpu"})
    if not (args.set / "manifest.json").is_file():
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_turn_set.py"), "--out", str(args.set)],
            check=True,
        )
    items = load_set(args.set, args.limit, cfg.turn)
    manifest_sha = hashlib.sha256((args.set / "manifest.json").read_bytes()).hexdigest()
    # The signals depend on the set and on how the ASR runs (its window, its model).
    asr_params = json.dumps(cfg.models.asr.model_dump(), sort_keys=True)
    manifest_sha = hashlib.sha256(f"{manifest_sha} {asr_params}".encode()).hexdigest()
    cache = args.set / "signals_cache.json"
    every = methods(cfg, args.policy_eot_audio)
    chosen = [m for m in every if not args.methods or m.name in args.methods]
    models = None
    if any(m.eot or m.asr for m in chosen):
        from models.hub import _build_asr, _build_eot

        models = Models(
            _build_asr(cfg.models),
            _build_eot(cfg.models),
            args.asr_ms,
            args.eot_ms,
            cfg.models.asr.prompt_terms,
        )
        if not args.fresh:
            models.load(cache, manifest_sha)
    result: dict[str, Any] = {}
    for method in chosen:
        started = time.perf_counter()
        outcomes = []
        for item in items:
            stops = replay(
                item.probabilities,
                method.settings,
                method.policy,
                signals_for(method, models, item),
            )
            outcomes.append(score(item.answer, stops))
        result[method.name] = summarize([i.answer for i in items], outcomes)
        print(f"{method.name}: replayed in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if models is not None:
        models.save(cache, manifest_sha)
    result["set"] = describe_set(items, args.set)
    result["signals"] = {
        "asr_ms": "measured" if args.asr_ms is None else args.asr_ms,
        "eot_ms": "measured" if args.eot_ms is None else args.eot_ms,
        "policy_eot_audio": args.policy_eot_audio,
    }
    if models is not None:
        for name, calls in (("asr", models.texts), ("eot", models.eots)):
            times = [ms for _v, ms in calls.values()]
            if times:
                result["signals"][f"{name}_measured_ms"] = {
                    "p50": round(statistics.median(times), 1),
                    "p95": round(float(np.percentile(times, 95)), 1),
                    "calls": len(times),
                }
        models.loop.close()
    return result


def describe_set(items: list[Item], folder: Path) -> dict[str, Any]:
    labels = Counter(p.label for i in items for p in i.answer.pauses)
    return {
        "folder": str(folder),
        "answers": len(items),
        "pauses": dict(sorted(labels.items())),
        "pauses_le_1500ms": sum(p.length_ms <= 1500 for i in items for p in i.answer.pauses),
        "voices": dict(Counter(i.meta["voice"].split(":")[0] for i in items)),
        "noisy": sum(i.meta["noise"] is not None for i in items),
    }


def pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def table(result: dict[str, Any]) -> str:
    head = f"{'method':<17}{'cut-off':>9}{'<=1.5s':>8}" + "".join(f"{lb[:12]:>14}" for lb in LABELS)
    head += f"{'answers cut':>13}{'p50 ms':>9}{'p95 ms':>9}{'whole p50':>10}{'no end':>8}"
    lines = [head]
    for name, m in result.items():
        if name in ("set", "signals"):
            continue
        by = m["false_cutoff_rate_by_label"]
        lines.append(
            f"{name:<17}{pct(m['false_cutoff_rate']):>9}{pct(m['false_cutoff_rate_le_1500ms']):>8}"
            + "".join(f"{pct(by[lb]):>14}" for lb in LABELS)
            + f"{pct(m['answers_cut_rate']):>13}{m['eot_delay_ms']['p50'] or '-':>9}"
            f"{m['eot_delay_ms']['p95'] or '-':>9}"
            f"{m['eot_delay_ms_complete']['p50'] or '-':>10}{m['never_ended']:>8}"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, m in result.items():
        if name in ("set", "signals") or m["eot_delay_ms"]["p50"] is None:
            continue
        x, y = m["eot_delay_ms"]["p50"], 100 * m["false_cutoff_rate"]
        ax.scatter([x], [y], s=40)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("p50 end-of-turn delay on true ends (ms)")
    ax.set_ylabel("false cut-offs in labelled pauses (%)")
    n_pauses = sum(result["set"]["pauses"].values())
    ax.set_title(f"End of turn on {result['set']['answers']} answers, {n_pauses} pauses")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=ROOT / ".cache" / "turn_set")
    parser.add_argument("--limit", type=int, help="only the first N answers of the set")
    parser.add_argument("--methods", nargs="*", help="only these (vad_300 .. smart_turn policy)")
    parser.add_argument(
        "--policy-eot-audio",
        choices=["segment", "pause", "both"],
        default="pause",
        help="what the policy's end-of-turn model hears: through the pause so far (the "
        "listener, as Pipecat), or the answer up to the segment's end; `both` adds the second "
        "as `policy_eot_segment`",
    )
    parser.add_argument("--asr-ms", type=float, help="fixed ASR latency instead of measured")
    parser.add_argument(
        "--eot-ms", type=float, help="fixed end-of-turn latency instead of measured"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="call the models again instead of reusing the answers and times of an earlier run "
        "(kept in the set's folder, signals_cache.json)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here (and a PNG beside it)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(table(result))
    print(json.dumps({"set": result["set"], "signals": result["signals"]}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        plot(result, args.json.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
