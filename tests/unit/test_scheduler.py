"""The model scheduler (models/scheduler.py) on a fake clock: priority order, ageing, fairness
between sessions, dropping of work nobody waits for, the bound, promotion, and FIFO."""

from __future__ import annotations

import asyncio

import pytest

from models.scheduler import (
    Priority,
    QueueFull,
    Request,
    Scheduler,
    at_priority,
    current_priority,
)

P = Priority


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class Bench:
    """Requests that take the slot, note their name, and hold it until told to go."""

    def __init__(self, sched: Scheduler):
        self.sched, self.order, self.tasks = sched, [], {}  # type: ignore[var-annotated]
        self.go: dict[str, asyncio.Event] = {}

    def submit(self, name: str, priority: Priority | Request, session: str = "") -> None:
        self.go[name] = asyncio.Event()

        async def run() -> None:
            await self.sched.acquire(priority, session)
            self.order.append(name)
            try:
                await self.go[name].wait()
            finally:
                self.sched.release()

        self.tasks[name] = asyncio.create_task(run())

    async def finish(self, name: str) -> None:
        self.go[name].set()
        await settle()

    async def drain(self) -> None:
        for _ in range(len(self.tasks) + 1):
            for name, event in self.go.items():
                if name in self.order:
                    event.set()
            await settle()


async def test_the_most_urgent_request_goes_next() -> None:
    bench = Bench(Scheduler("asr", 1, clock=Clock()))
    bench.submit("busy", P.TURN)
    await settle()
    for name, prio in [("score", P.SCORING), ("spec", P.SPECULATIVE), ("final", P.TURN)]:
        bench.submit(name, prio)
    await settle()
    assert bench.order == ["busy"]
    await bench.drain()
    assert bench.order == ["busy", "final", "spec", "score"]
    assert bench.sched.stats.waits.keys() == {"turn", "speculative", "scoring"}


async def test_fifo_keeps_arrival_order() -> None:
    bench = Bench(Scheduler("asr", 1, policy="fifo", clock=Clock()))
    bench.submit("busy", P.TURN)
    await settle()
    for name, prio in [("score", P.SCORING), ("spec", P.SPECULATIVE), ("final", P.TURN)]:
        bench.submit(name, prio)
    await bench.drain()
    assert bench.order == ["busy", "score", "spec", "final"]


async def test_work_nobody_waits_for_leaves_the_queue_before_it_starts() -> None:
    bench = Bench(Scheduler("asr", 1, clock=Clock()))
    bench.submit("busy", P.TURN)
    await settle()
    bench.submit("outgrown", P.SPECULATIVE)
    bench.submit("final", P.TURN, session="b")
    bench.submit("later", P.SPECULATIVE)
    await settle()
    bench.tasks["outgrown"].cancel()
    await settle()
    assert bench.sched.depth == 2 and bench.sched.stats.dropped == 1
    await bench.drain()
    assert "outgrown" not in bench.order and bench.order[-1] == "later"


async def test_a_request_granted_then_cancelled_hands_its_slot_on() -> None:
    sched = Scheduler("tts", 1, clock=Clock())
    bench = Bench(sched)
    bench.submit("busy", P.TURN)
    await settle()
    bench.submit("next", P.TURN)
    bench.submit("after", P.TURN)
    await settle()
    bench.go["busy"].set()
    await asyncio.sleep(0)  # busy's release grants "next" ...
    await asyncio.sleep(0)
    bench.tasks["next"].cancel()  # ... which is cancelled before it runs
    await bench.drain()
    assert "after" in bench.order  # the slot was not lost


async def test_the_bound_refuses_or_drops_the_least_urgent() -> None:
    bench = Bench(Scheduler("asr", 1, max_queue=2, clock=Clock()))
    bench.submit("busy", P.TURN)
    await settle()
    bench.submit("spec", P.SPECULATIVE)
    bench.submit("score", P.SCORING)
    await settle()
    bench.submit("more scoring", P.SCORING)  # no better than the worst waiting: refused
    await settle()
    with pytest.raises(QueueFull):
        bench.tasks["more scoring"].result()
    bench.submit("final", P.TURN)  # more urgent than the worst: that one is dropped for it
    await settle()
    with pytest.raises(QueueFull):
        bench.tasks["score"].result()
    await bench.drain()
    assert bench.order == ["busy", "final", "spec"]
    assert bench.sched.stats.refused == 2


async def test_sessions_take_turns_at_equal_priority() -> None:
    bench = Bench(Scheduler("tts", 1, clock=Clock()))
    bench.submit("busy", P.SPEECH, session="x")
    await settle()
    for i in range(4):
        bench.submit(f"a{i}", P.SPEECH, session="a")
    await settle()
    bench.submit("b0", P.SPEECH, session="b")
    bench.submit("b1", P.SPEECH, session="b")
    await bench.drain()
    # a session flooding the model does not starve one that asks later
    assert bench.order == ["busy", "a0", "b0", "a1", "b1", "a2", "a3"]


async def test_waiting_ages_into_priority_so_scoring_is_not_starved() -> None:
    clock = Clock()
    bench = Bench(Scheduler("llm", 1, age_after_s=1.0, clock=clock))
    bench.submit("busy", P.TURN)
    await settle()
    bench.submit("score", P.SCORING)
    await settle()
    clock.now += 10  # it has waited long enough to count as turn-critical
    bench.submit("final", P.TURN)
    await bench.drain()
    assert bench.order == ["busy", "score", "final"]


async def test_promoted_speculation_goes_before_other_speculation() -> None:
    bench = Bench(Scheduler("asr", 1, clock=Clock()))
    bench.submit("busy", P.TURN)
    await settle()
    window = Request(P.SPECULATIVE)
    bench.submit("other", P.SPECULATIVE, session="b")
    bench.submit("window", window, session="a")
    await settle()
    window.promote(P.TURN)  # the student stopped: this window is the answer now
    await bench.drain()
    assert bench.order == ["busy", "window", "other"]


async def test_priority_travels_with_the_context() -> None:
    assert current_priority() == P.TURN
    with at_priority(P.SCORING):
        assert current_priority() == P.SCORING
        inherited = asyncio.create_task(asyncio.sleep(0, current_priority()))
    assert await inherited == P.SCORING and current_priority() == P.TURN


async def test_free_slots_start_at_once() -> None:
    sched = Scheduler("llm", 3, clock=Clock())
    bench = Bench(sched)
    for i in range(3):
        bench.submit(f"r{i}", P.SCORING)
    await settle()
    assert bench.order == ["r0", "r1", "r2"] and sched.depth == 0
    await bench.drain()


async def test_a_reserved_slot_waits_for_urgent_work() -> None:
    sched = Scheduler("asr", 2, reserved=1, clock=Clock())
    bench = Bench(sched)
    bench.submit("spec1", P.SPECULATIVE)
    bench.submit("spec2", P.SPECULATIVE)
    await settle()
    assert bench.order == ["spec1"]  # the second slot is kept free...
    bench.submit("final", P.TURN)
    await settle()
    assert bench.order == ["spec1", "final"]  # ...for the student waiting: no queueing
    await bench.finish("final")
    assert bench.order == ["spec1", "final"]  # still kept free of speculation
    await bench.finish("spec1")
    assert bench.order == ["spec1", "final", "spec2"]
    await bench.drain()


async def test_promoted_work_takes_a_reserved_slot_at_once() -> None:
    sched = Scheduler("asr", 2, reserved=1, clock=Clock())
    bench = Bench(sched)
    bench.submit("spec1", P.SPECULATIVE)
    waiting = Request(P.SPECULATIVE)
    bench.submit("spec2", waiting)
    await settle()
    assert bench.order == ["spec1"]
    waiting.promote(P.TURN)  # the student finished: this transcription is the final one
    await settle()
    assert bench.order == ["spec1", "spec2"]
    await bench.drain()


async def test_fifo_reserves_nothing() -> None:
    sched = Scheduler("asr", 2, policy="fifo", reserved=1, clock=Clock())
    bench = Bench(sched)
    bench.submit("spec1", P.SPECULATIVE)
    bench.submit("spec2", P.SPECULATIVE)
    await settle()
    assert bench.order == ["spec1", "spec2"]
    await bench.drain()


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        Scheduler("asr", 0)
    with pytest.raises(ValueError):
        Scheduler("asr", 1, reserved=1)  # nothing left for speculation or scoring
