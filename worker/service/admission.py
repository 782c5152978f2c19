"""Per-client admission: how often one client (IP address) may create sessions, start practice
sessions and open voice sockets.

The limits are token buckets per client (`worker/voice/pacing.py`, written here rather than taken
from a rate-limit library because the audio pacing needs fractional costs on an injected clock,
and one small bucket serves both); their sizes are `limits.*` in config.yaml. A refused request
gets 429 `rate_limited` (HTTP) or `too_many_connections` (WebSocket).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from core.config import LimitsConfig
from worker.voice.pacing import KeyedBuckets

Kind = Literal["create", "practice", "ws"]


class Admission:
    def __init__(self, limits: LimitsConfig, clock: Callable[[], float] = time.monotonic):
        self._buckets: dict[Kind, KeyedBuckets] = {
            "create": KeyedBuckets(limits.creates_per_second, limits.creates_burst, clock),
            "practice": KeyedBuckets(limits.practice_per_minute / 60, limits.practice_burst, clock),
            "ws": KeyedBuckets(limits.ws_opens_per_second, limits.ws_opens_burst, clock),
        }

    def allow(self, kind: Kind, client: str | None) -> bool:
        return self._buckets[kind].admit(client or "?")
