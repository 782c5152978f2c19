"""The pure figures of benchmarks/soak.py: what the database should hold against what it holds,
RSS slope and growth, per-minute latency percentiles, and problems in the worker's log.

No I/O here, so tests/unit/test_soak_accounting.py checks every rule without a server.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.latency_client import quantiles

LOG_PROBLEMS = re.compile(r"Traceback|Task exception was never retrieved| ERROR ")

Key = tuple[str, int]  # (session code, question number)


@dataclass
class SessionLog:
    """What one client was told about one session."""

    code: str
    transcripts: list[tuple[int, str]] = field(default_factory=list)  # (question, transcript)
    connected: bool = False  # saw session.created at least once
    completed_status: str | None = None  # exam.completed's status, once seen
    ended_reason: str | None = None  # session.ended's reason, once seen
    abandoned: bool = False  # the client left for good on purpose
    problem: str | None = None  # the unexpected error that ended it, if any
    # The last things the client saw and did ("12.3 response.done question"): what the report
    # shows for a session with a problem.
    trail: deque[str] = field(default_factory=lambda: deque(maxlen=24))


@dataclass(frozen=True)
class RowCheck:
    rows_expected: int
    rows_found: int
    rows_duplicated: int
    rows_unacknowledged: int  # answers stored that no client was told about (dropped links)
    missing: list[str]  # the first few expected rows not found, for the report
    duplicates: list[str] = field(default_factory=list)  # the first few duplicated keys


def _holds(row_text: str, transcripts: list[str]) -> bool:
    """A question's answers row holds every attempt at it joined, in the order they were said
    (and possibly one the client never heard of: its link dropped before the transcript)."""
    row, at = " " + " ".join(row_text.split()) + " ", 0
    for said in transcripts:
        found = row.find(" " + " ".join(said.split()) + " ", at)
        if found < 0:
            return False
        at = found + len(" ".join(said.split())) + 1
    return True


def superseded_dropped(texts: list[str]) -> list[str]:
    """The transcripts of one question without those a later one continues: when the student
    went on after the examiner began to reply, the reply was taken back and the client was told
    the whole answer again (the earlier words first); only that whole answer is stored."""
    norm = [" ".join(t.split()) for t in texts]
    return [
        t
        for i, t in enumerate(texts)
        if not any(later.startswith(norm[i] + " ") for later in norm[i + 1 :])
    ]


def check_rows(
    sessions: Iterable[SessionLog],
    answer_rows: Iterable[tuple[str, int, str | None]],
    result_counts: Mapping[str, int],
    ended: Iterable[str] = (),
) -> RowCheck:
    """Expected: one answers row per question a client was told a transcript of (holding every
    transcript told for it, in order) and one results row per session that a client saw end or
    abandoned on purpose (the grace period or the shutdown ends those). Found: how many of them
    exist. Duplicated: answers rows of a question beyond one, and results beyond one per
    session. A session the database says has ended wants its result too. Rows of a question no
    client heard of are unacknowledged. A transcript that a later one of the same question
    continues (a reply taken back) is superseded: the later holds it."""
    sessions = list(sessions)
    told: dict[Key, list[str]] = defaultdict(list)
    want_result: set[str] = set(ended)  # sessions the database itself says have ended
    for s in sessions:
        for number, text in s.transcripts:
            told[(s.code, number)].append(text)
    for key, texts in told.items():
        told[key] = superseded_dropped(texts)
    for s in sessions:
        if s.completed_status or s.ended_reason or (s.abandoned and s.connected):
            want_result.add(s.code)
    stored: dict[Key, list[str]] = defaultdict(list)
    for code, number, row_text in answer_rows:
        stored[(code, number)].append(row_text or "")
    expected = found = duplicated = unacknowledged = 0
    missing: list[str] = []
    dups: list[str] = []
    for key, texts in told.items():
        # One row per question of a session, whatever was said to it and whoever wrote it.
        rows = stored.get(key, [])
        expected += 1
        if any(_holds(row, texts) for row in rows):
            found += 1
        elif len(missing) < 5:
            missing.append(f"answers {key[0]} q{key[1]} {' | '.join(texts)!r} in {rows!r}")
        if len(rows) > 1:
            duplicated += len(rows) - 1
            if len(dups) < 5:
                dups.append(f"answers {key[0]} q{key[1]} x{len(rows)}")
    unacknowledged += sum(len(rows) for key, rows in stored.items() if key not in told)
    for code in sorted(want_result):
        expected += 1
        n = result_counts.get(code, 0)
        found += min(n, 1)
        duplicated += max(0, n - 1)
        if n > 1 and len(dups) < 5:
            dups.append(f"results {code} x{n}")
        if n == 0 and len(missing) < 5:
            missing.append(f"results {code}")
    duplicated += sum(max(0, n - 1) for c, n in result_counts.items() if c not in want_result)
    return RowCheck(expected, found, duplicated, unacknowledged, missing, dups)


# --- time series -----------------------------------------------------------------------------


def slope_per_min(samples: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) samples, in value per minute."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    sxx = sum((t - mx) ** 2 for t, _ in samples)
    if sxx == 0:
        return None
    sxy = sum((t - mx) * (v - my) for t, v in samples)
    return sxy / sxx * 60


def window_mean(samples: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    values = [v for t, v in samples if start <= t < end]
    return sum(values) / len(values) if values else None


def growth_pct(first: float | None, last: float | None) -> float | None:
    if first is None or last is None or first == 0:
        return None
    return round((last / first - 1) * 100, 2)


def per_minute(
    samples: Iterable[tuple[float, float]], end_s: float = float("inf")
) -> dict[str, dict[str, Any]]:
    """(seconds since start, latency ms) -> {"0": {"n":.., "p50":.., "p95":.., "p99":..}, ...},
    leaving out samples from `end_s` on (the wind-down, when the students end their vivas)."""
    buckets: dict[int, list[float]] = defaultdict(list)
    for t, v in samples:
        if t < end_s:
            buckets[int(t // 60)].append(v)
    return {str(m): {"n": len(vs), **quantiles(vs)} for m, vs in sorted(buckets.items())}


def log_problems(lines: Iterable[str], keep: int = 5) -> dict[str, Any]:
    """Count the worker log's lines that show an unhandled problem; quote the first few."""
    count, first = 0, list[str]()
    for line in lines:
        if LOG_PROBLEMS.search(line):
            count += 1
            if len(first) < keep:
                first.append(line.rstrip()[:300])
    return {"count": count, "first": first}
