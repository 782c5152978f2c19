"""Node ids leased from PostgreSQL: distinct across live workers, exclusive when configured,
free again when a worker goes; two worker processes given one node id never both write."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from core.config import DatabaseConfig
from db.engine import create_engine
from db.ids import MAX_NODE, SEQ_BITS
from db.nodes import NodeIdTaken, NodeLease
from db.tables import Session
from tests.db.helpers import AUTH
from tests.db.test_handler_modes import free_port, wait_for, worker, worker_env

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("empty_db_url", ["postgres"], indirect=True),
]
LAW = {"college_type": "law", "scenario_id": "law_of_contract"}


def node_of(row_id: int) -> int:
    return (row_id >> SEQ_BITS) & MAX_NODE


async def test_leased_node_ids_are_distinct_and_exclusive(db_url: str) -> None:
    engine = create_engine(DatabaseConfig(url=db_url))
    leases = [NodeLease(engine, None) for _ in range(12)]
    try:
        ids = [await lease.acquire() for lease in leases]
        assert len(set(ids)) == 12
        same = NodeLease(engine, ids[0])
        with pytest.raises(NodeIdTaken, match="VIVA__SERVER__NODE_ID"):
            await same.acquire()
        await leases[0].release()  # given back: free for the next worker
        assert await same.acquire() == ids[0]
        await same.release()
    finally:
        for lease in leases[1:]:
            await lease.release()
        await engine.dispose()


async def test_two_workers_with_one_node_id_never_both_write(
    db_url: str, tmp_path: Path, db_session: Any
) -> None:
    port_a, port_b, port_c = free_port(), free_port(), free_port()
    env_a = worker_env(db_url, tmp_path / "a", PORT=str(port_a), VIVA__SERVER__NODE_ID="7")
    env_b = worker_env(db_url, tmp_path / "b", PORT=str(port_b), VIVA__SERVER__NODE_ID="7")
    env_c = worker_env(
        db_url, tmp_path / "c", PORT=str(port_c), VIVA__WRITER__BATCH_INTERVAL_MS="50"
    )
    with worker(["--serve"], env_a, tmp_path / "a.log") as a:
        await wait_for(f"http://127.0.0.1:{port_a}/ping", a)
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port_a}/v1/sessions"
            first = await (
                await http.post(url, json={**LAW, "student_id": "s-a"}, headers=AUTH)
            ).json()
        with worker(["--serve"], env_b, tmp_path / "b.log") as b:
            rc = await asyncio.to_thread(b.popen.wait, 60)
            assert rc == 1, b.tail()
            assert "node id 7 is held by another live worker" in b.tail()
        with worker(["--serve"], env_c, tmp_path / "c.log") as c:  # unset: a free id, not 7
            await wait_for(f"http://127.0.0.1:{port_c}/ping", c)
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{port_c}/v1/sessions"
                resp = await http.post(url, json={**LAW, "student_id": "s-c"}, headers=AUTH)
                third = await resp.json()
    async with db_session() as db:
        rows = {s.session_code: s.id for s in (await db.execute(select(Session))).scalars().all()}
    assert node_of(rows[first["session_code"]]) == 7
    assert node_of(rows[third["session_code"]]) != 7
    assert len(rows) == 2
