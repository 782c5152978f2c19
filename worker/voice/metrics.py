"""Per-turn latency accounting, the worker's Prometheus series and an event-loop lag sampler.

A `TurnStages` follows one answer from the end-of-answer decision to the reply's first audio.
Stage times (ms) are what the student waited for on the critical path:
- `endpoint_wait`: silence waited before deciding the answer ended (audio time);
- `asr`: waiting for the transcript after that decision (0 when the speculative run was ready);
- `llm_first_token`, `llm_first_sentence`: the acknowledgement's LLM, when it is on the path;
- `tts_first_audio`: synthesis of the first reply audio (about 0 for a prompt cached at start);
- `db_enqueue`: time spent handing this turn's rows to the write-behind writer.
`critical_path_models` sums the model stages (asr + llm_first_sentence + tts_first_audio), so
turn latency minus it is the worker's own overhead.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import statistics
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger("viva.turn")

_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0)
TURN_LATENCY = Histogram(
    "viva_turn_latency_seconds",
    "End of the student's answer decided -> first examiner audio written",
    buckets=_LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "viva_turn_stage_seconds",
    "Per-turn stage times on the critical path",
    ["stage"],
    buckets=(0.0005, 0.001, 0.005, *_LATENCY_BUCKETS),
)
LOOP_LAG = Histogram(
    "viva_event_loop_lag_seconds",
    "How late the event loop ran a timer (a blocked loop stalls every session)",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
LIVE_SESSIONS = Gauge("viva_live_sessions", "Sessions held by this process (connected or not)")
CONNECTED = Gauge("viva_connected_students", "Sessions with a connected student")
BARGE_INS = Counter("viva_barge_ins_total", "Examiner responses cut short by the student")
TAKEN_BACK = Counter(
    "viva_replies_taken_back_total",
    "Replies taken back because the student had not finished their answer",
)
WS_ERRORS = Counter("viva_ws_errors_total", "Error events sent to clients", ["code"])
SLOW_CONSUMERS = Counter(
    "viva_slow_consumers_total", "Connections dropped because the client stopped reading"
)
SESSIONS_ENDED = Counter("viva_sessions_ended_total", "Sessions ended", ["status"])
OVER_BUDGET = Counter(
    "viva_turns_over_budget_total", "Turns whose latency exceeded turn.latency_target_ms"
)


@dataclass
class TurnStages:
    endpoint_wait: float
    asr: float = 0.0
    asr_speculative: bool = False
    llm_first_token: float | None = None
    llm_first_sentence: float | None = None
    tts_first_audio: float | None = None
    db_enqueue: float = 0.0

    @property
    def critical_path_models(self) -> float:
        return self.asr + (self.llm_first_sentence or 0.0) + (self.tts_first_audio or 0.0)

    def as_dict(self) -> dict[str, float]:
        out = {
            "endpoint_wait": self.endpoint_wait,
            "asr": self.asr,
            "llm_first_token": self.llm_first_token,
            "llm_first_sentence": self.llm_first_sentence,
            "tts_first_audio": self.tts_first_audio,
            "db_enqueue": self.db_enqueue,
            "critical_path_models": self.critical_path_models,
        }
        return {k: round(v, 2) for k, v in out.items() if v is not None}

    def report(
        self, session_code: str, question: int | None, turn_ms: float, budget_ms: float
    ) -> None:
        """The turn's one log line and its histograms; a turn over budget is counted."""
        TURN_LATENCY.observe(turn_ms / 1000)
        if turn_ms > budget_ms:
            OVER_BUDGET.inc()
        stages = self.as_dict()
        for name, ms in stages.items():
            if name != "critical_path_models":
                STAGE_SECONDS.labels(name).observe(ms / 1000)
        log.info(
            "turn session=%s question=%s turn_ms=%.1f over_budget=%s speculative=%s %s",
            session_code,
            question,
            turn_ms,
            turn_ms > budget_ms,
            self.asr_speculative,
            " ".join(f"{k}_ms={v}" for k, v in stages.items()),
        )


class LoopLag:
    """Samples how late a periodic timer fires; a busy or blocked loop shows up here."""

    def __init__(self, interval_s: float = 0.05, window: int = 1200):
        self.interval_s = interval_s
        self._samples: collections.deque[float] = collections.deque(maxlen=window)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, loop.time() - due)
            self._samples.append(lag * 1000)
            LOOP_LAG.observe(lag)

    def reset(self) -> None:
        self._samples.clear()

    def summary(self) -> dict[str, float | int]:
        values = sorted(self._samples)
        if not values:
            return {"samples": 0}
        return {
            "samples": len(values),
            "p50": round(statistics.median(values), 2),
            "p99": round(values[min(len(values) - 1, int(0.99 * len(values)))], 2),
            "max": round(values[-1], 2),
        }
