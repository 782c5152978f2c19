"""The worker's health, gathered once for both places that report it: `GET /healthz` and the
RunPod `health` job. Each keeps the shape its clients know; the facts come from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.service.context import WorkerContext


@dataclass(frozen=True)
class Health:
    profile: str
    models_ready: bool
    models: dict[str, object]
    writer: dict[str, Any] | None  # None: the database never opened
    dialect: str | None
    live: int
    max_sessions: int
    accepting: bool

    @property
    def writer_healthy(self) -> bool:
        return bool(self.writer and self.writer["healthy"])

    @property
    def ok(self) -> bool:
        """Everything a job needs: models warm, the writer healthy, sessions accepted."""
        return self.models_ready and self.writer_healthy and self.accepting


def health(ctx: WorkerContext) -> Health:
    database = ctx.database
    return Health(
        profile=ctx.config.profile,
        models_ready=ctx.models.ready,
        models=ctx.models.describe(),
        writer=database.writer.stats() if database is not None else None,
        dialect=database.engine.dialect.name if database is not None else None,
        live=len(ctx.live),
        max_sessions=ctx.live.max_sessions,
        accepting=ctx.live.accepting,
    )
