"""The sessions HTTP API against a real database: create, read, list, and typed errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.db.helpers import AUTH, server_config
from worker.server import build_app


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
    resp = await client.get("/v1/sessions?status=pending", headers=AUTH)
    codes = [s["session_code"] for s in (await resp.json())["sessions"]]
    assert created["session_code"] in codes


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
    resp = await client.post("/v1/sessions", data=b"{not json", headers=AUTH)
    assert resp.status == 400
    resp = await client.get("/v1/sessions/VIVA-XXXXXX", headers=AUTH)
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await client.get("/v1/sessions?status=weird", headers=AUTH)
    assert resp.status == 400
