"""Token buckets for what a client sends: audio on the audio clock, events by count.

A student's microphone produces audio at real time; a client that sends faster is replaying,
flooding or broken. `Bucket` holds up to `burst` units and refills at `rate` units a second of
wall time: audio is admitted up to `rate` x real time plus `burst` seconds (what a browser
buffers over a network hiccup), events up to `rate` a second. What is refused is dropped and
answered with `rate_limited`; the clock is injected so tests can drive it. `KeyedBuckets` keeps
one bucket per client for admission (`worker/service/admission.py`); `AuditThrottle` bounds the
audit rows a client's repeated events write.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Bucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float]):
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = burst
        self._at = clock()

    def admit(self, cost: float) -> bool:
        """Take `cost` units if they are there; False (and nothing taken) if not."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if cost > self._tokens:
            return False
        self._tokens -= cost
        return True


class KeyedBuckets:
    """One `Bucket` per key (a client IP), the least recently used forgotten beyond `max_keys`
    so a spray of addresses cannot grow the table without bound (a forgotten key starts full
    again, which only ever favours a real client)."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float], max_keys: int = 10_000
    ):
        self.rate, self.burst, self._clock, self.max_keys = rate, burst, clock, max_keys
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def admit(self, key: str, cost: float = 1) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(self.rate, self.burst, self._clock)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.admit(cost)


MAX_WINDOWS = 10_000  # audit windows open at once; beyond that, counted under one shared key


@dataclass
class _Window:
    count: int
    details: dict[str, Any]


class AuditThrottle:
    """At most one audit row per key (a client, a session) per window: the first event of a
    window is written at once with `count` 1; the events after it are counted and written as one
    row with their `count` when the window closes. Nothing is lost, the rows are bounded."""

    def __init__(self, window_s: float, write: Callable[[str, dict[str, Any]], None]):
        self.window_s, self._write = window_s, write
        self._windows: dict[str, _Window] = {}

    def hit(self, key: str, details: dict[str, Any]) -> None:
        if key not in self._windows and len(self._windows) >= MAX_WINDOWS:
            key = "*"
        window = self._windows.get(key)
        if window is not None:
            window.count += 1
            window.details = details  # the latest, with the count of all
            return
        self._write(key, {**details, "count": 1})
        self._windows[key] = _Window(0, details)
        asyncio.get_running_loop().call_later(self.window_s, self._close, key)

    def _close(self, key: str) -> None:
        window = self._windows.pop(key, None)
        if window is not None and window.count:
            self._write(key, {**window.details, "count": window.count})

    def flush(self) -> None:
        """Write every open window's count now (shutdown)."""
        for key in list(self._windows):
            self._close(key)
