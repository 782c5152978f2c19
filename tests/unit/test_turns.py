"""Turn-taking on scripted VAD probabilities."""

from __future__ import annotations

from worker.voice.policy import PolicySettings, VivaPolicy
from worker.voice.turns import (
    FRAME_MS,
    BargeIn,
    Paused,
    Relisten,
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


def test_a_pause_closes_a_segment_and_the_policy_decides_when_it_ends() -> None:
    """The end comes when the policy says so, with what was noted about the pause."""
    policy = VivaPolicy(PolicySettings(fast_ms=192, thinking_ms=1600, max_ms=2400))
    det = TurnDetector(TurnSettings(speculative_ms=128, min_speech_ms=96), policy)
    events = run(det, [(0.9, 1600), (0.0, 160)])
    paused = [e for e in events if isinstance(e, Paused)]
    assert len(paused) == 1 and (paused[0].segment_start_ms, paused[0].segment_end_ms) == (0, 1600)
    # Unfinished: the student said "and". The pause is waited out until thinking_ms.
    det.note_eot(0.9)
    det.note_text("Insulin is made by the pancreas and", 0.3)
    assert not any(isinstance(e, SpeechStopped) for e in run(det, [(0.0, 1280)]))
    events = run(det, [(0.9, 640)])  # speech resumes: a second segment starts
    assert [type(e) for e in events] == [Resumed]
    events = run(det, [(0.0, 160)])
    paused = [e for e in events if isinstance(e, Paused)]
    assert (paused[0].segment_start_ms, paused[0].segment_end_ms) == (3040, 3680)
    assert det.signals().eot is None and det.signals().text is None  # forgotten at the resume
    det.note_eot(0.95)
    det.note_text("Insulin is made by the pancreas and it lowers blood glucose.", 1.0)
    events = run(det, [(0.0, 64)])
    stop = [e for e in events if isinstance(e, SpeechStopped)]
    assert stop and (stop[0].start_ms, stop[0].end_ms) == (0, 3680)


def test_the_model_hears_a_long_pause_again_and_its_new_answer_counts() -> None:
    policy = VivaPolicy(PolicySettings(fast_ms=192, thinking_ms=1600, max_ms=2400))
    settings = TurnSettings(speculative_ms=128, min_speech_ms=96, relisten_ms=416)
    det = TurnDetector(settings, policy)
    events = run(det, [(0.9, 1600), (0.0, 160)])
    assert [type(e) for e in events] == [SpeechStarted, Paused]
    det.note_eot(0.05)  # 128 ms of silence: the model hears an unfinished turn
    det.note_text("Insulin is made by the beta cells of the pancreas.", 1.0)
    events = run(det, [(0.0, 256)])
    assert [type(e) for e in events] == [Relisten]  # once, at 416 ms into the pause
    det.note_eot(0.9)  # with more silence: finished, and the answer is whole
    events = run(det, [(0.0, 32)])
    assert [type(e) for e in events] == [SpeechStopped]  # not thinking_ms later
    # A pause that ends before relisten_ms is not heard again; each pause relistens once.
    events = run(det, [(0.9, 640), (0.0, 320), (0.9, 640), (0.0, 1600)])
    assert [type(e) for e in events].count(Relisten) == 1


def test_without_signals_the_hard_maximum_ends_the_answer() -> None:
    policy = VivaPolicy(PolicySettings(max_ms=2400))
    det = TurnDetector(TurnSettings(speculative_ms=128, min_speech_ms=96, max_wait_ms=2400), policy)
    events = run(det, [(0.9, 640), (0.0, 2368)])
    assert not any(isinstance(e, SpeechStopped) for e in events)
    assert any(isinstance(e, SpeechStopped) for e in run(det, [(0.0, 64)]))


def test_notes_outside_a_pause_are_ignored() -> None:
    det = TurnDetector(TurnSettings(speculative_ms=128, min_speech_ms=96))
    run(det, [(0.9, 640)])
    det.note_eot(0.9)
    det.note_text("stale", None)
    assert det.signals().eot is None and det.signals().text is None
    assert det.signals().speech_ms == 640


def test_a_turn_over_the_latency_budget_is_counted() -> None:
    from worker.voice.metrics import OVER_BUDGET, TurnStages

    before = OVER_BUDGET._value.get()
    TurnStages(endpoint_wait=200).report("VIVA-TEST01", 1, 350.0, budget_ms=400)
    assert OVER_BUDGET._value.get() == before
    TurnStages(endpoint_wait=200).report("VIVA-TEST01", 1, 450.0, budget_ms=400)
    assert OVER_BUDGET._value.get() == before + 1
