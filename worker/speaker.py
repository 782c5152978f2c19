"""What the examiner says, as audio: LLM acknowledgements streamed through the sentence splitter
into streaming TTS, and fixed prompts (greeting, questions) synthesized once and cached.

`speak()` yields `(text_delta, pcm16_bytes)` pairs; the session turns them into transcript
deltas and paced audio frames. Cancelling the iterator (barge-in) closes the LLM stream, which
aborts the request in the engine, and stops TTS after the sentence in flight.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from models.base import LLM, TTS, ModelError, Sampling
from models.sentences import SentenceBuffer

log = logging.getLogger(__name__)

ACK_SYSTEM = (
    "You are a calm, friendly oral examiner. Acknowledge the student's answer in one short "
    "sentence of at most twelve words. Do not say whether it was right or wrong, do not ask "
    "anything, and do not repeat the answer."
)


class Speaker:
    def __init__(self, llm: LLM, tts: TTS, ack_sampling: Sampling):
        self.llm = llm
        self.tts = tts
        self.ack_sampling = ack_sampling
        self._cache: dict[str, bytes] = {}

    async def prepare(self, texts: Sequence[str]) -> None:
        """Synthesize fixed prompts ahead of time (questions are known at session start)."""
        for text in texts:
            if text not in self._cache:
                self._cache[text] = b"".join([c async for c in self.tts.stream(text)])

    async def say(self, text: str) -> AsyncIterator[tuple[str, bytes]]:
        cached = self._cache.get(text)
        if cached is not None:
            yield text, cached
            return
        first = True
        async for pcm in self.tts.stream(text):
            yield (text if first else ""), pcm
            first = False

    async def acknowledge(
        self, question: str, answer: str, fallback: str
    ) -> AsyncIterator[tuple[str, bytes]]:
        """A short LLM acknowledgement, spoken clause by clause as it streams; the flow's own
        text if the LLM fails, so the student never meets silence."""
        messages = [
            {"role": "system", "content": ACK_SYSTEM},
            {"role": "user", "content": f"Question: {question}\nStudent's answer: {answer}"},
        ]
        buffer = SentenceBuffer()
        spoke = False
        stream = self.llm.stream(messages, self.ack_sampling)
        try:
            async for delta in stream:
                for sentence in buffer.push(delta):
                    spoke = True
                    async for item in self.say(sentence):
                        yield item
                if spoke:
                    break  # one sentence is all an acknowledgement needs
            if not spoke:
                for sentence in buffer.flush():
                    spoke = True
                    async for item in self.say(sentence):
                        yield item
        except ModelError as exc:
            log.warning("acknowledgement LLM failed (%s); using the fixed text", exc)
        finally:
            await _close(stream)
        if not spoke:
            async for item in self.say(fallback):
                yield item


async def _close(stream: AsyncIterator[str]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(RuntimeError):  # already closed
            await aclose()
