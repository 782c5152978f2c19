"""The hostile-client suite: strangers and clumsy clients against a worker (fake models, real
SQLite and PostgreSQL). Each test ends by checking the worker is still healthy and that every
session the API accepted is in the database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from db.queries.configuration import set_setting
from db.tables import Session
from tests.db.helpers import AUTH, server_config, wait_ready
from worker.http.server import build_app, runner_args

LAW = {"college_type": "law", "scenario_id": "law_of_contract"}
JSON = {"Content-Type": "application/json"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/hostile/" in str(item.fspath):
            item.add_marker(pytest.mark.hostile)


def ws_path(ws_url: str) -> str:
    """The path and query of a `ws_url`, for the test client (which knows the host)."""
    return "/" + ws_url.split("://", 1)[1].split("/", 1)[1]


@dataclass
class Worker:
    client: TestClient
    db_session: Any
    accepted: list[str] = field(default_factory=list)  # session codes answered 201

    async def create(self, student_id: str, **extra: Any) -> dict[str, Any]:
        resp = await self.client.post(
            "/v1/sessions", json={**LAW, "student_id": student_id, **extra}, headers=AUTH
        )
        body = await resp.json()
        assert resp.status == 201, body
        self.accepted.append(body["session_code"])
        return dict(body)

    def note(self, status: int, body: dict[str, Any]) -> None:
        if status == 201:
            self.accepted.append(body["session_code"])

    async def check(self) -> None:
        """Healthy, still taking keyed sessions, and every accepted session stored."""
        health = await self.client.get("/healthz")
        assert health.status == 200, await health.text()
        await self.create(f"after-{len(self.accepted)}")
        async with self.db_session() as db:
            rows = await db.execute(
                select(Session.session_code).where(Session.session_code.in_(self.accepted))
            )
            stored = {r[0] for r in rows}
        assert stored == set(self.accepted)


@pytest.fixture
def serve(db_url: str, tmp_path: Path, db_session: Any) -> Callable[..., Any]:
    """`async with serve(live={...}, **settings) as worker`: a worker on its own port (the real
    AppRunner arguments: keep-alive/header timeout, access log) with extra dotted settings and
    live settings (configuration rows, which win over the file)."""

    @asynccontextmanager
    async def start(live: dict[str, Any] | None = None, **settings: Any) -> AsyncIterator[Worker]:
        async with db_session() as db, db.begin():  # rows of the configuration table
            for key, value in (live or {}).items():
                await set_setting(db, key, value)
        cfg = server_config(db_url, str(tmp_path / f"journal{len(started)}"), **settings)
        started.append(cfg)
        server = TestServer(build_app(cfg))
        await server.start_server(**runner_args(cfg))  # TestClient then uses it as started
        async with TestClient(server) as client:
            await wait_ready(client)
            worker = Worker(client, db_session)
            yield worker
            await worker.check()

    started: list[Any] = []
    return start
