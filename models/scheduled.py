"""The models behind their schedulers (`models/scheduler.py`): same protocols, so the worker
cannot tell, except that a busy model now serves the most urgent request next.

- ASR: one slot per transcription.
- TTS: one slot per chunk (a sentence, for the real backends): a reply's first sentence goes in
  at the caller's priority, its later sentences at `SPEECH`, so another session's first sentence
  can go between them.
- LLM: one slot per request for its whole stream (vLLM batches the requests holding slots).
- The end-of-turn model is not scheduled: one small CPU inference per pause, on its own thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from prometheus_client import Histogram

from models.base import ASR, LLM, TTS, Audio, Message, Sampling, Transcript, Usage
from models.scheduler import Priority, Request, Scheduler, at_priority, current_request

QUEUE_WAIT = Histogram(
    "viva_model_queue_wait_seconds",
    "Time a model request waited for its model, by model and priority",
    ["model", "priority"],
    buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4),
)


def observe_wait(model: str, priority: Priority, waited_s: float) -> None:
    QUEUE_WAIT.labels(model, priority.name.lower()).observe(waited_s)


class ScheduledASR:
    def __init__(self, inner: ASR, scheduler: Scheduler):
        self.inner, self.scheduler, self.info = inner, scheduler, inner.info

    async def transcribe(
        self, audio: Audio, language: str = "en", prompt: str | None = None
    ) -> Transcript:
        async with self.scheduler.slot():
            return await self.inner.transcribe(audio, language, prompt)

    def close(self) -> None:
        _close(self.inner)


class ScheduledTTS:
    def __init__(self, inner: TTS, scheduler: Scheduler):
        self.inner, self.scheduler, self.info = inner, scheduler, inner.info
        self.sample_rate = inner.sample_rate

    async def stream(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        chunks = aiter(self.inner.stream(text, voice))
        request = current_request()
        try:
            while True:
                with at_priority(request):
                    async with self.scheduler.slot():
                        try:
                            chunk = await anext(chunks)
                        except StopAsyncIteration:
                            return
                yield chunk
                # Later sentences can wait a little (unless the whole text is less urgent).
                request = Request(max(request.priority, Priority.SPEECH))
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    def close(self) -> None:
        _close(self.inner)


class ScheduledLLM:
    def __init__(self, inner: LLM, scheduler: Scheduler):
        self.inner, self.scheduler, self.info = inner, scheduler, inner.info

    async def stream(
        self, messages: Sequence[Message], sampling: Sampling, usage: Usage | None = None
    ) -> AsyncIterator[str]:
        async with self.scheduler.slot():
            async for delta in self.inner.stream(messages, sampling, usage):
                yield delta

    async def generate_json(
        self,
        messages: Sequence[Message],
        schema: dict[str, Any],
        sampling: Sampling,
        usage: Usage | None = None,
    ) -> dict[str, Any]:
        async with self.scheduler.slot():
            return await self.inner.generate_json(messages, schema, sampling, usage)

    def close(self) -> None:
        _close(self.inner)


def _close(model: Any) -> None:
    close = getattr(model, "close", None)
    if close is not None:
        close()
