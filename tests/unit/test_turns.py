"""Turn-taking on scripted VAD probabilities."""

from __future__ import annotations

from worker.turns import (
    FRAME_MS,
    BargeIn,
    Paused,
    Resumed,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnSettings,
)


def run(det: TurnDetector, pattern: list[tuple[float, int]]) -> list[object]:
    events: list[object] = []
    for prob, ms in pattern:
        for _ in range(ms // FRAME_MS):
            events.extend(det.push(prob))
    return events


def test_answer_with_speculative_pause_and_end() -> None:
    det = TurnDetector(TurnSettings(end_silence_ms=512, speculative_ms=192, min_speech_ms=256))
    events = run(det, [(0.0, 320), (0.9, 1600), (0.0, 640)])
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, Paused, SpeechStopped]
    start, stop = events[0], events[2]
    assert isinstance(start, SpeechStarted) and start.at_ms == 320
    assert isinstance(stop, SpeechStopped) and (stop.start_ms, stop.end_ms) == (320, 1920)


def test_short_pause_resumes_and_blips_are_ignored() -> None:
    det = TurnDetector(TurnSettings(end_silence_ms=512, speculative_ms=192, min_speech_ms=256))
    events = run(det, [(0.9, 64), (0.0, 320), (0.9, 640), (0.0, 256), (0.9, 640), (0.0, 640)])
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, Paused, Resumed, Paused, SpeechStopped]


def test_hysteresis_keeps_soft_endings_inside_the_answer() -> None:
    det = TurnDetector(TurnSettings(threshold=0.5, end_silence_ms=512, speculative_ms=192))
    events = run(det, [(0.9, 640), (0.4, 1000), (0.0, 640)])
    assert [type(e) for e in events] == [SpeechStarted, Paused, SpeechStopped]


def test_barge_in_after_echo_guard_only() -> None:
    det = TurnDetector(TurnSettings(min_interrupt_ms=288, echo_guard_ms=192, min_speech_ms=96))
    det.examiner_started()
    early = run(det, [(0.9, 160)])  # inside the guard and too short: echo, not a barge-in
    assert not any(isinstance(e, BargeIn) for e in early)
    later = run(det, [(0.9, 320)])
    assert sum(isinstance(e, BargeIn) for e in later) == 1
    det.examiner_stopped()
    assert not any(isinstance(e, BargeIn) for e in run(det, [(0.9, 640)]))
