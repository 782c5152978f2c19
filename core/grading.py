"""Grading rules of SPEC.md as pure functions: feedback type, grade, pass, and session totals."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

from core.vocabulary import FeedbackType, Grade

CORRECT_AT = 0.8
PARTIAL_AT = 0.5
PASS_AT = 50.0
GRADE_FLOORS: tuple[tuple[float, Grade], ...] = ((80.0, "A"), (70.0, "B"), (60.0, "C"), (50.0, "D"))


def feedback_type(score: float, max_score: float) -> FeedbackType:
    """`correct` at >= 80% of max, `partial` at >= 50%, else `incorrect`."""
    if max_score <= 0:
        raise ValueError(f"max_score must be positive, got {max_score}")
    ratio = score / max_score
    if ratio >= CORRECT_AT:
        return "correct"
    if ratio >= PARTIAL_AT:
        return "partial"
    return "incorrect"


def grade_for(percentage: float) -> Grade:
    for floor, grade in GRADE_FLOORS:
        if percentage >= floor:
            return grade
    return "F"


def passed(percentage: float) -> bool:
    return percentage >= PASS_AT


@dataclass(frozen=True)
class ScoredAnswer:
    """One evaluated answer, as the result needs it."""

    question_number: int
    question_text: str
    transcript: str | None
    score: float
    max_score: float
    feedback_type: str
    latency_ms: float | None


@dataclass(frozen=True)
class SessionTotals:
    total_score: float
    max_score: float
    percentage: float
    grade: str
    passed: bool
    result_json: dict[str, Any]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def latency_summary(latencies: Iterable[float | None]) -> dict[str, Any]:
    values = [v for v in latencies if v is not None]
    if not values:
        return {"turns": 0}
    return {
        "turns": len(values),
        "p50_ms": round(median(values), 1),
        "p95_ms": round(_percentile(values, 0.95), 1),
        "max_ms": round(max(values), 1),
        "mean_ms": round(sum(values) / len(values), 1),
    }


def session_totals(
    answers: Sequence[ScoredAnswer],
    total_questions: int,
    max_score_per_question: float,
    extra: dict[str, Any] | None = None,
) -> SessionTotals:
    """Totals over the session's questions; unanswered questions count as zero.

    The max score is questions x max_score (SPEC.md), so a terminated session is graded on the
    whole exam, not only on what was answered. When a question was answered more than once (a
    follow-up), its best evaluation counts.
    """
    best: dict[int, ScoredAnswer] = {}
    for a in answers:
        if a.question_number not in best or a.score > best[a.question_number].score:
            best[a.question_number] = a
    total = round(sum(a.score for a in best.values()), 2)
    max_total = float(total_questions * max_score_per_question)
    pct = round(100.0 * total / max_total, 2) if max_total else 0.0
    per_question = [
        {
            "question_number": a.question_number,
            "question": a.question_text,
            "transcript": a.transcript,
            "score": a.score,
            "max_score": a.max_score,
            "feedback_type": a.feedback_type,
            "latency_ms": a.latency_ms,
        }
        for a in sorted(best.values(), key=lambda a: a.question_number)
    ]
    result_json: dict[str, Any] = {
        "questions": per_question,
        "questions_answered": len(best),
        "total_questions": total_questions,
        "latency": latency_summary(a.latency_ms for a in answers),
    }
    if extra:
        result_json.update(extra)
    return SessionTotals(total, max_total, pct, grade_for(pct), passed(pct), result_json)
