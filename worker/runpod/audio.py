"""Audio in RunPod jobs: `decode_audio` turns `audio_b64` (a WAV file, or raw PCM16 with its
`sample_rate`) into 16 kHz mono float32 within the size limits, raising `JobError`;
`wav_bytes` packs TTS output as a WAV file. Pure functions, no I/O."""

from __future__ import annotations

import base64
import binascii
import io
import wave
from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.base import SAMPLE_RATE, Audio, pcm16_to_float
from models.resample import resample
from worker.runpod.errors import JobError

MAX_AUDIO_BYTES = 10 * 1024 * 1024  # decoded; RunPod's /run takes 10 MB per request anyway
MAX_AUDIO_SECONDS = 120.0  # SPEC's default max_question_duration_seconds
MIN_AUDIO_SECONDS = 0.1
# base64 carries 3 bytes in 4 characters; a longer string cannot decode under the limit.
MAX_AUDIO_B64_CHARS = (MAX_AUDIO_BYTES + 2) // 3 * 4 + 16
INPUT_RATES = (8000, 48000)  # sample rates accepted for input audio, inclusive


@dataclass(frozen=True)
class DecodedAudio:
    samples: Audio  # 16 kHz mono float32
    duration_s: float
    source_rate: int
    source: Literal["wav", "pcm16"]


def decode_audio(audio_b64: str, sample_rate: int | None = None) -> DecodedAudio:
    """`audio_b64` as 16 kHz mono float32: a 16-bit PCM WAV file (mono or stereo, any rate in
    INPUT_RATES), or raw PCM16LE mono at `sample_rate`. Raises JobError."""
    if len(audio_b64) > MAX_AUDIO_B64_CHARS:
        raise JobError("audio_too_large", f"audio is over {MAX_AUDIO_BYTES // 2**20} MB")
    try:
        data = base64.b64decode(audio_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise JobError("invalid_base64", f"audio_b64 is not valid base64: {exc}") from None
    if len(data) > MAX_AUDIO_BYTES:
        raise JobError("audio_too_large", f"audio is over {MAX_AUDIO_BYTES // 2**20} MB")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        pcm, rate, channels = _read_wav(data)
        source: Literal["wav", "pcm16"] = "wav"
    elif sample_rate is None:
        raise JobError(
            "invalid_audio", "audio_b64 is not a WAV file; raw PCM16 needs its sample_rate"
        )
    else:
        pcm, rate, channels, source = data, sample_rate, 1, "pcm16"
    if not INPUT_RATES[0] <= rate <= INPUT_RATES[1]:  # the job model checks it too
        raise JobError("invalid_audio", f"sample rate {rate} Hz is outside {INPUT_RATES}")
    if len(pcm) % (2 * channels):
        raise JobError("invalid_audio", "PCM16 data does not end on a whole sample")
    duration = len(pcm) / (2 * channels * rate)
    if duration > MAX_AUDIO_SECONDS:
        raise JobError(
            "audio_too_large", f"audio is {duration:.1f} s; the limit is {MAX_AUDIO_SECONDS:g} s"
        )
    if duration < MIN_AUDIO_SECONDS:
        raise JobError("invalid_audio", f"audio is {duration:.3f} s; too short to transcribe")
    samples = pcm16_to_float(pcm)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.float32)
    samples = resample(samples, rate, SAMPLE_RATE)
    return DecodedAudio(np.clip(samples, -1.0, 1.0), duration, rate, source)


def _read_wav(data: bytes) -> tuple[bytes, int, int]:
    try:
        with wave.open(io.BytesIO(data)) as w:
            width, rate, channels = w.getsampwidth(), w.getframerate(), w.getnchannels()
            pcm = w.readframes(w.getnframes())
    except Exception as exc:  # the wave module raises several kinds on malformed bytes
        raise JobError("invalid_audio", f"unreadable WAV file: {exc!r}") from None
    if width != 2:
        raise JobError("invalid_audio", f"WAV samples must be 16-bit PCM, not {8 * width}-bit")
    if channels not in (1, 2):
        raise JobError("invalid_audio", f"WAV must be mono or stereo, not {channels} channels")
    if not INPUT_RATES[0] <= rate <= INPUT_RATES[1]:
        raise JobError("invalid_audio", f"WAV sample rate {rate} Hz is outside {INPUT_RATES}")
    return pcm, rate, channels


def wav_bytes(pcm16: bytes, sample_rate: int) -> bytes:
    """Mono PCM16LE as a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm16)
    return out.getvalue()
