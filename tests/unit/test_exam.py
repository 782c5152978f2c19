"""The exam flow on scripted events and a hand-driven clock."""

from __future__ import annotations

import pytest

from core.config import ExamConfig
from worker.exam.flow import (
    ACKNOWLEDGEMENTS,
    CLOSING,
    MOVE_ON,
    NUDGE,
    TIME_UP,
    Decision,
    Evaluate,
    ExamFlow,
    Finish,
    Ignored,
    Question,
    Say,
)
from worker.exam.probes import SAFE_PROBES, leaks

KEYWORDS = ("offer", "acceptance", "consideration", "intention", "capacity")
FULL = "An offer, its acceptance, consideration, intention to create legal relations and capacity."
PARTIAL = "There must be an offer and an acceptance."  # 2 of 5: 6.7, partial


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bank(n: int) -> list[Question]:
    return [
        Question(100 + i, i, f"Question text number {i}?", KEYWORDS, "Name all five elements.")
        for i in range(1, n + 1)
    ]


def make_flow(n: int = 3, clock: Clock | None = None, **cfg: object) -> ExamFlow:
    return ExamFlow(
        bank(n), ExamConfig.model_validate(cfg), clock or Clock(), nudge_after_seconds=15
    )


def says(decisions: list[Decision]) -> list[tuple[str, str]]:
    return [(d.kind, d.text) for d in decisions if isinstance(d, Say)]


def kinds(decisions: list[Decision]) -> list[str]:
    return [d.kind if isinstance(d, Say) else type(d).__name__ for d in decisions]


def started(n: int = 3, clock: Clock | None = None, **cfg: object) -> ExamFlow:
    flow = make_flow(n, clock, **cfg)
    flow.start()
    return flow


def test_full_twelve_question_run_completes() -> None:
    flow = make_flow(12)
    out = flow.start()
    assert kinds(out) == ["greeting", "question"]
    assert "12 questions" in says(out)[0][1]
    assert says(out)[1] == ("question", "Question 1. Question text number 1?")
    evaluated: list[Evaluate] = []
    acks: set[str] = set()
    for i in range(1, 13):
        assert flow.current is not None and flow.current.number == i
        out = flow.answer(FULL, duration_s=8.0)
        evaluated += [d for d in out if isinstance(d, Evaluate)]
        acks |= {text for kind, text in says(out) if kind == "acknowledge"}
        if i < 12:
            assert kinds(out) == ["Evaluate", "acknowledge", "question"]
            assert says(out)[-1][1].startswith(f"Question {i + 1}. ")
    assert kinds(out) == ["Evaluate", "acknowledge", "closing", "Finish"]
    assert says(out)[-1] == ("closing", CLOSING)
    assert out[-1] == Finish("completed", "all questions asked")
    assert [e.question.number for e in evaluated] == list(range(1, 13))
    assert all(e.attempt == 1 and e.transcript == FULL for e in evaluated)
    assert flow.phase == "finished" and flow.answered == 12 and flow.current is None
    assert len(acks) == len(ACKNOWLEDGEMENTS)  # acknowledgements vary
    assert flow.answer(FULL, 8.0) == [Ignored("not_listening")]


def test_partial_answer_gets_one_followup_then_moves_on() -> None:
    flow = started()
    out = flow.answer(PARTIAL, 6.0)
    assert kinds(out) == ["Evaluate", "followup"]
    assert out[0] == Evaluate(flow.questions[0], PARTIAL, 1)
    followup = out[1]
    assert isinstance(followup, Say) and followup.text in SAFE_PROBES  # names nothing expected
    assert followup.avoid == ("consideration", "intention", "capacity")
    assert flow.followups_used == 1 and flow.index == 0
    out = flow.answer("I think there is also capacity.", 4.0)
    assert kinds(out) == ["Evaluate", "acknowledge", "question"]
    ev = out[0]
    assert isinstance(ev, Evaluate) and ev.attempt == 2
    assert ev.transcript == PARTIAL + " I think there is also capacity."  # judged as a whole
    assert flow.index == 1 and flow.followups_used == 0 and flow.answered == 1


def test_followup_limit_comes_from_config() -> None:
    none = started(max_followups=0)
    assert kinds(none.answer(PARTIAL, 6.0)) == ["Evaluate", "acknowledge", "question"]
    two = started(max_followups=2)
    first = two.answer("An offer.", 6.0)
    second = two.answer("And acceptance.", 6.0)
    third = two.answer("Nothing more.", 6.0)
    assert kinds(first)[-1] == kinds(second)[-1] == "followup"
    assert says(first)[0][1] != says(second)[0][1]  # varied wording
    assert not leaks(says(second)[0][1], KEYWORDS)
    assert kinds(third) == ["Evaluate", "acknowledge", "question"]


def test_correct_answer_gets_no_followup() -> None:
    flow = started()
    # 4 of 5 keywords is full marks by the estimate, even with one still missing.
    out = flow.answer("offer acceptance consideration intention", 6.0)
    assert kinds(out) == ["Evaluate", "acknowledge", "question"]


@pytest.mark.parametrize(
    "request_text",
    ["Sorry, could you repeat the question?", "Pardon?", "Can you say that again please"],
)
def test_repeat_request_repeats_without_scoring(request_text: str) -> None:
    flow = started()
    out = flow.answer(request_text, 1.0)  # short, but a clear request
    assert out == [Say("Of course. Question 1. Question text number 1?", "repeat")]
    assert flow.index == 0 and flow.answered == 0 and flow.followups_used == 0


def test_repeat_after_a_followup_repeats_the_followup() -> None:
    flow = started()
    followup = says(flow.answer(PARTIAL, 6.0))[0][1]
    assert flow.answer("Say that again?", 1.0) == [Say(f"Of course. {followup}", "repeat")]


def test_an_answer_that_mentions_repeat_is_still_an_answer() -> None:
    flow = started()
    out = flow.answer("To repeat: offer, acceptance and consideration.", 5.0)
    assert kinds(out) == ["Evaluate", "acknowledge", "question"]


@pytest.mark.parametrize("text", ["I don't know.", "No idea, sorry.", "I'll pass.", "Skip"])
def test_dont_know_is_scored_and_moves_on(text: str) -> None:
    flow = started()
    out = flow.answer(text, 0.8)  # shorter than the minimum, still honoured
    assert out[0] == Evaluate(flow.questions[0], text, 1)
    assert says(out) == [
        ("acknowledge", MOVE_ON),
        ("question", "Question 2. Question text number 2?"),
    ]
    assert flow.answered == 1


def test_dont_know_after_a_followup_is_not_scored_again() -> None:
    flow = started()
    flow.answer(PARTIAL, 6.0)
    out = flow.answer("I do not know", 2.0)
    assert kinds(out) == ["acknowledge", "question"] and flow.index == 1


def test_a_short_answer_that_says_pass_with_content_is_an_answer() -> None:
    flow = started()
    out = flow.answer("Pass, maybe an offer?", 4.0)
    assert kinds(out) == ["Evaluate", "followup"]


def test_too_short_speech_is_held_and_joined_with_what_follows() -> None:
    flow = started()
    assert flow.answer("An offer.", 2.9) == [Ignored("held")]
    assert flow.index == 0 and flow.answered == 0
    out = flow.answer(FULL, 3.0)
    assert kinds(out) == ["Evaluate", "acknowledge", "question"]
    assert out[0] == Evaluate(flow.questions[0], f"An offer. {FULL}", 1)


def test_short_speech_with_nothing_after_it_is_the_answer() -> None:
    flow = started()
    assert flow.answer("An offer.", 1.2) == [Ignored("held")]
    assert flow.answer("And acceptance.", 1.0) == [Ignored("held")]  # still short: held
    assert flow.silence(3.9) == []
    out = flow.silence(4.0)
    assert out[0] == Evaluate(flow.questions[0], "An offer. And acceptance.", 1)
    assert flow.answered == 1 and flow.tentative


def test_held_speech_is_scored_when_time_runs_out() -> None:
    clock = Clock()
    flow = started(2, clock, max_question_duration_seconds=60)
    flow.answer("An offer.", 1.2)
    clock.now += 60
    out = flow.tick()
    assert out[0] == Evaluate(flow.questions[0], "An offer.", 1)
    assert kinds(out) == ["Evaluate", "acknowledge", "question"]


def test_a_reply_taken_back_restores_the_question_and_joins_the_continuation() -> None:
    """The student paused, the examiner moved on, the student went on: nothing is skipped."""
    flow = started(3)
    first = "An offer and acceptance."
    out = flow.answer(first, 3.5)
    assert kinds(out) == ["Evaluate", "followup"] and flow.tentative
    assert flow.take_back() and not flow.tentative
    assert flow.index == 0 and flow.followups_used == 0 and flow.answered == 0
    out = flow.answer("And consideration too.", 2.0)
    assert out[0] == Evaluate(flow.questions[0], f"{first} And consideration too.", 1)
    assert kinds(out) == ["Evaluate", "acknowledge", "question"] and flow.index == 1
    # After an advance: taking it back returns to question 1, with the whole answer held.
    assert flow.take_back() and flow.index == 0 and flow.current == flow.questions[0]
    out = flow.answer("Consideration is the price paid.", 3.0)
    assert out[0].transcript.endswith("And consideration too. Consideration is the price paid.")
    flow.commit()
    assert not flow.take_back() and flow.index == 1 and flow.answered == 1


def test_nothing_to_take_back_after_a_tick_or_a_repeat() -> None:
    flow = started(2)
    flow.answer(FULL, 5.0)
    flow.tick()
    assert flow.tentative  # a tick inside the time limit changes nothing
    flow.answer("Could you say the question again please?", 2.0)
    assert not flow.take_back()


def test_polite_dont_know_of_ten_words_moves_on() -> None:
    flow = started(2)
    out = flow.answer("I'm sorry, I don't know the answer to that one.", 2.7)
    assert kinds(out) == ["Evaluate", "acknowledge", "question"]
    assert says(out)[0] == ("acknowledge", MOVE_ON)


def test_empty_transcript_is_ignored() -> None:
    flow = started()
    assert flow.answer(" ... ", 5.0) == [Ignored("empty")]
    assert flow.index == 0


def test_time_limit_moves_on_without_scoring() -> None:
    clock = Clock()
    flow = started(2, clock, max_question_duration_seconds=120)
    clock.now += 119.5
    assert flow.tick() == [] and flow.time_left() == 0.5
    clock.now += 0.5
    out = flow.tick()
    assert says(out) == [
        ("acknowledge", TIME_UP),
        ("question", "Question 2. Question text number 2?"),
    ]
    assert flow.answered == 0 and flow.time_left() == 120
    clock.now += 200
    out = flow.tick()
    assert kinds(out) == ["acknowledge", "closing", "Finish"]
    assert out[-1] == Finish("completed", "all questions asked")


def test_late_answer_is_scored_but_gets_no_followup() -> None:
    clock = Clock()
    flow = started(clock=clock, max_question_duration_seconds=60)
    clock.now += 61  # the answer ended before the next tick noticed the limit
    assert kinds(flow.answer(PARTIAL, 6.0)) == ["Evaluate", "acknowledge", "question"]


def test_followups_and_repeats_do_not_extend_the_time_limit() -> None:
    clock = Clock()
    flow = started(clock=clock, max_question_duration_seconds=60)
    clock.now += 30
    flow.answer(PARTIAL, 6.0)
    flow.answer("pardon", 1.0)
    clock.now += 30
    assert kinds(flow.tick()) == ["acknowledge", "question"]


def test_nudge_once_per_question() -> None:
    flow = started()
    assert flow.silence(14.9) == []
    assert flow.silence(15.0) == [Say(NUDGE, "nudge")]
    assert flow.silence(30.0) == []
    flow.answer(FULL, 5.0)
    assert flow.silence(16.0) == [Say(NUDGE, "nudge")]


def test_terminate_mid_exam() -> None:
    flow = started(12)
    flow.answer(FULL, 5.0)
    flow.answer(FULL, 5.0)
    assert flow.terminate("disconnected past grace period") == [
        Finish("terminated", "disconnected past grace period")
    ]
    assert flow.phase == "finished" and flow.answered == 2 and flow.index == 2
    assert flow.answer(FULL, 5.0) == [Ignored("not_listening")]
    assert flow.tick() == [] and flow.silence(60) == []
    assert flow.terminate("again") == []


def test_events_before_start_and_double_start() -> None:
    flow = make_flow()
    assert flow.answer(FULL, 5.0) == [Ignored("not_listening")]
    assert flow.tick() == [] and flow.current is None
    flow.start()
    with pytest.raises(RuntimeError):
        flow.start()


def test_single_question_greeting_and_bad_settings() -> None:
    assert "one question" in says(make_flow(1).start())[0][1]
    with pytest.raises(ValueError, match="at least one question"):
        make_flow(0)
    with pytest.raises(ValueError, match="keyword_matching_threshold"):
        make_flow(keyword_matching_threshold=0)
    with pytest.raises(ValueError, match="max_score"):
        Question(1, 1, "q", KEYWORDS, "", max_score=0)


def test_spoken_texts_have_no_symbols() -> None:
    flow = started(2)
    texts = [t for _, t in says(flow.answer(PARTIAL, 6.0) + flow.answer(FULL, 6.0))]
    texts += [NUDGE, MOVE_ON, TIME_UP, CLOSING, *ACKNOWLEDGEMENTS]
    allowed = set(" .,?'")
    assert all(ch.isalnum() or ch in allowed for t in texts for ch in t)


def test_resumes_give_back_at_most_the_grace_period_per_question() -> None:
    """A dropped connection's outage is not thinking time, but reconnecting over and over
    cannot hold a question open: at most `reconnect_grace_seconds` per question comes back."""
    clock = Clock()
    flow = make_flow(2, clock, max_question_duration_seconds=60, reconnect_grace_seconds=10)
    flow.start()
    assert flow.time_left() == 60
    for _ in range(5):  # five outages of 8 s, each resumed
        flow.pause()
        clock.now += 8
        flow.resume()
    assert flow.time_left() == pytest.approx(60 - 40 + 10)  # 40 s away, 10 s given back
    clock.now += 30
    decisions = flow.tick()
    assert any(isinstance(d, Say) and d.text == TIME_UP for d in decisions)
    assert flow.index == 1 and flow.time_left() == 60  # the next question has its own credit
    flow.pause()
    clock.now += 5
    flow.resume()
    assert flow.time_left() == 60


def test_a_checkpoint_carries_what_was_said_followups_and_time_to_another_flow() -> None:
    clock = Clock()
    flow = started(3, clock, max_followups=1, max_question_duration_seconds=120)
    assert kinds(flow.answer(PARTIAL, 4.0)) == ["Evaluate", "followup"]
    flow.commit()
    clock.now += 30
    saved = flow.checkpoint()
    assert saved["index"] == 0 and saved["said"] == [PARTIAL] and saved["followups"] == 1
    # Another worker picks it up: the follow-up is asked again, the time used stays used.
    other_clock = Clock()
    other = make_flow(3, other_clock, max_followups=1, max_question_duration_seconds=120)
    other.continue_at(saved["index"], 1, saved)
    assert other.time_left() == pytest.approx(120 - 30)
    assert says(other.resume()) == [("repeat", f"Welcome back. {flow._last_prompt}")]
    decisions = other.answer("Also consideration and intention.", 3.0)
    evaluate = next(d for d in decisions if isinstance(d, Evaluate))
    assert evaluate.attempt == 2 and evaluate.transcript.startswith(PARTIAL)
    assert kinds(decisions)[1:] == ["acknowledge", "question"]  # no second follow-up
    assert other.answered == 1


def test_a_reply_that_can_be_taken_back_is_not_in_the_checkpoint() -> None:
    flow = started(3, max_followups=0)
    assert kinds(flow.answer(FULL, 6.0)) == ["Evaluate", "acknowledge", "question"]
    assert flow.tentative and flow.index == 1
    saved = flow.checkpoint()  # the worker dies before the reply is heard out
    assert saved["index"] == 0 and saved["said"] == [] and saved["held"] == [[FULL, 6.0]]
    other = make_flow(3, max_followups=0)
    other.continue_at(saved["index"], 0, saved)
    other.resume()
    decisions = other.silence(other.cfg.short_answer_wait_seconds)  # nothing more: it stands
    evaluate = next(d for d in decisions if isinstance(d, Evaluate))
    assert evaluate.question.number == 1 and evaluate.transcript == FULL
    flow.commit()
    assert flow.checkpoint()["index"] == 1  # heard out: the next question is where it stands


def test_a_checkpoint_of_another_question_is_not_applied() -> None:
    flow = started(3, max_followups=1)
    flow.answer(PARTIAL, 4.0)
    saved = flow.checkpoint()
    other = make_flow(3, max_followups=1)
    other.continue_at(2, 1, saved)  # the database says question 3: the checkpoint is stale
    assert other.index == 2 and other._attempts == [] and other.followups_used == 0
