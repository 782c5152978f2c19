"""SPEC.md's grading rules at their boundaries, and a terminated session's totals."""

from __future__ import annotations

import pytest

from core.grading import ScoredAnswer, feedback_type, grade_for, passed, session_totals


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (10, "correct"),
        (8, "correct"),
        (7.99, "partial"),
        (5, "partial"),
        (4.99, "incorrect"),
        (0, "incorrect"),
    ],
)
def test_feedback_type_boundaries(score: float, expected: str) -> None:
    assert feedback_type(score, 10) == expected


@pytest.mark.parametrize(
    ("pct", "grade", "ok"),
    [
        (100, "A", True),
        (80, "A", True),
        (79.99, "B", True),
        (70, "B", True),
        (69.99, "C", True),
        (60, "C", True),
        (59.99, "D", True),
        (50, "D", True),
        (49.99, "F", False),
        (0, "F", False),
    ],
)
def test_grade_and_pass_boundaries(pct: float, grade: str, ok: bool) -> None:
    assert grade_for(pct) == grade and passed(pct) is ok


def test_bad_max_score() -> None:
    with pytest.raises(ValueError):
        feedback_type(1, 0)


def _a(n: int, score: float, latency: float | None = 300.0) -> ScoredAnswer:
    return ScoredAnswer(n, f"q{n}", f"t{n}", score, 10, feedback_type(score, 10), latency)


def test_terminated_session_is_graded_on_the_whole_exam() -> None:
    totals = session_totals(
        [_a(1, 10), _a(2, 10), _a(3, 10)], total_questions=12, max_score_per_question=10
    )
    assert (totals.total_score, totals.max_score) == (30, 120)
    assert totals.percentage == 25 and totals.grade == "F" and not totals.passed
    assert totals.result_json["questions_answered"] == 3


def test_follow_up_counts_best_attempt_and_latency_summary() -> None:
    answers = [_a(1, 4, 200), _a(1, 9, 400), _a(2, 8, None)] + [_a(n, 8) for n in range(3, 13)]
    totals = session_totals(answers, total_questions=12, max_score_per_question=10)
    assert totals.total_score == 9 + 8 + 80
    assert totals.grade == "A" and totals.passed
    latency = totals.result_json["latency"]
    assert latency["turns"] == 12 and latency["max_ms"] == 400
    assert [q["question_number"] for q in totals.result_json["questions"]] == list(range(1, 13))


def test_empty_session() -> None:
    totals = session_totals([], total_questions=12, max_score_per_question=10)
    assert totals.total_score == 0 and totals.grade == "F"
    assert totals.result_json["latency"] == {"turns": 0}
