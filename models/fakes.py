"""Fakes behind the same protocols: scripted outputs and configurable delays, no weights.

For unit tests, load tests and fault injection (a slow ASR, a stalled LLM, a TTS that fails);
never a substitute for a real-model test of the same feature.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np

from models.base import (
    SAMPLE_RATE,
    VAD_CHUNK,
    Audio,
    InvalidAudio,
    Message,
    ModelInfo,
    Sampling,
    StructuredOutputFailed,
    Transcript,
    Usage,
    check_audio,
    check_text,
)


class FakeVADStream:
    """Speech probability from loudness: RMS above `threshold_dbfs` reads as speech."""

    def __init__(self, threshold_dbfs: float):
        self._threshold = threshold_dbfs

    def reset(self) -> None:
        return None

    def probability(self, chunk: Audio) -> float:
        if chunk.shape != (VAD_CHUNK,):
            raise InvalidAudio(f"VAD chunk must have {VAD_CHUNK} samples, got {chunk.shape}")
        rms = float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64))) + 1e-12)
        return 0.95 if 20 * np.log10(rms) > self._threshold else 0.02

    async def probabilities(self, chunks: list[Audio]) -> list[float]:
        return [self.probability(c) for c in chunks]


class FakeVAD:
    def __init__(self, threshold_dbfs: float = -40.0):
        self._threshold = threshold_dbfs
        self.info = ModelInfo("vad", "fake-vad", "fake", "none", "none")

    def stream(self) -> FakeVADStream:
        return FakeVADStream(self._threshold)


class FakeASR:
    """Returns `transcript` (or `transcript(audio)`) after `delay_ms`."""

    def __init__(
        self, transcript: str | Callable[[Audio], str] = "fake transcript", delay_ms: float = 0
    ):
        self.transcript = transcript
        self.delay_ms = delay_ms
        self.calls = 0
        self.prompts: list[str | None] = []  # each call's prompt, in order
        self.info = ModelInfo("asr", "fake-asr", "fake", "none", "none")

    async def transcribe(
        self, audio: Audio, language: str = "en", prompt: str | None = None
    ) -> Transcript:
        audio = check_audio(audio, min_samples=SAMPLE_RATE // 10)
        self.calls += 1
        self.prompts.append(prompt)
        await asyncio.sleep(self.delay_ms / 1000)
        text = self.transcript(audio) if callable(self.transcript) else self.transcript
        return Transcript(text, (), 0.9, len(audio) / SAMPLE_RATE, language)


def rubric_mark(messages: Sequence[Message], score: int = 5) -> dict[str, Any]:
    """A mark as the examiner LLM gives one: the score, a justification that names the question
    it judged (as the evaluators require), feedback for the student."""
    lines = [
        line
        for m in messages
        for line in m["content"].splitlines()
        if line.startswith("Question: ")
    ]
    question = lines[0].removeprefix("Question: ") if lines else "the question"
    return {
        "score": score,
        "justification": f"Judged against the guidelines for: {question}",
        "feedback": "Thank you, that is a fair attempt.",
    }


class FakeLLM:
    """Streams `tokens` at `tokens_per_s` after `first_token_ms`; JSON from `json_result`."""

    def __init__(
        self,
        tokens: Sequence[str] = ("Thank ", "you. ", "Next ", "question."),
        tokens_per_s: float = 200.0,
        first_token_ms: float = 0.0,
        json_result: dict[str, Any] | Callable[[Sequence[Message]], dict[str, Any]] | None = None,
    ):
        self.tokens = list(tokens)
        self.tokens_per_s = tokens_per_s
        self.first_token_ms = first_token_ms
        self.json_result = json_result
        self.active = 0  # requests currently generating: tests check cancellation frees them
        self.info = ModelInfo("llm", "fake-llm", "fake", "none", "none")

    async def stream(
        self, messages: Sequence[Message], sampling: Sampling, usage: Usage | None = None
    ) -> AsyncIterator[str]:
        self.active += 1
        if usage is not None:
            usage.prompt_tokens += sum(len(m["content"].split()) for m in messages)
        try:
            await asyncio.sleep(self.first_token_ms / 1000)
            for i, token in enumerate(self.tokens[: sampling.max_tokens]):
                if i:
                    await asyncio.sleep(1 / self.tokens_per_s)
                if usage is not None:
                    usage.completion_tokens += 1
                yield token
        finally:
            self.active -= 1

    async def generate_json(
        self,
        messages: Sequence[Message],
        schema: dict[str, Any],
        sampling: Sampling,
        usage: Usage | None = None,
    ) -> dict[str, Any]:
        await asyncio.sleep(self.first_token_ms / 1000)
        if usage is not None:
            usage.prompt_tokens += sum(len(m["content"].split()) for m in messages)
            usage.completion_tokens += 8
        if self.json_result is None:
            raise StructuredOutputFailed("fake LLM has no scripted JSON result")
        result = self.json_result(messages) if callable(self.json_result) else self.json_result
        return json.loads(json.dumps(result))


class FakeEOT:
    """End-of-turn probability `probability` (a constant, or a function of the audio so far),
    after `delay_ms`."""

    def __init__(self, probability: float | Callable[[Audio], float] = 0.9, delay_ms: float = 0):
        self.probability_of = probability
        self.delay_ms = delay_ms
        self.calls = 0
        self.info = ModelInfo("eot", "fake-eot", "fake", "none", "none")

    async def probability(self, audio: Audio) -> float:
        audio = check_audio(audio)
        self.calls += 1
        await asyncio.sleep(self.delay_ms / 1000)
        scripted = self.probability_of
        return float(scripted(audio) if callable(scripted) else scripted)


class FakeTTS:
    """Silence of the length real speech of the text would take, in ~100 ms chunks."""

    def __init__(
        self, sample_rate: int = 24_000, chars_per_s: float = 15.0, first_chunk_ms: float = 0.0
    ):
        self.sample_rate = sample_rate
        self.chars_per_s = chars_per_s
        self.first_chunk_ms = first_chunk_ms
        self.info = ModelInfo("tts", "fake-tts", "fake", "none", "none")

    async def stream(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        text = check_text(text, "TTS text")
        total = int(self.sample_rate * len(text) / self.chars_per_s)
        step = self.sample_rate // 10
        await asyncio.sleep(self.first_chunk_ms / 1000)
        for start in range(0, total, step):
            yield bytes(2 * min(step, total - start))
            await asyncio.sleep(0)
