"""Token buckets for what a client sends: audio on the audio clock, events by count.

A student's microphone produces audio at real time; a client that sends faster is replaying,
flooding or broken. `Bucket` holds up to `burst` units and refills at `rate` units a second of
wall time: audio is admitted up to `rate` x real time plus `burst` seconds (what a browser
buffers over a network hiccup), events up to `rate` a second. What is refused is dropped and
answered with `rate_limited`; the clock is injected so tests can drive it.
"""

from __future__ import annotations

from collections.abc import Callable


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
