"""What the examiner says, as audio: LLM acknowledgements streamed through the sentence splitter
into streaming TTS, and fixed prompts (greeting, questions, fixed phrases) synthesized once per
process and cached.

`say()` and `acknowledge()` yield `(text_delta, pcm16_bytes)` pairs; the session turns them into
transcript deltas and paced audio frames. Cancelling the iterator (barge-in) closes the LLM
stream, which aborts the request in the engine, and stops TTS after the chunk in flight.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence

from prometheus_client import Counter

from models.base import LLM, TTS, Message, ModelError, Sampling
from models.sentences import SentenceBuffer
from worker.exam.evaluators import Question
from worker.exam.flow import Say
from worker.exam.probes import leaks
from worker.voice.metrics import TurnStages

log = logging.getLogger(__name__)
PROBES_REPLACED = Counter(
    "viva_llm_probes_replaced_total",
    "LLM-written follow-ups or clarifications replaced before they were spoken",
    ["kind"],
)

FOLLOWUP_SYSTEM = (
    "You are a calm oral examiner. The student's answer so far is incomplete. Ask exactly one "
    "short follow-up question, at most fifteen words, that invites them to say more or to "
    "explain their reasoning. Never name, hint at or define any point of the expected answer "
    "or the marking guidelines, and never say whether they were right."
)
CLARIFY_SYSTEM = (
    "You are a calm oral examiner. The student asked what the question means. Put the question "
    "another way in one or two short sentences, at most twenty-five words. Never give any part "
    "of the answer, name a point of the marking guidelines, or say what a good answer contains."
)
PROBE_MAX_WORDS = 30
_SENTENCE_END = re.compile(r"[?.!](?=\s|$)")


def probe_messages(kind: str, question: Question, said: str) -> list[Message]:
    """The LLM prompt for a follow-up (or, `kind` "clarify", a clarification)."""
    system = CLARIFY_SYSTEM if kind == "clarify" else FOLLOWUP_SYSTEM
    return [
        {"role": "system", "content": system},
        {
            "role": "user",
            "content": (
                f"Question: {question.text}\n"
                f"Marking guidelines (never reveal them): {question.answer_guidelines}\n"
                f'What the student has said: """{said.strip() or "nothing yet"}"""'
            ),
        },
    ]


# A small model may echo its instructions ("The student's answer is incomplete.") instead of
# speaking to the student: a text about "the student" is not said to one.
_THIRD_PERSON = re.compile(r"\b(the|this|a) (student|candidate)\b", re.I)
# A follow-up asks something: a question, or a request that opens with one of these verbs.
_REQUEST = re.compile(
    r"^(please )?(tell|explain|describe|give|say|walk|take|talk|go on|expand|elaborate)\b", re.I
)


def usable_probe(
    text: str,
    avoid: Sequence[str],
    synonyms: Mapping[str, Sequence[str]],
    kind: str = "followup",
) -> bool:
    """An LLM-written follow-up (or clarification) may be spoken: of reasonable length, said
    to the student rather than about them, naming no expected keyword the student has not said;
    a follow-up must also ask something (a question, or a request such as "Tell me more.")."""
    n = len(text.split())
    if not 2 <= n <= PROBE_MAX_WORDS or _THIRD_PERSON.search(text):
        return False
    if kind == "followup" and not (text.endswith("?") or _REQUEST.match(text)):
        return False
    return not leaks(text, avoid, synonyms)


ACK_SYSTEM = (
    "You are a calm, friendly oral examiner. Acknowledge the student's answer in one short "
    "sentence of at most twelve words. Do not say whether it was right or wrong, do not ask "
    "anything, and do not repeat the answer."
)


class PromptCache:
    """Synthesized audio of fixed texts, shared by every session of the process.

    Sessions of one college type ask the same questions, so one synthesis serves them all; two
    sessions wanting the same text at once share one synthesis. Least recently used entries go
    first once `max_bytes` is held.
    """

    def __init__(self, tts: TTS, max_bytes: int = 256 * 1024 * 1024):
        self.tts = tts
        self.max_bytes = max_bytes
        self._audio: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._bytes = 0

    def get(self, text: str) -> bytes | None:
        pcm = self._audio.get(text)
        if pcm is not None:
            self._audio.move_to_end(text)
        return pcm

    def ending(self, text: str) -> tuple[str, bytes] | None:
        """A cached text that `text` ends with ("Of course. <question>"), and its audio."""
        for cached, pcm in reversed(self._audio.items()):
            if text.endswith(cached) and text != cached:
                return text[: -len(cached)].strip(), pcm
        return None

    async def make(self, text: str) -> bytes:
        while (pending := self._pending.get(text)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The session making it went away; make it here instead.
        cached = self.get(text)
        if cached is not None:
            return cached
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[text] = future
        try:
            pcm = b"".join([c async for c in self.tts.stream(text)])
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: waiters re-raise it themselves
            raise
        finally:
            self._pending.pop(text, None)
        future.set_result(pcm)
        self._store(text, pcm)
        return pcm

    def _store(self, text: str, pcm: bytes) -> None:
        self._audio[text] = pcm
        self._bytes += len(pcm)
        while self._bytes > self.max_bytes and len(self._audio) > 1:
            _, old = self._audio.popitem(last=False)
            self._bytes -= len(old)


class Speaker:
    def __init__(self, llm: LLM, tts: TTS, cache: PromptCache, ack_sampling: Sampling):
        self.llm = llm
        self.tts = tts
        self.cache = cache
        self.ack_sampling = ack_sampling
        self.probe_sampling = Sampling(temperature=ack_sampling.temperature, max_tokens=48)

    async def prepare(self, texts: Sequence[str]) -> None:
        """Synthesize fixed prompts ahead of time (questions are known at session start)."""
        for text in texts:
            try:
                await self.cache.make(text)
            except ModelError as exc:  # the prompt is synthesized live when it is needed
                log.warning("could not pre-synthesize %r: %s", text[:40], exc)

    async def say(
        self, text: str, stages: TurnStages | None = None, fixed: bool = False
    ) -> AsyncIterator[tuple[str, bytes]]:
        """`fixed`: a text the exam speaks again and again (questions, set phrases): made
        whole once through the shared cache; other text streams from TTS as it is made."""
        started = time.perf_counter()
        cached = self.cache.get(text)
        if cached is None and fixed:
            cached = await self.cache.make(text)
        if cached is not None:
            _first_audio(stages, started)
            yield text, cached
            return
        lead = self.cache.ending(text)
        if lead is not None:  # "Of course." live, then the cached question
            async for item in self._synthesize(lead[0], stages, started):
                yield item
            yield f" {text[len(lead[0]) :].strip()}", lead[1]
            return
        async for item in self._synthesize(text, stages, started):
            yield item

    async def _synthesize(
        self, text: str, stages: TurnStages | None, started: float
    ) -> AsyncIterator[tuple[str, bytes]]:
        first = True
        async for pcm in self.tts.stream(text):
            if first:
                _first_audio(stages, started)
            yield (text if first else ""), pcm
            first = False

    async def probe(
        self, say: Say, question: Question, said: str, stages: TurnStages | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        """A follow-up (or a clarification) written by the LLM, whole, checked, then spoken:
        one that names any of `say.avoid` (or a synonym, or a word of the same stem), or that
        is empty or long, is replaced by the flow's own text (a generic probe, the question
        rephrased), as is the LLM's failure."""
        messages = probe_messages(say.kind, question, said)
        started = time.perf_counter()
        text = ""
        stream = self.llm.stream(messages, self.probe_sampling)
        try:
            async for delta in stream:
                if stages is not None and stages.llm_first_token is None:
                    stages.llm_first_token = _ms_since(started)
                text += delta
                if say.kind == "followup" and (end := _SENTENCE_END.search(text)):
                    text = text[: end.end()]  # one question is all a follow-up needs
                    break
                if len(text.split()) > PROBE_MAX_WORDS:
                    break  # too long to be usable: stop generating
        except ModelError as exc:
            log.warning("%s LLM failed (%s); using the fixed text", say.kind, exc)
            text = ""
        finally:
            await _close(stream)
        text = " ".join(text.split())
        safe = usable_probe(text, say.avoid, question.synonyms, say.kind)
        if not safe:
            PROBES_REPLACED.labels(say.kind).inc()
        _first_sentence(stages, started)
        async for item in self.say(text if safe else say.text, stages):
            yield item

    async def acknowledge(
        self, question: str, answer: str, fallback: str, stages: TurnStages | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        """A short LLM acknowledgement, spoken clause by clause as it streams; the flow's own
        text if the LLM fails, so the student never meets silence."""
        messages = [
            {"role": "system", "content": ACK_SYSTEM},
            {"role": "user", "content": f"Question: {question}\nStudent's answer: {answer}"},
        ]
        started = time.perf_counter()
        buffer = SentenceBuffer()
        spoke = False
        stream = self.llm.stream(messages, self.ack_sampling)
        try:
            async for delta in stream:
                if stages is not None and stages.llm_first_token is None:
                    stages.llm_first_token = _ms_since(started)
                for sentence in buffer.push(delta):
                    spoke = _first_sentence(stages, started)
                    async for item in self.say(sentence, stages):
                        yield item
                if spoke:
                    break  # one sentence is all an acknowledgement needs
            if not spoke:
                for sentence in buffer.flush():
                    spoke = _first_sentence(stages, started)
                    async for item in self.say(sentence, stages):
                        yield item
        except ModelError as exc:
            log.warning("acknowledgement LLM failed (%s); using the fixed text", exc)
        finally:
            await _close(stream)
        if not spoke:
            async for item in self.say(fallback, stages):
                yield item


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _first_sentence(stages: TurnStages | None, started: float) -> bool:
    if stages is not None and stages.llm_first_sentence is None:
        stages.llm_first_sentence = _ms_since(started)
    return True


def _first_audio(stages: TurnStages | None, started: float) -> None:
    if stages is not None and stages.tts_first_audio is None:
        stages.tts_first_audio = _ms_since(started)


async def _close(stream: AsyncIterator[str]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(RuntimeError):  # already closed
            await aclose()
