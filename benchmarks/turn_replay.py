"""The pure parts of benchmarks/turns.py: replaying one answer's VAD frames through the turn
detector with the signals its pauses ask for, and scoring the decisions against the labels.

Time is audio time. At each `Paused` the detector's caller would start the ASR and the
end-of-turn model; here `signals(paused)` says what they return and after how long, and each
result is handed to the detector (`note_eot`, `note_text`) at the first frame at or past the
moment it would exist. Nothing here reads a clock, so a replay is a function of the frames and the
signals: the same inputs give the same decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.latency_client import quantiles
from worker.voice.policy import Policy
from worker.voice.turns import (
    Paused,
    Relisten,
    Resumed,
    SpeechStopped,
    TurnDetector,
    TurnSettings,
)

LABELS = ("mid_clause", "after_filler", "after_sentence")
SHORT_PAUSE_MS = 1500
# A decision this soon after a pause ends still lands on the resumed speech before the VAD hears
# it (onset lag): the examiner would talk over the student, so it counts as a cut-off.
RESUME_GRACE_MS = 150


@dataclass(frozen=True)
class Pause:
    start_ms: int
    end_ms: int
    label: str

    @property
    def length_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(frozen=True)
class Answer:
    name: str
    pauses: tuple[Pause, ...]
    true_end_ms: int
    # What was said (the script, not a transcript) is a whole answer to its question: it names
    # enough of the expected keywords, or is long (the policy's own test, on the true words).
    complete: bool = False


@dataclass(frozen=True)
class PauseResult:
    """What the models say about one pause, and how long each took (audio ms after `Paused`)."""

    eot: float | None = None
    eot_ms: float = 0.0
    text: str | None = None
    coverage: float | None = None
    asr_ms: float = 0.0


# (the pause event, or a relisten inside it; the answer's start ms). A relisten's result
# carries only the end-of-turn model's answer.
Signals = Callable[[Paused | Relisten, int], PauseResult]


@dataclass(frozen=True)
class Stop:
    decided_ms: int  # when the detector ended the answer (the examiner would start replying)
    speech_end_ms: int


def replay(
    probabilities: Sequence[float],
    settings: TurnSettings,
    policy: Policy | None,
    signals: Signals | None = None,
) -> list[Stop]:
    """Every end of answer the detector decides over these frames."""
    detector = TurnDetector(settings, policy)
    pending: list[tuple[float, str, PauseResult]] = []  # (visible at ms, which, result)
    stops: list[Stop] = []
    for p in probabilities:
        due = sorted((x for x in pending if x[0] <= detector.now_ms), key=lambda x: x[0])
        pending = [x for x in pending if x[0] > detector.now_ms]
        for _at, which, result in due:
            if which == "eot" and result.eot is not None:
                detector.note_eot(result.eot)
            elif which == "text" and result.text is not None:
                detector.note_text(result.text, result.coverage)
        for event in detector.push(p):
            if isinstance(event, Paused | Relisten) and signals is not None:
                start = detector.speech_start_ms
                if start is None:  # the answer ended in this very frame
                    if isinstance(event, Relisten):
                        continue
                    start = event.segment_start_ms
                result = signals(event, start)
                now = detector.now_ms
                pending += [
                    (now + result.eot_ms, "eot", result),
                    (now + result.asr_ms, "text", result),
                ]
            elif isinstance(event, Resumed | SpeechStopped):
                pending = []  # results for a pause that is over are stale
            if isinstance(event, SpeechStopped):
                stops.append(Stop(detector.now_ms, event.end_ms))
    return stops


@dataclass
class Outcome:
    """One answer's replay scored: which labelled pauses were cut, and the true end's delay."""

    cut: list[bool]  # per labelled pause
    unlabelled_cuts: int  # premature ends outside every labelled pause (a gap inside a fragment)
    delay_ms: float | None  # true end -> decision; None when the answer was never ended after it


def score(answer: Answer, stops: Sequence[Stop]) -> Outcome:
    cut = [False] * len(answer.pauses)
    unlabelled = 0
    delay = None
    for stop in stops:
        if stop.decided_ms >= answer.true_end_ms and stop.speech_end_ms >= answer.true_end_ms - 300:
            if delay is None:
                delay = float(stop.decided_ms - answer.true_end_ms)
            continue
        inside = [
            i
            for i, pause in enumerate(answer.pauses)
            if pause.start_ms < stop.decided_ms <= pause.end_ms + RESUME_GRACE_MS
        ]
        if inside:
            cut[inside[0]] = True
        elif stop.decided_ms < answer.true_end_ms:
            unlabelled += 1
    return Outcome(cut, unlabelled, delay)


@dataclass
class Summary:
    pauses: int = 0
    cuts: int = 0
    by_label: dict[str, list[int]] = field(default_factory=dict)  # label -> [cuts, pauses]
    short: list[int] = field(default_factory=lambda: [0, 0])  # pauses <= 1.5 s: [cuts, pauses]
    answers: int = 0
    answers_cut: int = 0  # answers with any premature end, labelled or not
    unlabelled_cuts: int = 0
    delays: list[float] = field(default_factory=list)
    complete_delays: list[float] = field(default_factory=list)
    never_ended: int = 0


def summarize(answers: Sequence[Answer], outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The figures of one method over the set (rates 0..1, delays in ms)."""
    s = Summary()
    for answer, outcome in zip(answers, outcomes, strict=True):
        s.answers += 1
        s.answers_cut += any(outcome.cut) or outcome.unlabelled_cuts > 0
        s.unlabelled_cuts += outcome.unlabelled_cuts
        for pause, was_cut in zip(answer.pauses, outcome.cut, strict=True):
            s.pauses += 1
            s.cuts += was_cut
            tally = s.by_label.setdefault(pause.label, [0, 0])
            tally[0] += was_cut
            tally[1] += 1
            if pause.length_ms <= SHORT_PAUSE_MS:
                s.short[0] += was_cut
                s.short[1] += 1
        if outcome.delay_ms is None:
            s.never_ended += 1
        else:
            s.delays.append(outcome.delay_ms)
            if answer.complete:
                s.complete_delays.append(outcome.delay_ms)
    return {
        "false_cutoff_rate": _rate(s.cuts, s.pauses),
        "false_cutoff_rate_by_label": {
            label: _rate(*s.by_label.get(label, [0, 0])) for label in LABELS
        },
        "false_cutoff_rate_le_1500ms": _rate(*s.short),
        "answers_cut_rate": _rate(s.answers_cut, s.answers),
        "unlabelled_cuts": s.unlabelled_cuts,
        "eot_delay_ms": quantiles(s.delays, (50, 95)),
        # the same on the true ends of whole answers only: how long a student who has fully
        # answered waits
        "eot_delay_ms_complete": {
            **quantiles(s.complete_delays, (50, 95)),
            "answers": len(s.complete_delays),
        },
        "never_ended": s.never_ended,
        "pauses": s.pauses,
        "answers": s.answers,
    }


def _rate(cuts: int, total: int) -> float | None:
    return round(cuts / total, 4) if total else None
