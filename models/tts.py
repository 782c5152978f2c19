"""Streaming TTS: Piper (cpu default, English voice) and Kokoro-82M through onnxruntime (gpu
default; CUDA provider there). Both speak a sentence at a time in the model's own executor, so
the first sentence's audio leaves while the rest is synthesized, and abandoning the stream stops
after the sentence in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from models.base import ModelInfo, WeightsMissing, check_text, float_to_pcm16
from models.sentences import split_sentences

_END = object()


async def _iterate_in(pool: ThreadPoolExecutor, it: Iterator[Any]) -> AsyncIterator[Any]:
    """Pull a blocking iterator one item at a time on `pool` (stops when the caller stops)."""
    loop = asyncio.get_running_loop()
    while True:
        item = await loop.run_in_executor(pool, next, it, _END)
        if item is _END:
            return
        yield item


class PiperTTS:
    def __init__(self, model: Path, config: Path, use_cuda: bool = False):
        from piper import PiperVoice

        for p in (model, config):
            if not p.is_file():
                raise WeightsMissing(str(p), "TTS Piper")
        self._voice = PiperVoice.load(str(model), config_path=str(config), use_cuda=use_cuda)
        self.sample_rate = int(self._voice.config.sample_rate)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts-piper")
        self.info = ModelInfo(
            "tts",
            model.stem,
            "piper",
            "cuda" if use_cuda else "cpu",
            str(model),
            {"sample_rate": self.sample_rate},
        )

    async def stream(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        text = check_text(text, "TTS text")
        chunks = iter(self._voice.synthesize(text))
        async for chunk in _iterate_in(self._pool, chunks):
            yield chunk.audio_int16_bytes

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class KokoroTTS:
    def __init__(self, model: Path, voices: Path, default_voice: str, device: str = "cpu"):
        import onnxruntime as ort
        from kokoro_onnx import Kokoro

        for p in (model, voices):
            if not p.is_file():
                raise WeightsMissing(str(p), "TTS Kokoro")
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        session = ort.InferenceSession(str(model), providers=providers)
        self._kokoro = Kokoro.from_session(session, str(voices))
        available = self._kokoro.get_voices()
        if default_voice not in available:
            raise ValueError(f"Kokoro voice {default_voice!r} not in {voices.name}: {available}")
        self._voice = default_voice
        self.sample_rate = 24_000
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts-kokoro")
        self.info = ModelInfo(
            "tts",
            "kokoro-82m",
            "kokoro",
            session.get_providers()[0],
            str(model),
            {"voice": default_voice, "voices": available, "sample_rate": self.sample_rate},
        )

    def _speak(self, sentence: str, voice: str) -> bytes:
        audio, _sr = self._kokoro.create(sentence, voice=voice, lang="en-us")
        return float_to_pcm16(np.asarray(audio, dtype=np.float32))

    async def stream(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        text = check_text(text, "TTS text")
        speak = partial(self._speak, voice=voice or self._voice)
        async for pcm in _iterate_in(self._pool, map(speak, split_sentences(text))):
            yield pcm

    def close(self) -> None:
        self._pool.shutdown(wait=True)
