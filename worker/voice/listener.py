"""The listener: a student's PCM in, turn events and whole transcribed answers out.

Every 32 ms chunk goes through the VAD into the turn detector (`worker/voice/turns.py`). Each pause
inside an answer closes a segment of speech, and the answer is transcribed as it goes, in
windows: at each pause the current window (from its start to this pause) is transcribed again,
whole, with the question's keywords and the earlier windows' text as the ASR prompt; once a
window holds `WINDOW_MS` of the answer it is sealed at the next pause and kept, and a new one
starts. So at the end of the
answer only the last window (at most a few seconds) is left to transcribe, however long the
answer, and short answers are transcribed whole (cutting them at every comma cost tiny.en its
accuracy: "triage is" came out as "tree I just"). At the same
pause the end-of-turn model hears the answer so far, the pause included; both results go back to
the detector, whose policy decides when the pause has become the end of the answer.

An answer is at most `exam.max_question_duration_seconds` of audio (counted on the audio clock,
so a client that sends faster than real time cannot grow it): then it is cut and answered.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.config import Config
from models.base import SAMPLE_RATE, VAD_CHUNK, Audio, Segment, Transcript
from models.hub import Hub
from models.scheduler import Priority, Request, at_priority
from worker.exam.evaluators import Question, keyword_score
from worker.voice.policy import policy_for
from worker.voice.turns import (
    Paused,
    Relisten,
    Resumed,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnEvent,
    TurnSettings,
)

PREROLL_CHUNKS = 64  # ~2 s of audio kept before an answer starts
PAD_MS = 96  # around a segment: word edges the VAD called silence
EOT_WINDOW_MS = 8000  # what the end-of-turn model listens to
WINDOW_MS = 6000  # a transcription window is sealed at the first pause past this much audio
MS_PER_CHUNK = VAD_CHUNK * 1000 // SAMPLE_RATE
# Of the answer so far, the ASR prompt keeps the last this many words: with the terms before
# them they stay inside Whisper's 223-token prompt, which drops a longer prompt's start.
PROMPT_WORDS = 120


def asr_prompt(terms: Sequence[str], before: str) -> str | None:
    """The ASR's context for the next stretch of an answer: the question's terms, then the
    answer so far. Whisper spells a word it has just seen in its context as it was written
    there ("nomogram", not "namagram"), and does not write terms nobody said (README, "Models")."""
    head = f"Terms: {', '.join(terms)}." if terms else ""
    prompt = " ".join([head, *before.split()[-PROMPT_WORDS:]]).strip()
    return prompt or None


@dataclass(frozen=True)
class Answer:
    """An answer the detector has ended, transcribed whole."""

    transcript: Transcript
    duration_s: float
    ready_at_end: bool  # every segment was transcribed before the end was decided


def coverage(
    text: str,
    expected_keywords: Sequence[str],
    synonyms: Mapping[str, Sequence[str]] | None = None,
) -> float | None:
    """Share of the expected keywords the text names (or a synonym of); None when none."""
    if not expected_keywords:
        return None
    found = keyword_score(text, expected_keywords, 1, synonyms=synonyms).matched
    return len(found) / len(expected_keywords)


class Listener:
    def __init__(self, hub: Hub, cfg: Config, question: Callable[[], Question | None]):
        t = cfg.turn
        settings = TurnSettings(
            threshold=t.vad_threshold,
            min_speech_ms=t.min_speech_ms,
            end_silence_ms=t.end_silence_ms,
            speculative_ms=t.segment_pause_ms,
            min_interrupt_ms=t.min_interrupt_ms,
            echo_guard_ms=t.echo_guard_ms,
            max_wait_ms=t.max_wait_ms,
            relisten_ms=t.relisten_ms if t.policy == "viva" else 0,
        )
        self.turns = TurnDetector(settings, policy_for(t))
        self.hub, self.language, self._question = hub, cfg.models.asr.language, question
        self._prompt_terms = cfg.models.asr.prompt_terms
        # On the audio clock, whatever the wall clock says: this bounds the answer's buffer.
        self.max_answer_ms = int(cfg.exam.max_question_duration_seconds * 1000)
        self.vad = hub.vad.stream()
        self._pcm = np.zeros(0, dtype=np.float32)
        self._chunks: list[np.ndarray] = []  # every chunk since the last answer ended
        self._chunks_from_ms = 0
        self._sealed: list[asyncio.Task[Transcript]] = []  # windows of the answer in progress
        self._current: asyncio.Task[Transcript] | None = None  # the latest, of the open window
        # What each window's transcription is for, to promote it once the answer has ended.
        self._requests: weakref.WeakKeyDictionary[asyncio.Task[Transcript], Request] = (
            weakref.WeakKeyDictionary()
        )
        self._window_ms = 0  # where the open window starts
        self._covered_ms = 0  # how far the open window's latest transcription reaches
        self._pause = 0  # counts pauses and resumptions: late results of old pauses are dropped
        self._carried = ""  # what this answer continues (held speech, a reply taken back)
        self._eot: asyncio.Task[float] | None = None
        # The open window is kept once it holds this much audio: `WINDOW_MS`, or under load
        # `turn.busy_window_ms` (decided at each pause, kept until it resumes).
        self._seal_ms = WINDOW_MS
        self._busy_waiting, self._busy_window_ms = t.busy_asr_waiting, t.busy_window_ms
        self._asr_queue = hub.schedulers.get("asr")

    def carry(self, text: str) -> None:
        """The next answer continues `text`: it is the ASR's context, and the policy judges
        the answer with it."""
        self._carried = text.strip()

    def feed(self, pcm: Audio) -> list[TurnEvent]:
        """Push received audio; returns the turn events it caused, in order."""
        chunks = self._split(pcm)
        return self._advance(chunks, [self.vad.probability(c) for c in chunks])

    async def hear(self, pcm: Audio) -> list[TurnEvent]:
        """`feed`, with the VAD free to batch these chunks with other sessions' (the hub's
        `vad_batch_ms`)."""
        chunks = self._split(pcm)
        return self._advance(chunks, await self.vad.probabilities(chunks) if chunks else [])

    def _split(self, pcm: Audio) -> list[Audio]:
        self._pcm = np.concatenate([self._pcm, pcm]) if self._pcm.size else pcm
        whole = len(self._pcm) // VAD_CHUNK * VAD_CHUNK
        chunks = [self._pcm[i : i + VAD_CHUNK] for i in range(0, whole, VAD_CHUNK)]
        self._pcm = self._pcm[whole:]
        return chunks

    def _advance(self, chunks: list[Audio], probabilities: list[float]) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        for chunk, probability in zip(chunks, probabilities, strict=True):
            self._chunks.append(chunk)
            for event in self.turns.push(probability):
                self._on(event)
                events.append(event)
            start = self.turns.speech_start_ms
            if start is not None and self.turns.now_ms - start >= self.max_answer_ms:
                events.append(self.turns.cut())  # the answer's time is up on the audio clock
            self._forget_silence()
        return events

    def _on(self, event: TurnEvent) -> None:
        if isinstance(event, SpeechStarted):
            self._window_ms = self._covered_ms = event.at_ms
        elif isinstance(event, Paused):
            self._pause += 1
            self._seal_ms = self._busy_window_ms if self._asr_busy() else WINDOW_MS
            self._transcribe_window(event.segment_end_ms, Priority.SPECULATIVE)
            self._ask_eot()
        elif isinstance(event, Relisten):
            self._ask_eot()  # same pause: its answer replaces the first one's
        elif isinstance(event, Resumed):
            self._pause += 1
            if self._current is not None and self._covered_ms - self._window_ms >= self._seal_ms:
                self._sealed.append(self._current)  # long enough: kept, a new window starts
                self._current = None
                self._window_ms = self._covered_ms = event.at_ms
            if self._eot is not None:
                self._eot.cancel()

    def _asr_busy(self) -> bool:
        """Enough transcriptions already wait for the ASR that transcribing the same audio
        again at every pause would only lengthen the queue (`turn.busy_asr_waiting`)."""
        queue = self._asr_queue
        return bool(self._busy_waiting) and queue is not None and queue.depth >= self._busy_waiting

    def _ask_eot(self) -> None:
        """The end-of-turn model on the answer through the pause so far: the model was trained
        on turns that end in silence, and hears a finished answer far better with it (median
        0.31 with 128 ms of it, 0.71 with 300 ms, at the true ends of the turn benchmark's Piper
        answers). A question still pending for this pause is dropped."""
        if self._eot is not None:
            self._eot.cancel()
        now = self.turns.now_ms
        start = max(self.turns.speech_start_ms or 0, now - EOT_WINDOW_MS)
        audio = self._audio(start, now)
        self._eot = asyncio.ensure_future(self.hub.eot.probability(audio))
        self._eot.add_done_callback(self._eot_done(self._pause))

    def _transcribe_window(self, end_ms: int, priority: Priority = Priority.TURN) -> None:
        """Transcribe the open window up to `end_ms`; an older transcription of it is dropped.
        During a pause it is speculation (`priority`); once the answer ends, `answer()`
        promotes it: the student is waiting for it."""
        if self._current is not None and not self._current.done():
            self._current.cancel()  # not started yet: it leaves the ASR's queue
        audio = self._audio(max(self._window_ms - PAD_MS, 0), end_ms + PAD_MS)
        with at_priority(priority) as request:
            task = asyncio.ensure_future(self._transcribe(list(self._sealed), audio))
        self._requests[task] = request
        task.add_done_callback(self._text_done(self._pause))
        self._current, self._covered_ms = task, end_ms

    async def _transcribe(self, sealed: list[asyncio.Task[Transcript]], audio: Audio) -> Transcript:
        # The ASR runs one call at a time, in order: the sealed windows are done or nearly.
        # Shielded: when this transcription is dropped for a later one, the kept windows it
        # waits for must go on (cancelling an awaiting task cancels what it awaits).
        done = [await asyncio.shield(t) for t in sealed]
        before = " ".join([self._carried, _joined(done).text])
        question = self._question() if self._prompt_terms else None
        terms = question.expected_keywords if question is not None else ()
        prompt = asr_prompt(terms, before)
        return await self.hub.asr.transcribe(audio, self.language, prompt=prompt)

    def _eot_done(self, pause: int) -> Callable[[asyncio.Task[float]], None]:
        def done(task: asyncio.Task[float]) -> None:
            if task.cancelled() or task.exception() is not None:  # retrieved: no stray log
                return  # without the model's view the policy waits longer
            if pause == self._pause:
                self.turns.note_eot(task.result())

        return done

    def _text_done(self, pause: int) -> Callable[[asyncio.Task[Transcript]], None]:
        def done(task: asyncio.Task[Transcript]) -> None:
            if not task.cancelled():
                task.exception()  # retrieved here; `answer()` transcribes a failed window again
            tasks = [*self._sealed, task]
            if pause != self._pause or task is not self._current:
                return
            if any(not t.done() or t.cancelled() or t.exception() is not None for t in tasks):
                return
            said = _joined([t.result() for t in tasks]).text
            text = f"{self._carried} {said}".strip()
            question = self._question()
            keywords = question.expected_keywords if question is not None else ()
            synonyms = question.synonyms if question is not None else None
            self.turns.note_text(text, coverage(text, keywords, synonyms))

        return done

    async def answer(self, stop: SpeechStopped) -> Answer:
        """The whole answer that `stop` ended: its windows' transcripts, joined."""
        current = self._current
        failed = (
            current is not None
            and current.done()
            and not current.cancelled()
            and (current.exception() is not None)
        )
        late = stop.end_ms - self._covered_ms > MS_PER_CHUNK
        if current is None or current.cancelled() or failed or late:
            # Speech after the last pause (or no pause at all; or cut at the time limit).
            self._transcribe_window(stop.end_ms)
        assert self._current is not None
        windows = [*self._sealed, self._current]
        for window in windows:  # the student has finished: every window is on the turn's path
            request = self._requests.get(window)
            if request is not None:
                request.promote(Priority.TURN)
        self._requests.clear()
        self._sealed, self._current = [], None
        ready = all(t.done() for t in windows)
        transcripts = list(await asyncio.gather(*windows))
        self.answer_ended()
        duration = (stop.end_ms - stop.start_ms) / 1000
        return Answer(_joined(transcripts), duration, ready)

    def answer_ended(self) -> None:
        """Between answers only the preroll is kept."""
        self._pause += 1
        self._chunks, self._chunks_from_ms = [], self.turns.now_ms
        if self._eot is not None:
            self._eot.cancel()

    def clear(self) -> None:
        """The client cleared its input: forget the answer in progress."""
        self.close()
        self.answer_ended()
        self.turns.reset()

    def close(self) -> None:
        for task in [*self._sealed, self._current]:
            if task is not None:
                task.cancel()
        self._sealed, self._current = [], None
        if self._eot is not None:
            self._eot.cancel()

    def _forget_silence(self) -> None:
        """Between answers keep only the last PREROLL_CHUNKS of audio (an answer's onset is
        dated back at most min_speech_ms): a student who stays silent for minutes must not
        grow the session by 64 KB a second (the soak saw +148 MB a minute at 50 sessions)."""
        extra = len(self._chunks) - PREROLL_CHUNKS
        if extra > 0 and self.turns.speech_start_ms is None:
            del self._chunks[:extra]
            self._chunks_from_ms += extra * MS_PER_CHUNK

    def _audio(self, start_ms: int, end_ms: int) -> Audio:
        first = max(0, (start_ms - self._chunks_from_ms) // MS_PER_CHUNK)
        last = max(first + 1, -(-(end_ms - self._chunks_from_ms) // MS_PER_CHUNK))
        chunks = self._chunks[first:last]
        return np.concatenate(chunks) if chunks else np.zeros(VAD_CHUNK, np.float32)


def _joined(parts: list[Transcript]) -> Transcript:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return Transcript("", (), 0.0, 0.0, "en")
    text = " ".join(p.text.strip() for p in parts if p.text.strip())
    weights = [max(p.duration_s, 1e-3) for p in parts]
    confidence = sum(p.confidence * w for p, w in zip(parts, weights, strict=True)) / sum(weights)
    segments: tuple[Segment, ...] = tuple(s for p in parts for s in p.segments)
    duration = sum(p.duration_s for p in parts)
    language = parts[0].language if parts else "en"
    return Transcript(text, segments, round(confidence, 3), duration, language)
