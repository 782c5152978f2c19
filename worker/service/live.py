"""The sessions this process holds: admission, reconnects, a live feed for monitors, shutdown.

A session lives from its first connection until it finishes, whether or not a student is
connected at the moment: a dropped connection leaves it waiting for the same token to come back
within the grace period. Each session runs as one task owned here; `shutdown()` stops them all
(every student gets a final event and a result) within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from core.config import LimitsConfig
from core.errors import CodedError
from core.vocabulary import WireErrorCode
from worker.voice.metrics import LIVE_SESSIONS

if TYPE_CHECKING:
    from worker.session.viva import VivaSession

log = logging.getLogger(__name__)
WATCH_QUEUE = 256  # a monitor that falls this far behind loses the oldest updates
GUESTS_REMEMBERED = 4096  # guest codes known as such (reserved slots stay closed to them)


class Refused(CodedError):
    """A session this process cannot run now; a WebSocket is told with `code` (one of the
    protocol's codes), an HTTP request with `status` (503: try again, or another worker)."""

    def __init__(self, code: WireErrorCode, message: str, status: int = 503):
        super().__init__(code, message, status)
        self.code: WireErrorCode = code


class LiveSessions:
    """`max_sessions` slots. Guest (practice) sessions are held to fewer: they never take the
    last `reserved` slots, and a guest session holds its slot from its creation until it
    connects or `pending_s` passes, at most `pending_max` of them at once (a stranger cannot
    fill the worker with sessions nobody joins)."""

    def __init__(
        self,
        max_sessions: int,
        limits: LimitsConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        limits = limits or LimitsConfig()
        self.max_sessions = max_sessions
        self.reserved = limits.reserved_sessions
        self.pending_max = limits.practice_pending_max
        self.pending_s = limits.practice_pending_seconds
        self.accepting = True
        self._clock = clock
        self._sessions: dict[str, VivaSession] = {}
        self._opening: set[str] = set()
        self._pending: dict[str, float] = {}  # guest sessions not connected yet -> expiry
        self._guests: OrderedDict[str, None] = OrderedDict()  # recent guest session codes
        self._claims = itertools.count()
        # Called when a session's task is over, before its slot is given back (the worker
        # context releases the session's ownership there, after its rows are committed).
        self.on_gone: Callable[[VivaSession], Awaitable[None]] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._watchers: set[asyncio.Queue[dict[str, Any]]] = set()

    def __len__(self) -> int:
        self._expire()
        return len(self._sessions) + len(self._opening) + len(self._pending)

    def _expire(self) -> None:
        now = self._clock()
        for code in [c for c, expiry in self._pending.items() if expiry <= now]:
            del self._pending[code]

    def __contains__(self, code: str) -> bool:
        return code in self._sessions

    def codes(self) -> list[str]:
        return list(self._sessions)

    def get(self, code: str) -> VivaSession | None:
        return self._sessions.get(code)

    def summaries(self) -> list[dict[str, Any]]:
        return [s.summary() for s in self._sessions.values()]

    def check_capacity(self, guest: bool = False) -> None:
        if not self.accepting:
            raise Refused("at_capacity", "this worker is shutting down")
        if len(self) >= self.max_sessions:
            raise Refused("at_capacity", f"this worker holds {self.max_sessions} sessions")
        if guest and len(self) >= self.max_sessions - self.reserved:
            raise Refused("at_capacity", "the remaining sessions are kept for the exam platform")
        if guest and len(self._pending) >= self.pending_max:
            raise Refused("at_capacity", "too many practice sessions are waiting to start")

    def claim_guest(self) -> str:
        """Take a slot for a guest session about to be created (raises Refused): taken here,
        before the database is awaited, so concurrent requests cannot all pass the check. It
        is held until `name_guest` gives it its session (or `release`), then until the session
        connects or `pending_s` passes."""
        self.check_capacity(guest=True)
        claim = f"claim-{next(self._claims)}"
        self._pending[claim] = self._clock() + self.pending_s
        return claim

    def name_guest(self, claim: str, code: str) -> None:
        self._pending[code] = self._pending.pop(claim, self._clock() + self.pending_s)
        self._guests[code] = None
        while len(self._guests) > GUESTS_REMEMBERED:
            self._guests.popitem(last=False)

    def release(self, claim: str) -> None:
        self._pending.pop(claim, None)

    async def open(self, code: str, make: Callable[[], Awaitable[VivaSession]]) -> VivaSession:
        """The live session for `code`: the one waiting for its student to come back, or a new
        one made by `make()` and started. Raises Refused (busy, full, shutting down)."""
        existing = self._sessions.get(code)
        if existing is not None:
            if existing.connected or existing.ending:
                raise Refused("session_busy", "another connection holds this session")
            return existing
        if code in self._opening:
            raise Refused("session_busy", "another connection is opening this session")
        self._expire()
        if self._pending.pop(code, None) is None:  # a held guest slot becomes its live slot
            self.check_capacity(guest=code in self._guests)
        self._opening.add(code)
        try:
            session = await make()
        finally:
            self._opening.discard(code)
        session.on_change = self.publish
        self._sessions[code] = session
        LIVE_SESSIONS.set(len(self._sessions))
        self._tasks[code] = asyncio.create_task(self._run(code, session), name=f"session {code}")
        return session

    async def _run(self, code: str, session: VivaSession) -> None:
        try:
            await session.run()
        except Exception:
            log.exception("session %s failed", code)
        finally:
            if self.on_gone is not None:
                try:
                    await self.on_gone(session)
                except Exception:
                    log.exception("session %s: releasing it failed", code)
            self._sessions.pop(code, None)
            self._tasks.pop(code, None)
            LIVE_SESSIONS.set(len(self._sessions))
            self.publish({"session_code": code, "state": "gone"})

    def abandon(self, session_ids: set[int]) -> None:
        """Stop serving these sessions at once, writing nothing: another worker owns them now
        (this worker lost its lease while the database was away)."""
        for code, session in list(self._sessions.items()):
            if session.r.session_id in session_ids:
                session.abandoned = True
                task = self._tasks.get(code)
                if task is not None:
                    task.cancel()

    # --- monitors ----------------------------------------------------------------------------

    def publish(self, update: dict[str, Any]) -> None:
        for queue in self._watchers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(update)

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """Updates (a session's summary, or `{"state": "gone"}`) as they happen."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(WATCH_QUEUE)
        self._watchers.add(queue)
        try:
            yield queue
        finally:
            self._watchers.discard(queue)

    # --- shutdown ----------------------------------------------------------------------------

    async def shutdown(self, timeout_s: float) -> None:
        """Stop taking sessions, end every live one (final events, results written), and wait
        at most `timeout_s`; sessions still running then are cancelled."""
        self.accepting = False
        for session in list(self._sessions.values()):
            session.stop("server_shutdown")
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            log.warning("%s did not end in %.0f s; cancelling it", task.get_name(), timeout_s)
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
