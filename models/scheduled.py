"""The models behind their schedulers (`models/scheduler.py`): same protocols, so the worker
cannot tell, except that a busy model now serves the most urgent request next.

- ASR: one slot per transcription; with `batch` > 1 (and a backend with `transcribe_batch`), the
  request that gets the slot takes up to `batch` - 1 others waiting for it along, most urgent
  first, as one batch (one encoder pass, one decode); those return as soon as it is done.
- TTS: one slot per chunk (a sentence, for the real backends): a reply's first sentence goes in
  at the caller's priority, its later sentences at `SPEECH`, so another session's first sentence
  can go between them.
- LLM: one slot per request for its whole stream (vLLM batches the requests holding slots).
- The end-of-turn model is not scheduled: one small CPU inference per pause, on its own thread.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Histogram

from models.base import ASR, LLM, TTS, Audio, Message, Sampling, Transcript, Usage
from models.scheduler import (
    Priority,
    Request,
    Scheduler,
    at_priority,
    current_request,
    current_session,
)

QUEUE_WAIT = Histogram(
    "viva_model_queue_wait_seconds",
    "Time a model request waited for its model, by model and priority",
    ["model", "priority"],
    buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4),
)


def observe_wait(model: str, priority: Priority, waited_s: float) -> None:
    QUEUE_WAIT.labels(model, priority.name.lower()).observe(waited_s)


@dataclass(eq=False)
class _Job:
    audio: Audio
    language: str
    prompt: str | None
    request: Request
    seq: int
    future: asyncio.Future[Transcript] = field(default_factory=lambda: _future())


def _future() -> asyncio.Future[Transcript]:
    return asyncio.get_running_loop().create_future()


class ScheduledASR:
    def __init__(self, inner: ASR, scheduler: Scheduler, batch: int = 1):
        self.inner, self.scheduler, self.info = inner, scheduler, inner.info
        self.batch = batch if hasattr(inner, "transcribe_batch") else 1
        self._waiting: list[_Job] = []  # batchable requests not yet taken into a batch
        self._seq = itertools.count()
        self.batches: list[int] = []  # sizes of the batches run (the benchmark reads them)
        self._running: set[asyncio.Task[None]] = set()

    async def transcribe(
        self, audio: Audio, language: str = "en", prompt: str | None = None
    ) -> Transcript:
        if self.batch <= 1:
            async with self.scheduler.slot():
                return await self.inner.transcribe(audio, language, prompt)
        job = _Job(audio, language, prompt, current_request(), next(self._seq))
        self._waiting.append(job)
        acquire = asyncio.ensure_future(self.scheduler.acquire(job.request, current_session()))
        try:
            either: set[asyncio.Future[Any]] = {acquire, job.future}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._drop(job, acquire)
            raise
        if job.future.done() or job not in self._waiting:  # in another request's batch
            self._drop(job, acquire)
            return await asyncio.shield(job.future)
        batch = self._take(job)
        # The batch runs in its own task, holding the slot until it ends: a caller that leaves
        # (its task cancelled) does not cancel the others' transcriptions.
        runner = asyncio.ensure_future(self._run(batch))
        self._running.add(runner)
        runner.add_done_callback(self._running.discard)
        return await asyncio.shield(job.future)

    def _take(self, first: _Job) -> list[_Job]:
        """`first` and up to `batch` - 1 waiting requests of its language, most urgent first."""
        self._waiting.remove(first)
        others = sorted(
            (j for j in self._waiting if j.language == first.language and not j.future.done()),
            key=lambda j: (j.request.priority, j.seq),
        )[: self.batch - 1]
        for j in others:
            self._waiting.remove(j)
        return [first, *others]

    async def _run(self, batch: list[_Job]) -> None:
        try:
            self.batches.append(len(batch))
            if len(batch) == 1:
                one = batch[0]
                results = [await self.inner.transcribe(one.audio, one.language, one.prompt)]
            else:
                many = self.inner.transcribe_batch  # type: ignore[attr-defined]
                results = await many(
                    [j.audio for j in batch], batch[0].language, [j.prompt for j in batch]
                )
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)
        except Exception as exc:
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
                    job.future.exception()  # retrieved: a caller that left logs nothing
        finally:
            for job in batch:
                if not job.future.done():
                    job.future.cancel()
            self.scheduler.release()

    def _drop(self, job: _Job, acquire: asyncio.Future[None]) -> None:
        """`job` no longer needs the slot it asked for."""
        if job in self._waiting:
            self._waiting.remove(job)
        if acquire.done():
            if not acquire.cancelled() and acquire.exception() is None:
                self.scheduler.release()  # granted: hand it on
        else:
            acquire.cancel()  # leaves the queue (the scheduler hands on a late grant)

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
        stream = self.inner.stream(messages, sampling, usage)
        try:
            async with self.scheduler.slot():
                async for delta in stream:
                    yield delta
        finally:
            # Closing this stream closes the model's at once (aborting the request in the
            # engine), not when the garbage collector gets to it.
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

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


def unwrapped(model: Any) -> Any:
    """The backend behind a scheduled model (tests and tools that need the backend itself)."""
    return getattr(model, "inner", model)
