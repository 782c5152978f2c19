"""The sessions HTTP API against a real database: create, read, list, and typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from tests.db.helpers import AUTH, TOKEN_SECRET, server_config, wait_ready
from worker.http.server import build_app
from worker.service.tokens import issue_token


@pytest.fixture
async def client(db_url: str, tmp_path) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    cfg = server_config(db_url, str(tmp_path / "journal"), **{"server.max_sessions": 2})
    async with TestClient(TestServer(build_app(cfg))) as c:
        yield c


async def test_create_read_list(client: TestClient) -> None:
    body = {
        "student_id": "s-001",
        "full_name": "Ada",
        "college_type": "law",
        "scenario_id": "law_of_contract",
    }
    resp = await client.post("/v1/sessions", json=body, headers=AUTH)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["session_code"].startswith("VIVA-") and created["total_questions"] == 12
    assert f"/v1/sessions/{created['session_code']}/stream?token=" in created["ws_url"]
    resp = await client.get(f"/v1/sessions/{created['session_code']}", headers=AUTH)
    one = await resp.json()
    assert one["status"] == "pending" and one["answers"] == [] and one["result"] is None
    assert one["student"] == "Ada"
    resp = await client.get("/v1/sessions?status=pending", headers=AUTH)
    listed = {s["session_code"]: s for s in (await resp.json())["sessions"]}
    assert listed[created["session_code"]]["student"] == "Ada"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"student_id": "x", "college_type": "dance", "scenario_id": "a"}, 400, "invalid_request"),
        (
            {"student_id": "bad id!", "college_type": "law", "scenario_id": "a"},
            400,
            "invalid_request",
        ),
        (
            {"student_id": "x", "college_type": "law", "scenario_id": "nope"},
            404,
            "unknown_scenario",
        ),
    ],
)
async def test_bad_requests(client: TestClient, body: dict, status: int, code: str) -> None:
    resp = await client.post("/v1/sessions", json=body, headers=AUTH)
    assert resp.status == status
    assert (await resp.json())["error"]["code"] == code


async def test_auth_and_not_found(client: TestClient) -> None:
    assert (await client.get("/v1/sessions")).status == 401
    json_type = {**AUTH, "Content-Type": "application/json"}
    resp = await client.post("/v1/sessions", data=b"{not json", headers=json_type)
    assert resp.status == 400
    resp = await client.post("/v1/sessions", data=b"{not json", headers=AUTH)
    assert resp.status == 415
    resp = await client.get("/v1/sessions/VIVA-XXXXXX", headers=AUTH)
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await client.get("/v1/sessions?status=weird", headers=AUTH)
    assert resp.status == 400


async def test_concurrent_creates_all_succeed(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SQLite once refused read-then-write transactions under contention ("database is
    locked"): 27 of 100 concurrent creates failed before transactions began IMMEDIATE."""
    cfg = server_config(db_url, str(tmp_path / "journal"), **{"server.max_sessions": 500})
    async with TestClient(TestServer(build_app(cfg))) as c:
        body = {"college_type": "law", "scenario_id": "law_of_contract"}
        responses = await asyncio.gather(
            *(
                c.post("/v1/sessions", json={**body, "student_id": f"s{i}"}, headers=AUTH)
                for i in range(60)
            )
        )
        assert sorted(r.status for r in responses) == [201] * 60
        practice = {"name": "Guest", "college_type": "law", "scenario_id": "law_of_contract"}
        resp = await c.post("/v1/practice", json=practice)
        assert resp.status == 201 and (await resp.json())["token"]
        catalog = await (await c.get("/v1/catalog")).json()
        assert catalog["practice"] is True
        law = next(t for t in catalog["college_types"] if t["id"] == "law")
        assert any(s["id"] == "law_of_contract" for s in law["scenarios"])


async def test_practice_can_be_turned_off(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = server_config(db_url, str(tmp_path / "journal"), **{"server.practice_sessions": False})
    async with TestClient(TestServer(build_app(cfg))) as c:
        practice = {"name": "Guest", "college_type": "law", "scenario_id": "law_of_contract"}
        resp = await c.post("/v1/practice", json=practice)
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "practice_disabled"
        assert (await (await c.get("/v1/catalog")).json())["practice"] is False


async def test_an_unreachable_database_is_a_503_not_a_500(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL down (here: nothing listens on the port): creating a session answers 503
    `database_unavailable` with Retry-After, and opening a session that is not live refuses the
    WebSocket with the same code and close 1013 (try again later)."""
    cfg = server_config(
        "postgresql+asyncpg://postgres@127.0.0.1:9/test",
        str(tmp_path / "journal"),
        **{"database.on_unreachable": "continue", "database.connect_attempts": 1},
    )
    async with TestClient(TestServer(build_app(cfg))) as c:
        await wait_ready(c)
        body = {"student_id": "s-1", "college_type": "law", "scenario_id": "law_of_contract"}
        resp = await c.post("/v1/sessions", json=body, headers=AUTH)
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "database_unavailable"
        assert int(resp.headers["Retry-After"]) > 0
        code = "VIVA-ABCDEF"
        token = issue_token(code, TOKEN_SECRET, ttl_s=600)
        async with c.ws_connect(f"/v1/sessions/{code}/stream?token={token}") as ws:
            event = await ws.receive_json(timeout=30)
            assert event["type"] == "error" and event["code"] == "database_unavailable"
            assert (await ws.receive(timeout=30)).type == WSMsgType.CLOSE
            assert ws.close_code == 1013


async def test_an_unexpected_fault_is_a_typed_500(client: TestClient, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """A bug in a handler still answers in the API's error shape, and the traceback is logged."""

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("worker.http.api.get_by_code", broken)
    resp = await client.get("/v1/sessions/VIVA-ABCDEF", headers=AUTH)
    assert resp.status == 500
    assert (await resp.json())["error"]["code"] == "internal_error"
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)
