"""Node ids that cannot collide, and sessions that have one owner: each worker on PostgreSQL
holds an advisory lock on its node id for its whole life, and one on each session it serves, on a
connection of its own (the lease), and gives them back at shutdown.

Every row id embeds the writer's 10-bit node id (`db/ids.py`) and writes are upserts on those
ids, so two live workers with one node id could overwrite each other's rows. A worker without a
configured `server.node_id` takes the first free id (from a random starting point); one with a
configured id takes exactly that one or refuses to start (`NodeIdTaken`). A worker that dies
loses its lock with its connection, so the id becomes free by itself. The lease connection is
checked every `CHECK_S`; if it broke (a database restart), the worker takes a lock again, the
same id when still free, else another one, and switches its id generator to it.
SQLite has one writer process: the configured id (or a random one) is used as before.

Sessions: `own(session_id)` takes a lock keyed by the session's id (the bigint lock space; node
locks use the two-int space with `LOCK_CLASS`, whose bigint equivalents lie far above any id
this century makes), `disown` gives it back. A worker that dies loses them with its connection.
If the lease connection breaks, the sessions are taken again with it; those another worker took
meanwhile are reported to `on_lost`, whose owner must stop serving them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from db.ids import MAX_NODE, set_node_id

log = logging.getLogger(__name__)
LOCK_CLASS = 0x56495641  # "VIVA": advisory locks (LOCK_CLASS, node id) in the two-int space
# The lease connection is checked this often, and re-taken this soon after it broke: the
# sooner, the shorter the time in which another worker could take one of its sessions.
CHECK_S = 1.0
RETAKE_S = 0.5
APP_NAME = "viva-node-{}"  # the lease connection's application_name: who holds what, in SQL


class LeaseLost(RuntimeError):
    """The lease connection is gone (a database restart): nothing can be owned until it is
    taken again."""


class NodeIdTaken(RuntimeError):
    """The configured node id is held by another live worker on this database."""


class NodeLease:
    def __init__(self, engine: AsyncEngine, wanted: int | None):
        self.engine, self.wanted = engine, wanted
        self.node_id: int | None = None
        self._conn: AsyncConnection | None = None
        self._watch: asyncio.Task[None] | None = None
        self._use = asyncio.Lock()  # one statement at a time on the lease connection
        self._broken = asyncio.Event()
        self._owned: set[int] = set()
        self.on_lost: Callable[[set[int]], None] = lambda _ids: None

    async def acquire(self) -> int:
        """Take a node id (raises NodeIdTaken for a configured one that is held)."""
        self._conn = await self.engine.connect()
        try:
            self.node_id = await self._take(self._conn, self.wanted)
        except BaseException:
            await self._conn.close()
            self._conn = None
            raise
        set_node_id(self.node_id)
        self._watch = asyncio.create_task(self._keep(), name="node lease")
        return self.node_id

    async def _take(self, conn: AsyncConnection, wanted: int | None) -> int:
        order = [wanted] if wanted is not None else _spread(random.randrange(MAX_NODE + 1))
        for node in order:
            if await _try_lock(conn, LOCK_CLASS, node):
                # Named after its node, so a monitor anywhere can tell who holds a session.
                await conn.execute(text(f"SET application_name = '{APP_NAME.format(node)}'"))
                await conn.commit()
                return node
        if wanted is not None:
            raise NodeIdTaken(
                f"node id {wanted} is held by another live worker on this database: give each"
                " worker its own VIVA__SERVER__NODE_ID, or leave it unset to get a free one"
            )
        raise NodeIdTaken(f"all {MAX_NODE + 1} node ids are held by live workers")

    async def own(self, session_id: int) -> bool:
        """Take the session's lock: False when another live worker holds it; LeaseLost while
        the lease connection is broken."""
        async with self._use:
            if self._conn is None:
                raise LeaseLost("the database connection that holds this worker's locks is down")
            try:
                owned = await _try_lock(self._conn, session_id)
            except Exception as exc:
                self._broken.set()  # the keeper re-takes the lease now
                raise LeaseLost(f"the lease connection broke: {exc}") from exc
        if owned:
            self._owned.add(session_id)
        return owned

    async def disown(self, session_id: int) -> None:
        self._owned.discard(session_id)
        async with self._use:
            if self._conn is None:
                return
            with contextlib.suppress(Exception):  # a lost connection has let it go anyway
                await self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": session_id})
                await self._conn.commit()

    async def _keep(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_S if self._conn is not None else RETAKE_S):
                    await self._broken.wait()
            self._broken.clear()
            if self._conn is not None:
                try:
                    async with self._use:
                        await self._conn.execute(text("SELECT 1"))
                        await self._conn.commit()
                    continue
                except Exception as exc:  # the connection (and with it the locks) is gone
                    log.warning("node id %s: lease connection lost (%s)", self.node_id, exc)
            async with self._use:
                try:
                    await self._retake()
                except Exception as exc:  # the database flapped again: retried in RETAKE_S
                    log.warning("node id %s: lease not taken again yet (%s)", self.node_id, exc)

    async def _retake(self) -> None:
        with contextlib.suppress(Exception):
            if self._conn is not None:
                await self._conn.close()
        self._conn = None
        try:
            conn = await self.engine.connect()
        except Exception as exc:
            log.debug("node id %s: database still unreachable (%s)", self.node_id, exc)
            return  # tried again in RETAKE_S; ids made meanwhile are the old node's
        try:
            try:
                node = await self._take(conn, self.node_id)
            except NodeIdTaken:
                node = await self._take(conn, None)
                log.error(
                    "node id %s was taken while the lease was lost; now %s", self.node_id, node
                )
                set_node_id(node)
            lost = {s for s in self._owned if not await _try_lock(conn, s)}
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        self._owned -= lost
        self._conn, self.node_id = conn, node
        log.info("node id %d: lease taken again, %d sessions kept", node, len(self._owned))
        if lost:
            log.error("sessions %s were taken by another worker while the lease was lost", lost)
            self.on_lost(lost)

    async def release(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing the connection frees the lock anyway
                await self._conn.execute(
                    text("SELECT pg_advisory_unlock(:c, :n)"), {"c": LOCK_CLASS, "n": self.node_id}
                )
                await self._conn.commit()
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


def _spread(start: int) -> list[int]:
    return [(start + i) % (MAX_NODE + 1) for i in range(MAX_NODE + 1)]


async def _try_lock(conn: AsyncConnection, *key: int) -> bool:
    """pg_try_advisory_lock on one bigint key (a session) or two ints (LOCK_CLASS, a node)."""
    args = ", ".join(f":k{i}" for i in range(len(key)))
    result = await conn.execute(
        text(f"SELECT pg_try_advisory_lock({args})"), {f"k{i}": k for i, k in enumerate(key)}
    )
    await conn.commit()  # the lock is session-level: it outlives the transaction
    return bool(result.scalar_one())


async def lease_node_id(engine: AsyncEngine, wanted: int | None) -> NodeLease | None:
    """This worker's lease on PostgreSQL (None on SQLite, where `wanted` is simply used)."""
    if engine.dialect.name != "postgresql":
        set_node_id(wanted)
        return None
    lease = NodeLease(engine, wanted)
    node = await lease.acquire()
    log.info("node id %d leased from PostgreSQL", node)
    return lease


async def session_owners(db: AsyncSession) -> dict[int, int]:
    """Session id -> the node id of the live worker that serves it (PostgreSQL only): read from
    the advisory locks held on the workers' lease connections."""
    rows = await db.execute(
        text(
            "SELECT (l.classid::bigint << 32) | l.objid::bigint, a.application_name"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            f" AND a.application_name LIKE '{APP_NAME.format('%')}'"
        )
    )
    owners = {}
    for key, name in rows:
        with contextlib.suppress(ValueError):
            owners[int(key)] = int(name.rsplit("-", 1)[1])
    return owners
