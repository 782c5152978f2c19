"""Fakes that queue like a GPU (backend `gpu_sim`, profile `gpu-sim`): what the capacity
benchmark runs 64 sessions on without a GPU.

The plain fakes (`models/fakes.py`) sleep a fixed time however many requests run at once: a
device of infinite parallelism. Here each model is a `SimDevice` serving at most `slots`
requests at once (more wait, in arrival order), and a request's service time grows with its
work: ASR `fixed + per audio second`, TTS `fixed + per second of speech made`, the LLM
`first token + per token`. The constants are assumptions taken from published GPU figures;
config.yaml's `gpu-sim` profile names them and their sources.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from core.config import GPUSimConfig
from models.base import (
    SAMPLE_RATE,
    Audio,
    Message,
    ModelInfo,
    Sampling,
    StructuredOutputFailed,
    Transcript,
    Usage,
    check_audio,
    check_text,
)
from models.fakes import rubric_mark
from models.sentences import split_sentences

TTS_RATE = 24_000
CHARS_PER_SPOKEN_S = 15.0  # English read aloud: ~150 words a minute


class SimDevice:
    """`slots` requests served at once; each holds a slot for its service time, stretched by
    `overlap` for each request already running when it starts (requests on one GPU share it;
    those already running are not slowed: an approximation)."""

    def __init__(self, slots: int, overlap: float = 0.0):
        self.slots, self.overlap = slots, overlap
        self.busy = 0
        self._sem: asyncio.Semaphore | None = None

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        if self._sem is None:  # made on first use, inside the running loop
            self._sem = asyncio.Semaphore(self.slots)
        async with self._sem:
            self.busy += 1
            try:
                yield
            finally:
                self.busy -= 1

    async def serve(self, seconds: float) -> None:
        async with self.hold():
            await asyncio.sleep(seconds * (1 + self.overlap * (self.busy - 1)))


class SimASR:
    def __init__(self, cfg: GPUSimConfig, transcript: str = "simulated transcript"):
        self.cfg, self.transcript = cfg, transcript
        self.device = SimDevice(cfg.asr_slots, cfg.asr_overlap)
        self.info = ModelInfo("asr", "gpu-sim-asr", "gpu_sim", "sim", "none", cfg.model_dump())

    async def transcribe(
        self, audio: Audio, language: str = "en", prompt: str | None = None
    ) -> Transcript:
        audio = check_audio(audio, min_samples=SAMPLE_RATE // 10)
        seconds = len(audio) / SAMPLE_RATE
        ms = self.cfg.asr_fixed_ms + self.cfg.asr_ms_per_audio_s * seconds
        await self.device.serve(ms / 1000)
        return Transcript(self.transcript, (), 0.9, seconds, language)

    async def transcribe_batch(
        self, audios: Sequence[Audio], language: str = "en", prompts: Sequence[str | None] = ()
    ) -> list[Transcript]:
        """Several answers in one device request: the longest costs in full, the others a
        share (`asr_batch_share`) of their audio cost."""
        checked = [check_audio(a, min_samples=SAMPLE_RATE // 10) for a in audios]
        seconds = sorted((len(a) / SAMPLE_RATE for a in checked), reverse=True)
        cfg = self.cfg
        audio_s = seconds[0] + cfg.asr_batch_share * sum(seconds[1:]) if seconds else 0.0
        await self.device.serve((cfg.asr_fixed_ms + cfg.asr_ms_per_audio_s * audio_s) / 1000)
        return [
            Transcript(self.transcript, (), 0.9, len(a) / SAMPLE_RATE, language) for a in checked
        ]


class SimTTS:
    """Silence as long as the text would take to say, one sentence per device request."""

    def __init__(self, cfg: GPUSimConfig):
        self.cfg = cfg
        self.device = SimDevice(cfg.tts_slots)
        self.sample_rate = TTS_RATE
        self.info = ModelInfo("tts", "gpu-sim-tts", "gpu_sim", "sim", "none", cfg.model_dump())

    async def stream(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        text = check_text(text, "TTS text")
        for sentence in split_sentences(text):
            spoken_s = len(sentence) / CHARS_PER_SPOKEN_S
            ms = self.cfg.tts_fixed_ms + self.cfg.tts_ms_per_audio_s * spoken_s
            await self.device.serve(ms / 1000)
            yield bytes(2 * int(TTS_RATE * spoken_s))


class SimLLM:
    """vLLM-like: `llm_slots` sequences decode together; first token, then a steady rate."""

    def __init__(self, cfg: GPUSimConfig, text: str = "Thank you, that is noted."):
        self.cfg, self.tokens = cfg, [w + " " for w in text.split()]
        self.device = SimDevice(cfg.llm_slots)
        self.info = ModelInfo("llm", "gpu-sim-llm", "gpu_sim", "sim", "none", cfg.model_dump())

    async def stream(
        self, messages: Sequence[Message], sampling: Sampling, usage: Usage | None = None
    ) -> AsyncIterator[str]:
        tokens = self.tokens[: sampling.max_tokens]
        # The device is held for the whole generation; tokens are released at the decode rate.
        first = self.cfg.llm_first_token_ms / 1000
        step = self.cfg.llm_ms_per_token / 1000
        async with self.device.hold():
            await asyncio.sleep(first)
            for i, token in enumerate(tokens):
                if i:
                    await asyncio.sleep(step)
                if usage is not None:
                    usage.completion_tokens += 1
                yield token

    async def generate_json(
        self,
        messages: Sequence[Message],
        schema: dict[str, Any],
        sampling: Sampling,
        usage: Usage | None = None,
    ) -> dict[str, Any]:
        seconds = (self.cfg.llm_first_token_ms + 40 * self.cfg.llm_ms_per_token) / 1000
        await self.device.serve(seconds)  # ~40 tokens of JSON
        if "score" not in schema.get("properties", {}):
            raise StructuredOutputFailed("the simulated LLM only scores answers")
        return rubric_mark(messages)
