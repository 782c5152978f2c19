"""The worker context: everything a running worker shares, in one object that the HTTP handlers
and the RunPod jobs take.

- `config`: the one configuration. It starts as config.yaml + profile + environment; when the
  database opens, the `configuration` table's live settings are applied and the result replaces
  it, so from then on every reader sees the live settings (nothing keeps the earlier copy).
- `database`: engine, sessions and the write-behind writer; None until it opens.
- `models`: the model hub and the prompt cache, loaded in the background (`worker.service.warmup`).
- `live`: the sessions this process holds; `loop_lag`: the event-loop lag probe.
- `public_ws_base`: where students reach this worker from outside, when that is known.
- `admission`: per-client limits; `rejected_tokens`: the throttled audit of refused tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.config import Config
from db import ops
from worker.service.admission import Admission
from worker.service.live import LiveSessions
from worker.service.resources import Database, open_database
from worker.service.secrets import with_secrets
from worker.service.urls import public_ws_base
from worker.service.warmup import Models
from worker.voice.metrics import LoopLag
from worker.voice.pacing import AuditThrottle

if TYPE_CHECKING:
    from worker.session.viva import VivaSession

RELEASE_FLUSH_S = 10.0  # a session's last rows get this long to commit before it is let go


@dataclass
class WorkerContext:
    config: Config
    live: LiveSessions
    models: Models
    admission: Admission
    loop_lag: LoopLag = field(default_factory=LoopLag)
    database: Database | None = None
    public_ws_base: str | None = None
    rejected_tokens: AuditThrottle = field(init=False)

    def __post_init__(self) -> None:
        # One `token.rejected` row per client address per window, with the count.
        window = self.config.limits.audit_window_seconds
        self.rejected_tokens = AuditThrottle(window, self._audit_rejected)

    def _audit_rejected(self, client: str, details: dict[str, Any]) -> None:
        if self.database is None:
            return
        code = str(details.get("session_code", ""))
        row = ops.audit(
            "token.rejected", code, status="failure", details=details, ip_address=client
        )
        self.database.writer.enqueue(row)

    @classmethod
    def create(cls, config: Config, env: Mapping[str, str]) -> WorkerContext:
        """Raises ConfigError when a public worker lacks its own secrets."""
        config = with_secrets(config)
        loop_lag = LoopLag()
        return cls(
            config=config,
            live=LiveSessions(config.server.max_sessions, config.limits),
            admission=Admission(config.limits),
            # Loop lag is judged from readiness on: loading the models stalls the loop at start.
            models=Models(on_ready=loop_lag.reset),
            loop_lag=loop_lag,
            public_ws_base=public_ws_base(config.server, env),
        )

    @asynccontextmanager
    async def database_open(self) -> AsyncIterator[Database]:
        """Open the database (live settings applied to `config` here), close it on the way out."""
        async with open_database(self.config) as (database, config):
            self.config, self.database = config, database
            if database.lease is not None:
                database.lease.on_lost = self.live.abandon
                self.live.on_gone = self._release
            yield database

    async def _release(self, session: VivaSession) -> None:
        """A session's task is over: its rows committed (bounded), then its lock given back,
        so the next worker to load it reads where it stood."""
        database = self.db()
        if database.lease is None:
            return
        if not session.abandoned:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RELEASE_FLUSH_S):
                    await database.writer.flush(session.r.session_id)
        await database.lease.disown(session.r.session_id)

    def db(self) -> Database:
        """The open database; callers reach here only after start-up opened it."""
        if self.database is None:
            raise RuntimeError("the database is not open")
        return self.database
