"""Process-lifetime resources: the database engine, live settings and the write-behind writer.

`open_database` is the one place that starts and stops them, in the order that loses nothing:
connect (retrying as configured), check the schema is at head, lease a node id (PostgreSQL,
`db/nodes.py`), apply live settings, start the writer (which replays its journal); on the way
out, drain the writer, give the node id back, then dispose the engine.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.config import Config
from db.engine import (
    DatabaseUnavailable,
    create_engine,
    ensure_migrated,
    sessionmaker,
    wait_for_database,
)
from db.ids import set_node_id
from db.live_settings import apply_live_settings
from db.nodes import NodeLease, lease_node_id
from db.writer import Writer

log = logging.getLogger(__name__)


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[Any]
    writer: Writer
    lease: NodeLease | None = None  # PostgreSQL: the node id and the sessions this worker owns


@asynccontextmanager
async def open_database(
    config: Config, drain_timeout_s: float = 30.0
) -> AsyncIterator[tuple[Database, Config]]:
    """The open database and `config` with the live settings applied (`config` itself when the
    database is unreachable and `database.on_unreachable` is `continue`)."""
    set_node_id(config.server.node_id)
    engine = create_engine(config.database)
    lease: NodeLease | None = None
    try:
        try:
            await wait_for_database(
                engine, config.database.connect_attempts, config.database.connect_retry_seconds
            )
            await ensure_migrated(engine)
            # NodeIdTaken: a configured id another live worker holds
            lease = await lease_node_id(engine, config.server.node_id)
            async with sessionmaker(engine)() as db:
                config = await apply_live_settings(db, config)
        except DatabaseUnavailable:
            if config.database.on_unreachable == "exit":
                raise
            log.error("database unreachable; starting anyway, the writer's journal holds writes")
            log.warning("node id not leased: %s (give every worker its own)", config.server.node_id)
        writer = Writer(engine, config.writer)
        report = await writer.start()
        if report.corrupt:
            log.error("journal damage found at start-up: %s", "; ".join(report.corrupt))
        try:
            yield Database(engine, sessionmaker(engine), writer, lease), config
        finally:
            if not await writer.close(drain_timeout_s=drain_timeout_s):
                log.error("writer not drained at shutdown; the journal keeps the rest for replay")
    finally:
        if lease is not None:
            await lease.release()
        await engine.dispose()
