"""The pure rules of benchmarks/soak.py: expected/found/duplicated rows, RSS slope, per-minute
latency percentiles, and the worker-log scan."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.soak_accounting import (
    SessionLog,
    check_rows,
    growth_pct,
    log_problems,
    per_minute,
    slope_per_min,
    window_mean,
)


def _told(code: str, *transcripts: tuple[int, str], **kw: object) -> SessionLog:
    log = SessionLog(code, list(transcripts), connected=True)
    for k, v in kw.items():
        setattr(log, k, v)
    return log


def test_every_told_answer_and_result_found() -> None:
    sessions = [_told("A", (1, "offer"), (2, "consideration"), completed_status="completed")]
    rows = [("A", 1, "offer"), ("A", 2, "consideration")]
    check = check_rows(sessions, rows, {"A": 1})
    assert (check.rows_expected, check.rows_found, check.rows_duplicated) == (3, 3, 0)


def test_a_followup_row_holds_the_joined_attempts() -> None:
    sessions = [_told("A", (1, "offer"), (1, "and acceptance"))]
    check = check_rows(sessions, [("A", 1, "offer and acceptance")], {})
    assert (check.rows_expected, check.rows_found, check.rows_duplicated) == (1, 1, 0)
    # The follow-up's answer overwrote the first instead of joining it: missing.
    lost = check_rows(sessions, [("A", 1, "and acceptance")], {})
    assert lost.rows_found == 0 and lost.missing
    # Out of order, or only a word in common with the row, is not holding it.
    assert check_rows(sessions, [("A", 1, "and acceptance offer")], {}).rows_found == 0
    assert check_rows([_told("A", (1, "offer"))], [("A", 1, "offers")], {}).rows_found == 0


def test_a_reply_taken_back_is_superseded_by_the_whole_answer() -> None:
    """The student went on after the examiner began to reply: the client was told the first
    part, then the whole answer (first part first); one row holds the whole answer."""
    sessions = [_told("A", (1, "insulin is made by the beta cells"), (1, "insulin is made by"
                      " the beta cells it lowers blood sugar"))]  # fmt: skip
    rows = [("A", 1, "insulin is made by the beta cells it lowers blood sugar")]
    check = check_rows(sessions, rows, {})
    assert (check.rows_expected, check.rows_found, check.missing) == (1, 1, [])
    lost = check_rows(sessions, [], {})  # and when the whole answer is not stored, it is missing
    assert lost.rows_expected == 1 and lost.rows_found == 0


def test_missing_answer_and_missing_result() -> None:
    sessions = [_told("A", (1, "offer"), ended_reason="completed")]
    check = check_rows(sessions, [], {"A": 0})
    assert (check.rows_expected, check.rows_found) == (2, 0)
    assert len(check.missing) == 2


def test_two_rows_for_one_question_are_a_duplicate() -> None:
    sessions = [_told("A", (1, "offer"))]
    check = check_rows(sessions, [("A", 1, "offer"), ("A", 1, "offer")], {})
    assert (check.rows_found, check.rows_duplicated, check.rows_unacknowledged) == (1, 1, 0)
    check = check_rows(sessions, [("A", 1, "offer"), ("A", 1, "offer more")], {})
    assert (check.rows_found, check.rows_duplicated) == (1, 1)


def test_an_attempt_the_client_never_heard_of_is_unacknowledged_not_duplicated() -> None:
    sessions = [_told("A", (1, "offer"))]
    rows = [("A", 1, "offer offer"), ("A", 2, "x")]  # a second attempt the client missed
    check = check_rows(sessions, rows, {})
    assert (check.rows_found, check.rows_duplicated, check.rows_unacknowledged) == (1, 0, 1)


def test_results_duplicated_and_ended_in_database() -> None:
    sessions = [_told("A", completed_status="completed"), _told("B", abandoned=True)]
    check = check_rows(sessions, [], {"A": 2, "B": 1, "C": 0}, ended=["C"])
    assert check.rows_expected == 3  # A, B (abandoned), C (ended in the database)
    assert (check.rows_found, check.rows_duplicated) == (2, 1)


def test_abandoned_before_connecting_wants_no_result() -> None:
    log = SessionLog("A", abandoned=True)
    assert check_rows([log], [], {}).rows_expected == 0


def test_slope_per_minute() -> None:
    samples = [(t, 100 + 0.5 * t) for t in range(0, 300, 5)]  # 0.5 MB/s
    assert slope_per_min(samples) == pytest.approx(30.0)
    assert slope_per_min([(0, 1)]) is None
    assert slope_per_min([(3, 1), (3, 2)]) is None


def test_window_mean_and_growth() -> None:
    samples = [(0.0, 100.0), (30.0, 110.0), (70.0, 120.0)]
    assert window_mean(samples, 0, 60) == 105.0
    assert window_mean(samples, 100, 160) is None
    assert growth_pct(100.0, 104.0) == 4.0
    assert growth_pct(None, 1.0) is None


def test_per_minute_percentiles() -> None:
    out = per_minute([(5, 10.0), (50, 20.0), (61, 30.0)])
    assert list(out) == ["0", "1"]
    assert out["0"]["n"] == 2 and out["0"]["p50"] == 15.0
    assert out["1"]["p99"] == 30.0


def test_per_minute_leaves_out_the_wind_down() -> None:
    out = per_minute([(5, 10.0), (119, 20.0), (121, 99.0)], end_s=120)
    assert list(out) == ["0", "1"]
    assert out["1"]["n"] == 1 and out["1"]["p50"] == 20.0


def test_log_problems() -> None:
    lines = [
        "2026 INFO worker: fine",
        "Traceback (most recent call last):",
        "2026 ERROR asyncio: Task exception was never retrieved",
        "2026 WARNING db: retrying",
    ]
    out = log_problems(lines)
    assert out["count"] == 2 and out["first"][0].startswith("Traceback")


def _result(**changes: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "rows_found": 10,
        "rows_expected": 10,
        "rows_duplicated": 0,
        "worker_log_problems": {"count": 0},
        "errors": {"unexpected": {}},
        "rss_mb": {"growth_pct": 1.0},
        "p95_last_vs_first_minute_pct": 2.0,
    }
    for key, value in changes.items():
        if key == "growth_pct":
            result["rss_mb"]["growth_pct"] = value
        else:
            result[key] = value
    return result


def test_verdict_limits() -> None:
    from benchmarks.soak import verdict

    assert verdict(_result(), 5, 10) == []
    assert verdict(_result(p95_last_vs_first_minute_pct=-30.0), 5, 10) == []  # faster is fine
    assert "RSS growth 5.0" in verdict(_result(growth_pct=5.0), 5, 10)[0]
    assert "turn p95" in verdict(_result(p95_last_vs_first_minute_pct=10.5), 5, 10)[0]
    assert "rows_found 9" in verdict(_result(rows_found=9), 5, 10)[0]
    assert "student crashed" in verdict(_result(errors={"unexpected": {"crash:X": 1}}), 5, 10)[0]
    assert len(verdict(_result(growth_pct=None, p95_last_vs_first_minute_pct=None), 5, 10)) == 2
