"""Fuzzing the voice WebSocket: thousands of generated frames (JSON of every shape, client
events with random fields, binary frames of any length) into one live session. Every reply must
be a valid server event, every error typed and non-fatal, and the session must still answer and
take a turn afterwards. Fake models keep it fast; the protocol is the same for every profile."""

from __future__ import annotations

import asyncio
import json
import typing
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import DatabaseConfig
from db.setup import migrate_and_seed
from tests.db.helpers import AUTH, server_config, wait_ready
from tests.db.student import Student, clip_pcm, silence
from worker import protocol as p
from worker.http.server import build_app

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
# session.end would (rightly) end the session; everything else a client can send is fair game.
KINDS = st.sampled_from(sorted(set(p.CLIENT_EVENT_TYPES) - {"session.end"})) | st.text(max_size=12)
EVENTS = st.builds(
    lambda kind, rest: json.dumps({**rest, "type": kind}),
    KINDS,
    st.dictionaries(st.sampled_from(["event_id", "response_id", "client_info", "x"]), JSON),
)
TEXT = EVENTS | JSON.map(json.dumps) | st.text(max_size=200)
AUDIO = st.integers(min_value=0, max_value=40_000).flatmap(
    lambda n: st.binary(min_size=n, max_size=n)
)
MESSAGES = st.lists(TEXT | AUDIO, min_size=300, max_size=600)
FATAL = set(p.CLOSE_CODE_FOR)


@pytest.fixture
def sqlite_db_url(tmp_path: Any) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}"
    asyncio.run(migrate_and_seed(DatabaseConfig(url=url, connect_attempts=1)))
    return url


@pytest.mark.slow
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # one database for every example is intended
    ],
)
@given(messages=MESSAGES)
def test_generated_frames_get_typed_errors_and_the_session_survives(
    sqlite_db_url: str, tmp_path_factory: Any, messages: list[str | bytes]
) -> None:
    journal = tmp_path_factory.mktemp("journal")
    asyncio.run(_fuzz(sqlite_db_url, str(journal), messages))


async def _fuzz(db_url: str, journal: str, messages: list[str | bytes]) -> None:
    # Floods of events are the hostile suite's (tests/hostile): here every frame is processed.
    settings = {"turn.nudge_after_seconds": 600.0, "server.events_burst": 1_000_000}
    cfg = server_config(db_url, journal, **settings)
    async with TestClient(TestServer(build_app(cfg))) as client:
        await wait_ready(client)
        body = {"student_id": "fuzz", "college_type": "law", "scenario_id": "law_of_contract"}
        created = await (await client.post("/v1/sessions", json=body, headers=AUTH)).json()
        code, token = created["session_code"], created["token"]
        ws = await client.ws_connect(f"/v1/sessions/{code}/stream?token={token}")
        student = Student(ws).start()
        await student.until("session.created")
        for message in messages:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
        await student.event({"type": "ping", "event_id": "after-fuzz"})
        await student.until("pong", event_id="after-fuzz", within=60)
        for event in student.events:
            p.parse_server_event(json.dumps(event))  # every reply is a valid server event
        codes = {e["code"] for e in student.of("error")}
        assert codes <= set(typing.get_args(p.ErrorCode)) - FATAL, codes
        assert not ws.closed
        # Still a working viva: clear whatever the noise left half-heard, then answer.
        await student.event({"type": "input_audio_buffer.clear"})
        await student.until("input_audio_buffer.cleared")
        answered = len(student.of("conversation.item.input_audio_transcription.completed"))
        await student.send(silence(0.6) + clip_pcm() + silence(1.0), realtime=False)
        await student.until(
            "conversation.item.input_audio_transcription.completed", count=answered + 1
        )
        assert (await client.get("/healthz")).status == 200
        await student.stop()
