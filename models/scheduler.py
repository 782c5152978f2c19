"""One scheduler per model: who gets the model next when several sessions want it at once.

Every backend serves a few requests at a time (`slots`: one for a single-thread executor, the
simulated GPU's parallelism for `gpu-sim`). When more arrive, they wait here and are started:
- by **priority** (`Priority`): the final transcription a student is waiting for before a
  speculative one, the first sentence of a reply before later ones, scoring last;
- **ageing**: every `age_after_s` a request has waited counts as one priority level better,
  so a busy worker still scores answers and makes its later sentences;
- **fairness**: among equals, the session served least recently goes first, then arrival order;
- **dropping**: a request whose caller has given up (its task cancelled: a speculative
  transcription the answer outgrew, a reply cut by a barge-in) leaves the queue before it starts;
- **a bound**: at most `max_queue` waiting; past it the worst waiter (or the newcomer, if it is
  the worst) gets `QueueFull`, a typed `ModelError` its caller already handles;
- **reserved slots**: `reserved` of the slots serve only urgent work (`URGENT`: a student is
  waiting for it), so a final transcription never queues behind a batch of speculation that
  already holds the model (a GPU cannot stop a batch it has started).
`policy="fifo"` keeps arrival order only (the behaviour before this scheduler, for comparison).

Priority and session travel in context variables (`at_priority`, `for_session`), so the
models' protocols stay as they are: whoever calls a model from a turn, a reply or the scorer
sets what the call is for, and tasks it starts inherit it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from models.base import ModelError

Policy = Literal["priority", "fifo"]
SESSIONS_REMEMBERED = 4096  # when each last started: enough for fairness among live sessions


class Priority(enum.IntEnum):
    TURN = 0  # a student is waiting for this: the final transcription of an answer
    FIRST_SPEECH = 1  # the first sentence of a reply (and its LLM text)
    SPEECH = 2  # later sentences of a reply
    SPECULATIVE = 3  # work that may be thrown away: a transcription during a pause
    PREPARE = 4  # phrases made ahead of need
    SCORING = 5  # evaluation of an answer, off the voice path


URGENT = Priority.FIRST_SPEECH  # this or better may use a reserved slot


class QueueFull(ModelError):
    """The model's queue is full: this request was not started."""


@dataclass
class Request:
    """What model calls made under it are for. Mutable: work started as speculation becomes
    turn-critical once the student has finished (`promote`), even while it waits."""

    priority: Priority
    # Schedulers this request waits in: a promotion may let it into a reserved slot now.
    waiting_in: list[Scheduler] = field(default_factory=list, repr=False, compare=False)

    def promote(self, priority: Priority) -> None:
        if priority < self.priority:
            self.priority = priority
            for scheduler in list(self.waiting_in):
                scheduler._grant()


_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "model_request", default=None
)
_session: contextvars.ContextVar[str] = contextvars.ContextVar("model_session", default="")


@contextlib.contextmanager
def at_priority(priority: Priority | Request) -> Iterator[Request]:
    """Model calls made inside (and in tasks started inside) are for `priority`."""
    req = priority if isinstance(priority, Request) else Request(priority)
    token = _request.set(req)
    try:
        yield req
    finally:
        _request.reset(token)


def for_session(key: str) -> None:
    """The current task and the tasks it starts work for session `key` (fairness)."""
    _session.set(key)


def current_request() -> Request:
    return _request.get() or Request(Priority.TURN)


def current_session() -> str:
    return _session.get()


def current_priority() -> Priority:
    return current_request().priority


@dataclass(eq=False)
class _Waiter:
    seq: int
    request: Request
    session: str
    since: float
    future: asyncio.Future[None]


@dataclass
class SchedulerStats:
    """Waits (seconds) of started requests, by priority name; what the benchmark reports."""

    waits: dict[str, list[float]] = field(default_factory=dict)
    dropped: int = 0  # cancelled while queued
    refused: int = 0  # QueueFull
    max_depth: int = 0

    def record(self, priority: Priority, wait_s: float) -> None:
        self.waits.setdefault(priority.name.lower(), []).append(wait_s)


class Scheduler:
    def __init__(
        self,
        name: str,
        slots: int = 1,
        *,
        policy: Policy = "priority",
        max_queue: int = 256,
        age_after_s: float = 2.0,
        reserved: int = 0,
        clock: Callable[[], float] = time.monotonic,
        on_wait: Callable[[str, Priority, float], None] | None = None,
    ):
        if slots < 1 or max_queue < 1 or age_after_s <= 0:
            raise ValueError("slots and max_queue must be >= 1, age_after_s > 0")
        if not 0 <= reserved < slots:
            raise ValueError("reserved slots must leave at least one for any work")
        self.name, self.slots, self.policy = name, slots, policy
        self.reserved = reserved if policy == "priority" else 0
        self.max_queue, self.age_after_s, self._clock = max_queue, age_after_s, clock
        self._on_wait = on_wait
        self._busy = 0
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()
        self._served: dict[str, int] = {}  # session -> the serve counter when it last started
        self._serves = itertools.count(1)
        self.stats = SchedulerStats()

    @property
    def depth(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the model's slots for the block (the request's priority and session
        from the context)."""
        await self.acquire(current_request(), _session.get())
        try:
            yield
        finally:
            self.release()

    async def acquire(self, request: Request | Priority, session: str = "") -> None:
        if not isinstance(request, Request):
            request = Request(request)
        now = self._clock()
        if not self._waiting and self._busy < self._open_to(request.priority):
            self._start(request.priority, session, 0.0)
            return
        waiter = _Waiter(next(self._seq), request, session, now, _new_future())
        self._admit(waiter)
        self._grant()  # a reserved slot may be free for it
        request.waiting_in.append(self)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release()  # granted and cancelled in the same step: hand the slot on
            else:
                self._forget(waiter)
                self.stats.dropped += 1
            raise
        finally:
            with contextlib.suppress(ValueError):
                request.waiting_in.remove(self)

    def release(self) -> None:
        self._busy -= 1
        self._grant()

    # --- inside ------------------------------------------------------------------------------

    def _admit(self, waiter: _Waiter) -> None:
        if len(self._waiting) >= self.max_queue:
            worst = max(self._waiting, key=self._rank)
            if self.policy == "fifo" or self._rank(worst) <= self._rank(waiter):
                self.stats.refused += 1
                raise QueueFull(f"{self.name}: {len(self._waiting)} requests already waiting")
            self._forget(worst)
            self.stats.refused += 1
            worst.future.set_exception(
                QueueFull(f"{self.name}: dropped for more urgent work ({self.depth} waiting)")
            )
        self._waiting.append(waiter)
        self.stats.max_depth = max(self.stats.max_depth, len(self._waiting))

    def _forget(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._waiting.remove(waiter)

    def _rank(self, w: _Waiter) -> tuple[float, ...]:
        """Smaller starts first."""
        if self.policy == "fifo":
            return (w.seq,)
        return (self._effective(w), self._served.get(w.session, 0), w.seq)

    def _effective(self, w: _Waiter) -> int:
        """The waiter's priority, one level better for every `age_after_s` it has waited."""
        aged = int((self._clock() - w.since) / self.age_after_s)
        return max(int(Priority.TURN), int(w.request.priority) - aged)

    def _open_to(self, priority: Priority | int) -> int:
        """How many slots work of this (effective) priority may fill."""
        return self.slots if priority <= URGENT else self.slots - self.reserved

    def _grant(self) -> None:
        while self._busy < self.slots and self._waiting:
            best = heapq.nsmallest(1, self._waiting, key=self._rank)[0]
            if best.future.done():  # cancelled, or dropped for the bound
                self._waiting.remove(best)
                continue
            if self._busy >= self._open_to(self._effective(best)):
                return  # only reserved slots are free, and nothing urgent waits
            self._waiting.remove(best)
            self._start(best.request.priority, best.session, self._clock() - best.since)
            best.future.set_result(None)

    def _start(self, priority: Priority, session: str, waited_s: float) -> None:
        self._busy += 1
        if session:
            self._served[session] = next(self._serves)
            if len(self._served) > SESSIONS_REMEMBERED:  # ended sessions: forget the oldest
                for old in sorted(self._served, key=self._served.__getitem__)[
                    : len(self._served) // 2
                ]:
                    del self._served[old]
        self.stats.record(priority, waited_s)
        if self._on_wait is not None:
            self._on_wait(self.name, priority, waited_s)


def _new_future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()
