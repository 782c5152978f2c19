"""Turn-taking as a pure state machine over 32 ms VAD frames (no clock of its own: time is the
running count of audio received, so tests replay audio exactly).

Events out:
- `SpeechStarted` once speech has lasted `min_speech_ms` (the start is back-dated to its onset);
- `Paused` when a pause inside speech reaches `speculative_ms`: the segment of speech it closes
  is complete, so the caller transcribes it (and keeps the text: a pause does not end the answer)
  and asks the end-of-turn model about it, then reports back with `note_eot` / `note_text`;
- `Relisten` once per pause when it reaches `relisten_ms` (0: never): the caller asks the
  end-of-turn model again, now with that much silence heard (it says "finished" far more often
  at true ends with 300-500 ms of silence than with 128 ms), and reports back with `note_eot`;
- `Resumed` when speech comes back during that pause (the next segment starts);
- `SpeechStopped` when the pause has lasted as long as the policy asks, given what is known by
  then (`worker/voice/policy.py`; without a policy, a fixed `end_silence_ms`), or the hard maximum;
- `BargeIn` when the student talks over the examiner for `min_interrupt_ms`, outside the echo
  guard that follows the start of examiner audio.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.voice.policy import FixedSilence, PauseSignals, Policy

FRAME_MS = 32


@dataclass(frozen=True)
class SpeechStarted:
    at_ms: int


@dataclass(frozen=True)
class Paused:
    at_ms: int
    segment_start_ms: int  # the stretch of speech this pause closes
    segment_end_ms: int


@dataclass(frozen=True)
class Relisten:
    at_ms: int


@dataclass(frozen=True)
class Resumed:
    at_ms: int


@dataclass(frozen=True)
class SpeechStopped:
    start_ms: int
    end_ms: int  # where speech ended (the silence after it is not part of the answer)


@dataclass(frozen=True)
class BargeIn:
    at_ms: int


TurnEvent = SpeechStarted | Paused | Relisten | Resumed | SpeechStopped | BargeIn


@dataclass(frozen=True)
class TurnSettings:
    threshold: float = 0.5
    min_speech_ms: int = 250
    end_silence_ms: int = 500
    speculative_ms: int = 200
    min_interrupt_ms: int = 300
    echo_guard_ms: int = 200
    max_wait_ms: int = 3000  # no pause inside an answer is waited out longer than this
    relisten_ms: int = 0  # the end-of-turn model hears the pause again this far in (0: never)


class TurnDetector:
    def __init__(self, settings: TurnSettings, policy: Policy | None = None):
        self.s = settings
        self.policy: Policy = policy or FixedSilence(settings.end_silence_ms)
        # Hysteresis: once speaking, a frame must fall clearly below the threshold to count as
        # silence, so soft word endings do not chop an answer.
        self._off = max(0.05, settings.threshold - 0.15)
        self.now_ms = 0
        self._run_start: int | None = None  # onset of the current voiced run
        self._speech_start: int | None = None  # start of the confirmed answer
        self._silence_from: int | None = None
        self._paused = False
        self._relistened = False
        self._segment_start: int | None = None
        self._voiced_ms = 0  # voiced time of the answer in progress
        self._eot: float | None = None  # what is known about the current pause
        self._text: str | None = None
        self._coverage: float | None = None
        self._prior: tuple[str, float | None] | None = None  # text through an earlier pause
        self._examiner_since: int | None = None
        self._barged = False

    @property
    def speech_start_ms(self) -> int | None:
        """Where the answer in progress began; None between answers."""
        return self._speech_start

    @property
    def in_speech(self) -> bool:
        return self._speech_start is not None

    @property
    def pause_ms(self) -> int:
        """How long the current pause inside an answer has lasted (0 while speaking)."""
        if self._silence_from is None:
            return 0
        return self.now_ms - self._silence_from

    def note_eot(self, probability: float) -> None:
        """The end-of-turn model's answer for the current pause (ignored once speech resumed)."""
        if self._paused:
            self._eot = probability

    def note_text(self, text: str, coverage: float | None) -> None:
        """The transcript of the answer through the current pause, and its keyword coverage."""
        if self._paused:
            self._text, self._coverage = text, coverage
            self._prior = (text, coverage)

    def signals(self) -> PauseSignals:
        prior_text, prior_coverage = self._prior or (None, None)
        return PauseSignals(
            self.pause_ms,
            self._voiced_ms,
            self._eot,
            self._text,
            self._coverage,
            prior_text,
            prior_coverage,
        )

    def examiner_started(self) -> None:
        self._examiner_since = self.now_ms
        self._barged = False

    def examiner_stopped(self) -> None:
        self._examiner_since = None

    def cut(self) -> SpeechStopped:
        """End the answer in progress now (its time is up), as if silence had come."""
        if self._speech_start is None:
            raise RuntimeError("no answer in progress")
        end = self._silence_from if self._silence_from is not None else self.now_ms
        event = SpeechStopped(self._speech_start, end)
        self.reset()
        return event

    def reset(self) -> None:
        self._run_start = self._speech_start = self._silence_from = None
        self._segment_start = None
        self._voiced_ms = 0
        self._prior = None
        self._forget_pause()

    def _forget_pause(self) -> None:
        self._paused = self._relistened = False
        self._eot = self._text = self._coverage = None

    def push(self, probability: float) -> list[TurnEvent]:
        """Feed one frame's speech probability; returns the events it causes."""
        t = self.now_ms
        self.now_ms += FRAME_MS
        voiced = probability >= (self._off if self.in_speech else self.s.threshold)
        events: list[TurnEvent] = []
        if voiced:
            self._on_voiced(t, events)
        else:
            self._on_silent(t, events)
        return events

    def _on_voiced(self, t: int, events: list[TurnEvent]) -> None:
        if self._run_start is None:
            self._run_start = t
        if self._silence_from is not None:
            if self._paused:
                events.append(Resumed(t))
                self._segment_start = t
            self._silence_from = None
            self._forget_pause()
        voiced_ms = t + FRAME_MS - self._run_start
        if self._speech_start is None and voiced_ms >= self.s.min_speech_ms:
            self._speech_start = self._segment_start = self._run_start
            self._voiced_ms = voiced_ms
            events.append(SpeechStarted(self._run_start))
        elif self._speech_start is not None:
            self._voiced_ms += FRAME_MS
        guard_over = (
            self._examiner_since is not None and t - self._examiner_since >= self.s.echo_guard_ms
        )
        if guard_over and not self._barged and voiced_ms >= self.s.min_interrupt_ms:
            self._barged = True
            events.append(BargeIn(t))

    def _on_silent(self, t: int, events: list[TurnEvent]) -> None:
        if self._speech_start is None:
            self._run_start = None  # a blip shorter than min_speech_ms
            return
        if self._silence_from is None:
            self._silence_from = t
        silent_ms = t + FRAME_MS - self._silence_from
        if not self._paused and silent_ms >= self.s.speculative_ms:
            self._paused = True
            segment_start = self._segment_start if self._segment_start is not None else t
            events.append(Paused(t, segment_start, self._silence_from))
        elif self._paused and not self._relistened and 0 < self.s.relisten_ms <= silent_ms:
            self._relistened = True
            events.append(Relisten(t))
        if silent_ms >= min(self.policy.wait_ms(self.signals()), self.s.max_wait_ms):
            events.append(SpeechStopped(self._speech_start, self._silence_from))
            self.reset()
