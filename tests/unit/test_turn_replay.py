"""The turn benchmark's replay and scoring (benchmarks/turn_replay.py) on scripted frames and a
scripted policy: signals arrive after their latency, decisions land where the policy says, and
cut-offs and delays are counted against the labels; and benchmarks/turns.py's signals carry an
answer into its continuation after a premature end, as the worker does."""

from __future__ import annotations

import numpy as np

from benchmarks import turns
from benchmarks.turn_replay import (
    Answer,
    Pause,
    PauseResult,
    Stop,
    replay,
    score,
    summarize,
)
from models.fakes import FakeASR, FakeEOT
from worker.voice.policy import FixedSilence, PauseSignals
from worker.voice.turns import FRAME_MS, Paused, TurnSettings

SETTINGS = TurnSettings(min_speech_ms=96, speculative_ms=192, max_wait_ms=3000)


def frames(*spans: tuple[str, int]) -> list[float]:
    """("s", ms) of speech or ("-", ms) of silence, as 32 ms VAD probabilities."""
    out: list[float] = []
    for kind, ms in spans:
        out += [0.9 if kind == "s" else 0.05] * (ms // FRAME_MS)
    return out


# 1 s speech, 800 ms pause, 1 s speech, then silence: the pause is [1000, 1800], the end at 2800.
AUDIO = frames(("s", 1024), ("-", 800), ("s", 992), ("-", 4000))
ANSWER = Answer("a", (Pause(1024, 1824, "after_sentence"),), 2816)


class EndWhenTold:
    """Waits `fallback` unless the end-of-turn probability is known and high."""

    def __init__(self) -> None:
        self.seen: list[PauseSignals] = []

    def wait_ms(self, s: PauseSignals) -> int:
        self.seen.append(s)
        return 0 if (s.eot or 0) > 0.5 and s.text == "done" else 2000


def test_fixed_silence_cuts_a_long_pause_and_ends_after_its_wait() -> None:
    stops = replay(AUDIO, SETTINGS, FixedSilence(500))
    assert [s.speech_end_ms for s in stops] == [1024, 2816]
    outcome = score(ANSWER, stops)
    assert outcome.cut == [True] and outcome.unlabelled_cuts == 0
    assert outcome.delay_ms == 512  # 500 ms rounded up to whole frames
    assert replay(AUDIO, SETTINGS, FixedSilence(900))[0].speech_end_ms == 2816


def test_signals_arrive_after_their_latency_and_the_policy_decides() -> None:
    calls: list[tuple[Paused, int]] = []

    def signals(event: Paused, answer_start: int) -> PauseResult:
        calls.append((event, answer_start))
        last = event.segment_end_ms == 2816
        return PauseResult(
            eot=0.9, eot_ms=100, text="done" if last else "and", coverage=None, asr_ms=300
        )

    policy = EndWhenTold()
    stops = replay(AUDIO, SETTINGS, policy, signals)
    assert [(e.segment_start_ms, e.segment_end_ms) for e, _ in calls] == [(0, 1024), (1824, 2816)]
    assert all(start == 0 for _e, start in calls), "one answer: the first pause did not end it"
    assert stops == [Stop(decided_ms=2816 + 192 + 32 + 320, speech_end_ms=2816)]
    # Nothing is known before the latencies have passed: the eot after 100 ms, the text after 300.
    at_pause = [s for s in policy.seen if s.pause_ms <= 192 + 96]
    assert at_pause and all(s.eot is None and s.text is None for s in at_pause)
    assert any(s.eot == 0.9 and s.text is None for s in policy.seen)
    outcome = score(ANSWER, stops)
    assert outcome.cut == [False] and outcome.delay_ms == 192 + 32 + 320


def test_results_for_a_pause_that_ended_are_dropped() -> None:
    # The ASR takes longer than the pause: its text must not reach the next pause.
    def slow(event: Paused, answer_start: int) -> PauseResult:
        return PauseResult(eot=0.9, eot_ms=0, text="done", asr_ms=5000)

    policy = EndWhenTold()
    stops = replay(AUDIO, SETTINGS, policy, slow)
    assert [s.speech_end_ms for s in stops] == [2816]
    assert stops[0].decided_ms == 2816 + 2016  # the fallback (whole frames), not the stale text
    assert all(s.text is None for s in policy.seen)


def test_scoring_counts_labels_short_pauses_unlabelled_cuts_and_missed_ends() -> None:
    answers = [
        Answer("x", (Pause(1000, 2000, "mid_clause"), Pause(3000, 5000, "after_filler")), 6000),
        Answer("y", (Pause(1000, 1300, "after_sentence"),), 3000),
    ]
    stops_x = [Stop(1800, 1000), Stop(2500, 2400), Stop(6400, 6000)]  # one cut, one stray cut
    stops_y = [Stop(1400, 1000)]  # cut inside the grace after the pause, then never ended
    outcomes = [score(answers[0], stops_x), score(answers[1], stops_y)]
    assert outcomes[0].cut == [True, False] and outcomes[0].unlabelled_cuts == 1
    assert outcomes[0].delay_ms == 400 and outcomes[1].delay_ms is None
    assert outcomes[1].cut == [True]
    figures = summarize(answers, outcomes)
    assert figures["false_cutoff_rate"] == round(2 / 3, 4)
    assert figures["false_cutoff_rate_by_label"] == {
        "mid_clause": 1.0,
        "after_filler": 0.0,
        "after_sentence": 1.0,
    }
    assert figures["false_cutoff_rate_le_1500ms"] == 1.0
    assert figures["answers_cut_rate"] == 1.0 and figures["unlabelled_cuts"] == 1
    assert figures["eot_delay_ms"] == {"p50": 400.0, "p95": 400.0}
    assert figures["never_ended"] == 1 and figures["pauses"] == 3
    assert figures["eot_delay_ms_complete"] == {"p50": None, "p95": None, "answers": 0}


def test_delay_on_whole_answers_counts_only_their_true_ends() -> None:
    whole = Answer("w", (), 3000, complete=True)
    weak = Answer("k", (), 3000)
    outcomes = [score(whole, [Stop(3250, 3000)]), score(weak, [Stop(4500, 3000)])]
    figures = summarize([whole, weak], outcomes)
    assert figures["eot_delay_ms"]["p50"] == 875.0  # both
    assert figures["eot_delay_ms_complete"] == {"p50": 250.0, "p95": 250.0, "answers": 1}


def test_replay_is_deterministic() -> None:
    def signals(event: Paused, answer_start: int) -> PauseResult:
        return PauseResult(eot=0.9, eot_ms=64, text="done", asr_ms=250)

    runs = [replay(AUDIO, SETTINGS, EndWhenTold(), signals) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


def test_a_continuation_after_a_premature_end_is_judged_with_the_answer_so_far() -> None:
    """benchmarks/turns.py's signals do what the worker does after a premature end (it takes
    its reply back and carries `flow.pending_text`): the next answer's words are transcribed
    with the earlier words as the prompt and judged together with them."""
    said = iter(["insulin comes from the pancreas", "it lowers blood sugar"])
    models = turns.Models(FakeASR(lambda _audio: next(said)), FakeEOT(0.9), 100.0, 50.0)
    item = turns.Item(
        Answer("a", (), 4000), np.zeros(8 * 16000, np.float32), [], ("pancreas", "sugar"), {}
    )
    method = turns.Method("policy", SETTINGS, FixedSilence(500), eot="segment", asr=True)
    signals = turns.signals_for(method, models, item)
    first = signals(Paused(1200, 0, 1000), 0)
    assert first.text == "insulin comes from the pancreas" and first.coverage == 0.5
    # The examiner replied at that pause, the student went on: a new answer starts at 2000 ms.
    second = signals(Paused(3200, 2000, 3000), 2000)
    assert second.text == "insulin comes from the pancreas it lowers blood sugar"
    assert second.coverage == 1.0  # both keywords, one from each part
    assert ("a", 2000, 3000, "insulin comes from the pancreas") in models.texts  # the prompt
    models.loop.close()
