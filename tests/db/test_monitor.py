"""The examiner monitor over the real server with fake models and a real SQLite database:
the page is served, the live feed (server-sent events) needs the API key, lists live sessions,
follows a session from question to question until it is gone, and ends on disconnect and on
shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from models.fakes import FakeTTS
from models.scheduled import unwrapped
from tests.db.helpers import API_KEY, AUTH, server_config, wait_ready
from tests.db.student import Student, clip_pcm, silence
from worker.http import monitor
from worker.http.context import CONTEXT
from worker.http.monitor import STREAMS
from worker.http.server import build_app

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)]
STREAM = "/v1/monitor/stream"


@pytest.fixture
async def client(db_url: str, tmp_path) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    cfg = server_config(db_url, str(tmp_path / "journal"))
    async with TestClient(TestServer(build_app(cfg))) as client:
        await wait_ready(client)
        tts = unwrapped(client.server.app[CONTEXT].models.hub.tts)
        assert isinstance(tts, FakeTTS)
        tts.chars_per_s = 120  # questions take ~0.6 s to say instead of ~5 s
        yield client


async def create_session(client: TestClient) -> dict[str, Any]:
    body = {"student_id": "s1", "college_type": "law", "scenario_id": "law_of_contract"}
    resp = await client.post("/v1/sessions", json=body, headers=AUTH)
    assert resp.status == 201
    created: dict[str, Any] = await resp.json()
    return created


class Feed:
    """Reads a server-sent event stream: `(event name, parsed data)` pairs, comments aside."""

    def __init__(self, resp: ClientResponse):
        self.resp = resp
        self.comments: list[str] = []

    async def next(self, within: float = 30) -> tuple[str, Any]:
        name, data = "message", []
        async with asyncio.timeout(within):
            while True:
                raw = await self.resp.content.readline()
                if not raw:
                    raise EOFError("the stream ended")
                line = raw.decode().rstrip("\r\n")
                if not line:  # the end of an event (or of a block with no data: retry, comment)
                    if data:
                        return name, json.loads("\n".join(data))
                    name = "message"
                elif line.startswith(":"):
                    self.comments.append(line)
                else:
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "event":
                        name = value
                    elif field == "data":
                        data.append(value)

    async def update(self, match: Callable[[dict[str, Any]], bool], within: float = 30) -> Any:
        """The next `update` event that `match`es, skipping the others."""
        async with asyncio.timeout(within):
            while True:
                name, data = await self.next(within)
                if name == "update" and match(data):
                    return data

    async def ended(self, within: float = 10) -> bool:
        try:
            while True:
                await self.next(within)
        except EOFError:
            return True


async def open_feed(client: TestClient, **kwargs: Any) -> Feed:
    resp = await client.get(STREAM, **kwargs)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    return Feed(resp)


async def test_the_page_and_its_files_are_served(client: TestClient) -> None:
    page = await client.get("/monitor")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/static/monitor.js" in await page.text()
    for name, kind in (("monitor.js", "text/javascript"), ("monitor.css", "text/css")):
        resp = await client.get(f"/static/{name}")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith(kind)


async def test_the_stream_needs_the_api_key(client: TestClient) -> None:
    for kwargs in (
        {},
        {"headers": {"Authorization": "Bearer wrong-key-123"}},
        {"params": {"key": "wrong-key-123"}},
        {"params": {"key": ""}},
    ):
        resp = await client.get(STREAM, **kwargs)
        assert resp.status == 401, kwargs
        assert (await resp.json())["error"]["code"] == "unauthorized"
    by_query = await open_feed(client, params={"key": API_KEY})
    assert await by_query.next() == ("sessions", {"sessions": []})
    by_header = await open_feed(client, headers=AUTH)
    assert await by_header.next() == ("sessions", {"sessions": []})


async def test_the_stream_follows_a_session_until_it_is_gone(client: TestClient) -> None:
    created = await create_session(client)
    code = created["session_code"]
    ws = await client.ws_connect(f"/v1/sessions/{code}/stream?token={created['token']}")
    student = Student(ws).start()
    await student.until("exam.question", number=1)

    feed = await open_feed(client, params={"key": API_KEY})
    name, first = await feed.next()
    assert name == "sessions"
    [summary] = first["sessions"]
    assert summary["session_code"] == code and summary["state"] == "connected"
    assert summary["question_number"] == 1 and summary["college_type"] == "law"
    assert summary["question_count"] == created["total_questions"]

    # Fake models: the first answer gets one follow-up, the second moves on to question 2.
    for kind in ("question", "followup"):
        asked = await student.until("response.created", kind=kind)
        await student.until("response.done", response_id=asked["response_id"])
        await student.send(clip_pcm() + silence(1.0))
    await student.until("exam.question", number=2)
    moved = await feed.update(lambda u: u["session_code"] == code and u["question_number"] == 2)
    assert moved["state"] == "connected" and moved["answered"] == 1
    assert moved["last_latency_ms"] is not None and moved["latencies_ms"]

    await student.event({"type": "session.end"})
    await student.until("session.ended")
    await feed.update(lambda u: u["session_code"] == code and u["state"] == "ended")
    gone = await feed.update(lambda u: u["session_code"] == code and u["state"] == "gone")
    assert gone == {"session_code": code, "state": "gone"}
    await student.stop()


async def test_streams_end_on_disconnect_and_on_shutdown(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitor, "HEARTBEAT_S", 0.2)
    streams = client.server.app[STREAMS]
    staying = await open_feed(client, headers=AUTH)
    leaving = await open_feed(client, headers=AUTH)
    for feed in (staying, leaving):
        assert (await feed.next())[0] == "sessions"
    assert len(streams) == 2
    with pytest.raises(TimeoutError):
        await staying.next(within=0.5)  # nothing happens, but the heartbeats come
    assert staying.comments[:1] == [": heartbeat"]

    leaving.resp.close()  # the client goes away: its next heartbeat write fails
    deadline = asyncio.get_running_loop().time() + 5
    while len(streams) != 1:
        assert asyncio.get_running_loop().time() < deadline, "the stream outlived its client"
        await asyncio.sleep(0.05)

    closing = asyncio.ensure_future(client.server.close())  # what SIGTERM does in run_app
    assert await staying.next(within=10) == ("shutdown", {"reason": "server_shutdown"})
    assert await staying.ended()
    await asyncio.wait_for(closing, 10)
    assert len(streams) == 0
