"""Hostile HTTP clients: malformed bodies and headers, floods, cross-site posts, slow
connections. Every one answers a typed 4xx (never a 500) and leaves the worker healthy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import WSServerHandshakeError
from sqlalchemy import func, select

from db.tables import AuditLog, User
from tests.db.helpers import API_KEY, AUTH
from tests.hostile.conftest import JSON, LAW, ws_path

Serve = Callable[..., Any]
PRACTICE = {"name": "Guest", **LAW}


async def _code(resp: Any) -> str:
    return str((await resp.json())["error"]["code"])


async def test_deeply_nested_json_is_a_400(serve: Serve) -> None:
    deep = b"[" * 20_000 + b"]" * 20_000  # under the body limit, far over the parser's depth
    async with serve() as w:
        resp = await w.client.post("/v1/practice", data=deep, headers=JSON)
        assert resp.status == 400 and await _code(resp) == "invalid_request"
        resp = await w.client.post("/v1/sessions", data=deep, headers={**AUTH, **JSON})
        assert resp.status == 400 and await _code(resp) == "invalid_request"


async def test_only_json_bodies_are_accepted(serve: Serve) -> None:
    """A cross-site form or text/plain fetch (no CORS preflight) cannot start a session."""
    async with serve() as w:
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            resp = await w.client.post(
                "/v1/practice", data=b'{"name":"x"}', headers={"Content-Type": kind}
            )
            assert resp.status == 415 and await _code(resp) == "unsupported_media_type"
        async with w.db_session() as db:
            guests = select(func.count()).select_from(User).where(User.username.like("guest-%"))
            assert (await db.execute(guests)).scalar_one() == 0


async def test_nul_in_a_static_path_is_a_404(serve: Serve) -> None:
    async with serve() as w:
        for path in ("/static/index.html%00.js", "/static/%2e%2e%2fconfig.yaml", "/static/x%0a"):
            assert (await w.client.get(path)).status == 404
        assert (await w.client.get("/static/app.js")).status == 200


@pytest.mark.parametrize(
    "field,value",
    [("full_name", "Ada\x00Lovelace"), ("email", "ada\x00@example.org"), ("full_name", "A\r\nB")],
)
async def test_control_characters_in_names_are_refused(
    serve: Serve, field: str, value: str
) -> None:
    async with serve() as w:
        body = {**LAW, "student_id": "s-nul", field: value}
        resp = await w.client.post("/v1/sessions", json=body, headers=AUTH)
        assert resp.status == 400 and await _code(resp) == "invalid_request"
        resp = await w.client.post("/v1/practice", json={**PRACTICE, "name": "Guest\x00"})
        assert resp.status == 400


async def test_a_long_user_agent_is_kept_short(serve: Serve) -> None:
    async with serve() as w:
        body = {**LAW, "student_id": "s-ua"}
        headers = {**AUTH, "User-Agent": "x" * 2000}
        resp = await w.client.post("/v1/sessions", json=body, headers=headers)
        assert resp.status == 201
        w.note(201, await resp.json())
        async with w.db_session() as db:
            agents = (await db.execute(select(AuditLog.user_agent))).scalars().all()
        assert agents and all(a is None or len(a) <= 512 for a in agents)


async def test_an_email_that_collides_is_a_409(serve: Serve) -> None:
    async with serve() as w:
        await w.create("s-a", email="same@example.org", full_name="A")
        resp = await w.client.post(
            "/v1/sessions",
            json={**LAW, "student_id": "s-b", "email": "same@example.org"},
            headers=AUTH,
        )
        assert resp.status == 409 and await _code(resp) == "conflict"
        async with w.db_session() as db:
            users = await db.execute(select(User).where(User.username.in_(["s-a", "s-b"])))
            names = {u.username: u.email for u in users.scalars()}
        assert names == {"s-a": "same@example.org"}


async def test_concurrent_creates_of_one_new_student(serve: Serve) -> None:
    async with serve(**{"server.max_sessions": 50}) as w:
        body = {**LAW, "student_id": "s-race", "full_name": "Race"}
        responses = await asyncio.gather(
            *(w.client.post("/v1/sessions", json=body, headers=AUTH) for _ in range(10))
        )
        for resp in responses:
            w.note(resp.status, await resp.json())
        assert [r.status for r in responses] == [201] * 10
        async with w.db_session() as db:
            count = select(func.count()).select_from(User).where(User.username == "s-race")
            assert (await db.execute(count)).scalar_one() == 1


@pytest.mark.parametrize("student_id", ["admin", "Admin", "root", "system"])
async def test_reserved_ids_are_refused(serve: Serve, student_id: str) -> None:
    async with serve() as w:
        body = {**LAW, "student_id": student_id, "full_name": "Mallory"}
        resp = await w.client.post("/v1/sessions", json=body, headers=AUTH)
        assert resp.status == 400 and "reserved" in (await resp.json())["error"]["message"]
        async with w.db_session() as db:
            admin = (await db.execute(select(User).where(User.username == "admin"))).scalar_one()
        assert admin.full_name != "Mallory" and admin.role == "admin"


async def test_a_staff_account_is_not_a_student(serve: Serve, db_session: Any) -> None:
    async with db_session() as db, db.begin():
        db.add(User(username="staff-1", email="staff@example.org", role="admin", full_name="S"))
    async with serve() as w:
        body = {**LAW, "student_id": "staff-1", "full_name": "Mallory"}
        resp = await w.client.post("/v1/sessions", json=body, headers=AUTH)
        assert resp.status == 409 and await _code(resp) == "conflict"
        async with w.db_session() as db:
            staff = (await db.execute(select(User).where(User.username == "staff-1"))).scalar_one()
        assert staff.full_name == "S"


async def test_x_api_key_works_whatever_authorization_holds(serve: Serve) -> None:
    async with serve() as w:
        headers = {"Authorization": "Bearer rp_RUNPOD_KEY", "X-API-Key": API_KEY}
        resp = await w.client.post(
            "/v1/sessions", json={**LAW, "student_id": "s-rp"}, headers=headers
        )
        assert resp.status == 201
        w.note(201, await resp.json())
        wrong = {"Authorization": "Bearer rp_RUNPOD_KEY", "X-API-Key": "nope"}
        assert (await w.client.get("/v1/sessions", headers=wrong)).status == 401


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    return data


async def test_raw_bytes_in_the_api_key_header(serve: Serve) -> None:
    async with serve() as w:
        port = w.client.port
        for key in (b"\xff\xfe\x80", b"caf\xc3\xa9", b"\xed\xa0\x80"):
            request = b"GET /v1/sessions HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key + b"\r\n\r\n"
            status = (await _raw(port, request)).split(b"\r\n", 1)[0]
            assert b" 401 " in status, status


async def test_a_bad_host_header_is_refused_and_never_echoed(serve: Serve) -> None:
    async with serve() as w:
        for host in ("evil.example/<script>", "a b", "x@y"):
            resp = await w.client.post("/v1/practice", json=PRACTICE, headers={"Host": host})
            assert resp.status == 400 and await _code(resp) == "invalid_request"


async def test_ws_url_comes_from_the_public_url(serve: Serve) -> None:
    public = "https://viva.example.org"
    async with serve(**{"server.public_url": public}) as w:
        resp = await w.client.post(
            "/v1/sessions",
            json={**LAW, "student_id": "s-host"},
            headers={**AUTH, "Host": "attacker.example"},
        )
        body = await resp.json()
        w.note(resp.status, body)
        assert body["ws_url"].startswith("wss://viva.example.org/v1/sessions/")


async def test_origins_outside_the_allow_list_are_refused(serve: Serve) -> None:
    async with serve(**{"server.allowed_origins": ["https://exams.example.org"]}) as w:
        evil = {"Origin": "https://evil.example"}
        resp = await w.client.post("/v1/practice", json=PRACTICE, headers=evil)
        assert resp.status == 403 and await _code(resp) == "forbidden_origin"
        ok = await w.client.post(
            "/v1/practice", json=PRACTICE, headers={"Origin": "https://exams.example.org"}
        )
        body = await ok.json()
        w.note(ok.status, body)
        assert ok.status == 201
        with pytest.raises(WSServerHandshakeError) as refused:
            await w.client.ws_connect(ws_path(body["ws_url"]), headers=evil)
        assert refused.value.status == 403
        assert (await w.client.get("/", headers=evil)).status == 200  # links to the page work


async def test_practice_flood_leaves_room_for_the_platform(serve: Serve) -> None:
    """600 guest requests: a few are taken (per-address limit), the rest answer 429; the
    platform's keyed sessions still open and connect."""
    async with serve(**{"server.max_sessions": 4}) as w:
        responses = await asyncio.gather(
            *(w.client.post("/v1/practice", json=PRACTICE) for _ in range(600))
        )
        statuses = [r.status for r in responses]
        for resp in responses:
            w.note(resp.status, await resp.json())
        assert statuses.count(201) <= 3 and set(statuses) <= {201, 429, 503}
        limited = next(r for r in responses if r.status == 429)
        assert int(limited.headers["Retry-After"]) > 0
        opened = await w.create("s-keyed")  # a reserved slot: the platform gets it
        async with w.client.ws_connect(ws_path(opened["ws_url"])) as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "session.created"


async def test_guest_sessions_never_take_the_reserved_slots(serve: Serve) -> None:
    settings = {
        "server.max_sessions": 3,
        "limits.reserved_sessions": 2,
        "limits.practice_burst": 10,
    }
    async with serve(**settings) as w:
        first = await w.client.post("/v1/practice", json=PRACTICE)
        w.note(first.status, await first.json())
        assert first.status == 201
        second = await w.client.post("/v1/practice", json=PRACTICE)
        assert second.status == 503 and await _code(second) == "at_capacity"
        await w.create("s-keyed")  # the platform still gets its slots


async def test_an_unjoined_guest_session_gives_its_slot_back(serve: Serve) -> None:
    settings = {
        "server.max_sessions": 1,
        "limits.reserved_sessions": 0,
        "limits.practice_pending_seconds": 1,
    }
    async with serve(**settings) as w:
        resp = await w.client.post("/v1/practice", json=PRACTICE)
        w.note(resp.status, await resp.json())
        assert resp.status == 201
        full = await w.client.post("/v1/sessions", json={**LAW, "student_id": "s-1"}, headers=AUTH)
        assert full.status == 503 and await _code(full) == "at_capacity"
        await asyncio.sleep(1.2)
        await w.create("s-2")


async def test_idle_and_trickling_connections_are_closed(serve: Serve) -> None:
    """Connections that never finish their headers (idle, or one byte at a time) are closed
    after the keep-alive/header timeout."""
    async with serve(**{"server.keepalive_timeout_seconds": 1}) as w:
        port = w.client.port
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]

        async def trickle(writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ":
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.2)

        tricklers = [asyncio.ensure_future(trickle(wr)) for _, wr in conns[::2]]
        closed = await asyncio.gather(
            *(asyncio.wait_for(rd.read(), 6) for rd, _ in conns), return_exceptions=True
        )
        for t in tricklers:
            t.cancel()
        # EOF (b"") or a reset: the server hung up on every one of them within the bound.
        assert all(c == b"" or isinstance(c, ConnectionError) for c in closed), closed
        for _, wr in conns:
            wr.close()
