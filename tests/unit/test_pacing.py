"""Token buckets and the audit throttle on a hand-driven clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from worker.voice.pacing import AuditThrottle, Bucket, KeyedBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_audio_bucket_admits_real_time_plus_the_margin() -> None:
    clock = Clock()
    audio = Bucket(rate=1.5, burst=3.0, clock=clock)
    assert all(audio.admit(1.0) for _ in range(3))  # the burst
    assert not audio.admit(1.0)  # nothing left: dropped, and nothing taken
    clock.now += 1.0
    assert audio.admit(1.0) and not audio.admit(1.0)  # 1.5 s refilled, 1 s taken
    clock.now += 60
    taken = sum(audio.admit(0.032) for _ in range(10_000))
    assert taken == int(3.0 / 0.032)  # refilled to the burst, never beyond


def test_a_real_time_sender_is_never_refused() -> None:
    clock = Clock()
    audio = Bucket(rate=1.5, burst=3.0, clock=clock)
    for _ in range(100_000):  # 53 minutes of 32 ms frames at real time
        clock.now += 0.032
        assert audio.admit(0.032)


def test_keyed_buckets_are_per_client_and_bounded() -> None:
    clock = Clock()
    buckets = KeyedBuckets(rate=1, burst=2, clock=clock, max_keys=3)
    assert buckets.admit("a") and buckets.admit("a") and not buckets.admit("a")
    assert buckets.admit("b")  # another client has its own
    for key in ("c", "d", "e"):
        buckets.admit(key)
    assert len(buckets._buckets) == 3  # the least recently used are forgotten...
    assert buckets.admit("a") and buckets.admit("a") and not buckets.admit("a")  # ...start full
    clock.now += 1
    assert buckets.admit("a") and not buckets.admit("a")  # one a second


async def test_audit_throttle_writes_one_row_per_window_with_the_count() -> None:
    rows: list[tuple[str, dict[str, Any]]] = []
    throttle = AuditThrottle(0.05, lambda key, d: rows.append((key, d)))
    for n in range(500):
        throttle.hit("1.2.3.4", {"reason": f"r{n}"})
    throttle.hit("5.6.7.8", {"reason": "x"})
    assert rows == [
        ("1.2.3.4", {"reason": "r0", "count": 1}),
        ("5.6.7.8", {"reason": "x", "count": 1}),
    ]
    await asyncio.sleep(0.1)
    assert rows[2:] == [("1.2.3.4", {"reason": "r499", "count": 499})]
    throttle.hit("1.2.3.4", {"reason": "again"})  # a new window
    assert rows[-1] == ("1.2.3.4", {"reason": "again", "count": 1})
    throttle.flush()
    assert sum(d["count"] for k, d in rows if k == "1.2.3.4") == 501


@pytest.mark.parametrize("cost", [0.0, 0.5])
def test_bucket_costs(cost: float) -> None:
    bucket = Bucket(rate=1, burst=1, clock=Clock())
    assert bucket.admit(cost)
