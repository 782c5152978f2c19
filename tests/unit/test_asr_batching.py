"""Batching transcriptions across sessions behind the ASR's scheduler (models/scheduled.py):
requests waiting for a busy model go together in one batch, the most urgent first; a caller
that leaves does not cancel the others; a failed batch fails each of its requests; no slot is
ever lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from models.base import Audio, ModelError, ModelInfo, Transcript
from models.scheduled import ScheduledASR
from models.scheduler import Priority, Scheduler, at_priority


class GatedASR:
    """Transcribes to the audio's length in samples; each call waits for `gate`."""

    def __init__(self) -> None:
        self.info = ModelInfo("asr", "gated", "fake", "none", "none")
        self.calls: list[list[int]] = []
        self.gate = asyncio.Event()
        self.fail = False

    async def transcribe(self, audio: Audio, language: str = "en", prompt: str | None = None):  # type: ignore[no-untyped-def]
        return (await self.transcribe_batch([audio], language, [prompt]))[0]

    async def transcribe_batch(
        self, audios: Sequence[Audio], language: str = "en", prompts: Sequence[str | None] = ()
    ) -> list[Transcript]:
        self.calls.append([len(a) for a in audios])
        await self.gate.wait()
        if self.fail:
            raise ModelError("the model refused")
        return [Transcript(str(len(a)), (), 0.9, len(a) / 16000, language) for a in audios]


def audio(n: int) -> Audio:
    return np.zeros(n, dtype=np.float32)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_waiting_requests_go_together_most_urgent_first() -> None:
    inner, sched = GatedASR(), Scheduler("asr", 1)
    asr = ScheduledASR(inner, sched, batch=3)
    first = asyncio.ensure_future(asr.transcribe(audio(1600)))
    await settle()
    with at_priority(Priority.SPECULATIVE):
        spec = [asyncio.ensure_future(asr.transcribe(audio(2000 + i))) for i in range(2)]
    await settle()
    final = asyncio.ensure_future(asr.transcribe(audio(3000)))  # a student waits for this
    await settle()
    inner.gate.set()
    results = await asyncio.gather(first, *spec, final)
    assert [t.text for t in results] == ["1600", "2000", "2001", "3000"]
    # The busy call alone, then one batch: the turn-critical request first, then speculation.
    assert inner.calls == [[1600], [3000, 2000], [2001]] or inner.calls == [
        [1600],
        [3000, 2000, 2001],
    ]
    assert asr.batches[0] == 1 and max(asr.batches) >= 2
    assert sched.depth == 0 and sched._busy == 0


async def test_a_caller_that_leaves_does_not_cancel_the_batch() -> None:
    inner, sched = GatedASR(), Scheduler("asr", 1)
    asr = ScheduledASR(inner, sched, batch=4)
    busy = asyncio.ensure_future(asr.transcribe(audio(1600)))
    await settle()
    a = asyncio.ensure_future(asr.transcribe(audio(2000)))
    b = asyncio.ensure_future(asr.transcribe(audio(2001)))
    gone = asyncio.ensure_future(asr.transcribe(audio(2002)))
    await settle()
    gone.cancel()  # waiting: it leaves the queue and the batch
    await settle()
    inner.gate.set()
    await busy
    assert [t.text for t in await asyncio.gather(a, b)] == ["2000", "2001"]
    await settle()
    assert [2002] not in inner.calls and all(2002 not in c for c in inner.calls)
    assert sched._busy == 0 and sched.depth == 0


async def test_the_leader_cancelled_mid_batch_leaves_the_others_their_results() -> None:
    inner, sched = GatedASR(), Scheduler("asr", 1)
    asr = ScheduledASR(inner, sched, batch=4)
    busy = asyncio.ensure_future(asr.transcribe(audio(1600)))
    await settle()
    leader = asyncio.ensure_future(asr.transcribe(audio(2000)))
    rider = asyncio.ensure_future(asr.transcribe(audio(2001)))
    await settle()
    inner.gate.set()
    await busy
    inner.gate.clear()
    await settle()  # the batch [2000, 2001] is running
    leader.cancel()
    await settle()
    inner.gate.set()
    assert (await rider).text == "2001"
    with pytest.raises(asyncio.CancelledError):
        await leader
    await settle()
    assert sched._busy == 0


async def test_a_failed_batch_fails_each_request_and_frees_the_slot() -> None:
    inner, sched = GatedASR(), Scheduler("asr", 1)
    asr = ScheduledASR(inner, sched, batch=4)
    busy = asyncio.ensure_future(asr.transcribe(audio(1600)))
    await settle()
    waiting = [asyncio.ensure_future(asr.transcribe(audio(2000 + i))) for i in range(3)]
    await settle()
    inner.fail = True
    inner.gate.set()
    for task in [busy, *waiting]:
        with pytest.raises(ModelError):
            await task
    await settle()  # the riders' places in the queue are given up
    assert sched._busy == 0 and sched.depth == 0


async def test_without_a_batch_method_requests_go_one_by_one() -> None:
    class Plain:
        info = ModelInfo("asr", "plain", "fake", "none", "none")

        async def transcribe(self, audio: Audio, language: str = "en", prompt: str | None = None):  # type: ignore[no-untyped-def]
            return Transcript("x", (), 0.9, 0.1, language)

    asr = ScheduledASR(Plain(), Scheduler("asr", 1), batch=8)  # type: ignore[arg-type]
    assert asr.batch == 1
    assert (await asr.transcribe(audio(1600))).text == "x"


async def test_closing_a_scheduled_llm_stream_closes_the_models_at_once() -> None:
    from models.base import Sampling
    from models.fakes import FakeLLM
    from models.scheduled import ScheduledLLM

    inner = FakeLLM(tokens=["a ", "b ", "c "], tokens_per_s=1000)
    llm = ScheduledLLM(inner, Scheduler("llm", 1))
    stream = llm.stream([{"role": "user", "content": "hi"}], Sampling(max_tokens=8))
    assert await anext(stream) == "a "
    assert inner.active == 1
    await stream.aclose()  # as the speaker does after the first sentence
    assert inner.active == 0 and llm.scheduler._busy == 0
