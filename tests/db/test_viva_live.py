"""Realtime behaviour over the real WebSocket server with fake models and a real database:
barge-in, cancels, reconnects, the grace period, nudges, time limits, shutdown, bad tokens.

Fake models keep these fast and deterministic; tests/integration/test_viva_real.py runs the
same server on the real cpu-profile models.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from db.queries.configuration import set_setting
from db.tables import Answer, AuditLog, Result, Session
from models.fakes import FakeASR, FakeTTS
from models.scheduled import unwrapped
from tests.db.helpers import AUTH, TOKEN_SECRET, server_config, wait_ready
from tests.db.student import Student, clip_pcm, silence, tone
from worker.http.context import CONTEXT
from worker.http.server import build_app
from worker.service import warmup
from worker.service.tokens import issue_token
from worker.voice.metrics import SLOW_CONSUMERS

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)]
Open = Callable[..., Awaitable[tuple[TestClient, dict[str, Any]]]]


@pytest.fixture
async def worker(db_url: str, tmp_path, db_session) -> AsyncIterator[Open]:  # type: ignore[no-untyped-def]
    """`await worker(live={...}, **settings)`: a running worker and one created session.
    `live` are rows of the configuration table, which win over config settings."""
    clients: list[TestClient] = []

    async def start(
        fast_tts: bool = True, live: dict[str, Any] | None = None, **settings: Any
    ) -> tuple[TestClient, dict[str, Any]]:
        async with db_session() as db, db.begin():
            for key, value in (live or {}).items():
                await set_setting(db, key, value)
        cfg = server_config(db_url, str(tmp_path / "journal"), **settings)
        client = TestClient(TestServer(build_app(cfg)))
        await client.start_server()
        clients.append(client)
        await wait_ready(client)
        if fast_tts:  # ~0.6 s per question instead of ~5 s: the tests talk over it sooner
            tts = unwrapped(client.server.app[CONTEXT].models.hub.tts)
            assert isinstance(tts, FakeTTS)
            tts.chars_per_s = 120
        body = {"student_id": "s1", "college_type": "law", "scenario_id": "law_of_contract"}
        resp = await client.post("/v1/sessions", json=body, headers=AUTH)
        assert resp.status == 201
        return client, await resp.json()

    yield start
    for client in clients:
        await client.close()


async def connect(client: TestClient, created: dict[str, Any]) -> Student:
    code, token = created["session_code"], created["token"]
    ws = await client.ws_connect(f"/v1/sessions/{code}/stream?token={token}")
    return Student(ws).start()


async def until_listening(student: Student, number: int = 1) -> None:
    """Greeting and question `number` spoken: the examiner now listens."""
    await student.until("exam.question", number=number)
    q = await student.until("response.created", kind="question")
    await student.until("response.done", response_id=q["response_id"])


async def _rows(db_session: Any, model: Any, **where: Any) -> list[Any]:
    async with db_session() as db:
        stmt = select(model).filter_by(**where)
        return list((await db.execute(stmt)).scalars().all())


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 15) -> Any:
    """The write-behind writer commits within its batch interval: poll with a deadline."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {within} s: {value!r}")
        await asyncio.sleep(0.1)


async def test_barge_in_cancels_the_response_and_its_audio(worker: Open) -> None:
    client, created = await worker(fast_tts=False)  # a ~5 s question to talk over
    before = await _metrics(client)
    student = await connect(client, created)
    await student.until("response.created", kind="question")
    await asyncio.sleep(0.5)  # some question audio is out
    await student.send(clip_pcm() + silence(1.2))
    cancelled = await student.until("response.cancelled")
    assert cancelled["reason"] == "barge_in" and cancelled["audio_ms"] > 0
    assert student.audio_after("response.cancelled") == 0  # nothing more of that response
    heard = await student.until("conversation.item.input_audio_transcription.completed")
    assert heard["question_number"] == 1  # the interruption was the answer
    reply = await student.until("response.created", kind="followup")
    done = await student.until("response.done", response_id=reply["response_id"])
    assert done["latency_ms"] is not None
    stages = done["stages_ms"]
    assert {"endpoint_wait", "asr", "tts_first_audio", "critical_path_models"} <= set(stages)
    after = await _metrics(client)  # Prometheus series are per process: compare
    assert after["viva_barge_ins_total"] == before["viva_barge_ins_total"] + 1
    count = "viva_turn_latency_seconds_count"
    assert after[count] == before[count] + 1
    await student.stop()


async def _metrics(client: TestClient) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    return {
        name: float(value)
        for name, value in (line.split(" ") for line in text.splitlines() if line[:1] != "#")
    }


async def test_interruption_without_words_repeats_what_was_cut(worker: Open) -> None:
    client, created = await worker(fast_tts=False)
    asr = unwrapped(client.server.app[CONTEXT].models.hub.asr)
    assert isinstance(asr, FakeASR)
    asr.transcript = ""  # a cough, a door: speech to the VAD, no words to the ASR
    student = await connect(client, created)
    first = await student.until("response.created", kind="question")
    await asyncio.sleep(0.5)
    await student.send(clip_pcm()[: 16000 * 3] + silence(1.2))  # 1.5 s of "speech"
    await student.until("response.cancelled", response_id=first["response_id"])
    again = await student.until("response.created", count=2, kind="question")
    assert again["response_id"] != first["response_id"]
    assert [q["number"] for q in student.of("exam.question")] == [1, 1]
    assert not student.of("conversation.item.input_audio_transcription.completed")
    await student.stop()


async def test_cancel_and_repeat_from_the_client(worker: Open) -> None:
    client, created = await worker(fast_tts=False)
    student = await connect(client, created)
    q = await student.until("response.created", kind="question")
    await asyncio.sleep(0.3)
    await student.event({"type": "response.cancel"})
    cancelled = await student.until("response.cancelled")
    assert cancelled == {**cancelled, "reason": "client_cancel", "response_id": q["response_id"]}
    await student.event({"type": "exam.repeat"})
    await student.until("response.created", kind="repeat")
    assert [e["number"] for e in student.of("exam.question")] == [1, 1]
    await student.stop()


async def test_reconnect_within_grace_resumes_the_question(worker: Open, db_session: Any) -> None:
    client, created = await worker(**{"exam.reconnect_grace_seconds": 10})
    student = await connect(client, created)
    await until_listening(student)
    await student.send(clip_pcm() + silence(1.0))
    await student.until("conversation.item.input_audio_transcription.completed")
    await student.until("response.created", kind="followup")
    await student.stop()  # the connection drops mid-exam
    await asyncio.sleep(0.3)
    assert created["session_code"] in client.server.app[CONTEXT].live  # waiting for the student
    back = await connect(client, created)
    hello = await back.until("session.created")
    assert hello["resumed"] is True
    question = await back.until("exam.question")
    assert question["number"] == 1
    await back.until("response.created", kind="repeat")
    await back.event({"type": "session.end"})
    result = await back.until("exam.completed")
    assert result["status"] == "terminated"
    assert (await back.until("session.ended"))["reason"] == "terminated"
    assert await back.closed() == 1000
    actions = await eventually(
        lambda: _actions(db_session, created["session_code"], "session.terminated")
    )
    assert {"session.started", "session.resumed", "session.terminated"} <= actions
    assert len(await _rows(db_session, Answer)) == 1


async def _actions(db_session: Any, code: str, wanted: str) -> set[str]:
    rows = await _rows(db_session, AuditLog, resource_id=code)
    actions = {r.action for r in rows}
    return actions if wanted in actions else set()


async def test_past_the_grace_period_the_session_is_terminated(
    worker: Open, db_session: Any
) -> None:
    client, created = await worker(**{"exam.reconnect_grace_seconds": 0.5})
    student = await connect(client, created)
    await until_listening(student)
    await student.send(clip_pcm() + silence(1.0))
    await student.until("conversation.item.input_audio_transcription.completed")
    await student.stop()
    code = created["session_code"]
    [sess] = await eventually(
        lambda: _rows(db_session, Session, session_code=code, status="terminated")
    )
    [result] = await eventually(lambda: _rows(db_session, Result, session_id=sess.id))
    assert result.result_json["questions_answered"] == 1
    assert result.result_json["usage"]["audio_in_seconds"] > 3
    assert result.result_json["end_reason"].startswith("no connection within")
    late = await connect(client, created)
    error = await late.until("error")
    assert error["code"] == "session_closed" and await late.closed() == 4001


async def test_second_connection_and_bad_tokens_are_refused(worker: Open, db_session: Any) -> None:
    client, created = await worker(**{"limits.audit_window_seconds": 0.5})
    first = await connect(client, created)
    await first.until("session.created")
    second = await connect(client, created)
    assert (await second.until("error"))["code"] == "session_busy"
    assert await second.closed() == 4000
    code = created["session_code"]
    expired = issue_token(code, TOKEN_SECRET, ttl_s=60, now=0)
    for token, kind in ((expired, "token_expired"), ("", "unauthorized"), ("x.y", "unauthorized")):
        ws = await client.ws_connect(f"/v1/sessions/{code}/stream?token={token}")
        bad = Student(ws).start()
        assert (await bad.until("error"))["code"] == kind
        assert await bad.closed() == 1008
    await first.event({"type": "ping", "event_id": "still-here"})
    assert (await first.until("pong"))["event_id"] == "still-here"

    async def counted() -> int:  # one row per client per window, with the count
        rows = await _rows(db_session, AuditLog, action="token.rejected", resource_id=code)
        return sum(r.details["count"] for r in rows) == 3 and len(rows)

    assert await eventually(counted) <= 2
    await first.stop()


async def test_nudge_after_silence_then_time_limit(worker: Open) -> None:
    client, created = await worker(
        live={"max_question_duration_seconds": 4}, **{"turn.nudge_after_seconds": 1.0}
    )
    student = await connect(client, created)
    await until_listening(student)
    sender = asyncio.ensure_future(student.send(silence(8.0)))
    nudge = await student.until("response.created", kind="nudge", within=10)
    await student.until("response.done", response_id=nudge["response_id"])
    await student.until("exam.question", number=2, within=10)  # time ran out on question 1
    assert len(student.of("response.created")) == 5  # greeting, q1, nudge, time-up, q2
    assert [e["kind"] for e in student.of("response.created")][2:4] == ["nudge", "acknowledge"]
    sender.cancel()
    await student.stop()


async def test_time_limit_cuts_a_long_answer_and_keeps_it(worker: Open) -> None:
    client, created = await worker(
        live={"max_question_duration_seconds": 3, "min_answer_duration_seconds": 1}
    )
    student = await connect(client, created)
    await until_listening(student)
    sender = asyncio.ensure_future(student.send(tone(15.0)))  # speech with no pause in it
    started = await student.until("input_audio_buffer.speech_started")
    heard = await student.until("conversation.item.input_audio_transcription.completed")
    assert heard["question_number"] == 1
    stopped = await student.until("input_audio_buffer.speech_stopped")
    assert stopped["audio_end_ms"] - started["audio_start_ms"] < 3500
    assert not sender.done()  # cut while the student was still talking
    await student.until("exam.question", number=2)
    sender.cancel()
    await student.stop()


async def test_shutdown_ends_live_sessions_with_a_result(worker: Open, db_session: Any) -> None:
    client, created = await worker()
    student = await connect(client, created)
    await until_listening(student)
    await student.send(clip_pcm() + silence(1.0))
    await student.until("conversation.item.input_audio_transcription.completed")
    await client.server.close()  # what SIGTERM does in run_app: on_shutdown, then cleanup
    assert (await student.until("session.ended"))["reason"] == "server_shutdown"
    assert (await student.until("exam.completed"))["status"] == "terminated"
    assert await student.closed() == 1001
    code = created["session_code"]
    [sess] = await _rows(db_session, Session, session_code=code)  # the writer drained on close
    assert sess.status == "terminated"
    assert await _rows(db_session, Result, session_id=sess.id)
    assert len(await _rows(db_session, Answer, session_id=sess.id)) == 1


async def test_ping_is_204_while_models_warm_then_200(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = server_config(db_url, str(tmp_path / "journal"), **{"models.llm.fake_delay_ms": 1500})
    async with TestClient(TestServer(build_app(cfg))) as client:
        assert (await client.get("/ping")).status == 204  # the warm-up's LLM call is slow
        health = await (await client.get("/healthz")).json()
        assert health["models"] == {"ready": False, "error": None}
        assert (await eventually(lambda: _ping(client))) == 200


async def test_models_start_loading_once_the_database_is_open(
    db_url: str, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Loading the models in process starves the loop; the database connects first."""
    app = build_app(server_config(db_url, str(tmp_path / "journal")))
    database_open_at_load: list[bool] = []

    async def spy(cfg: Any) -> Any:
        database_open_at_load.append(app[CONTEXT].database is not None)
        return await real(cfg)

    real = warmup.load_hub
    monkeypatch.setattr(warmup, "load_hub", spy)
    async with TestClient(TestServer(app)) as client:
        await wait_ready(client)
    assert database_open_at_load == [True]


async def _ping(client: TestClient) -> int | None:
    status = (await client.get("/ping")).status
    return status if status == 200 else None


async def test_audio_sent_before_session_created_starts_the_stream(worker: Open) -> None:
    client, created = await worker()
    code, token = created["session_code"], created["token"]
    ws = await client.ws_connect(f"/v1/sessions/{code}/stream?token={token}")
    await ws.send_bytes(silence(0.5))  # before reading anything: not refused, not lost
    student = Student(ws).start()
    await until_listening(student)
    await student.send(clip_pcm() + silence(1.0))
    heard = await student.until("conversation.item.input_audio_transcription.completed")
    started = student.of("input_audio_buffer.speech_started")[0]
    assert started["audio_start_ms"] >= 500  # offsets count the early half second too
    assert heard["question_number"] == 1 and not student.of("error")
    await student.stop()


async def test_silence_between_answers_is_not_hoarded(worker: Open) -> None:
    """Memory stays bounded while a student is silent (the soak found +148 MB/min)."""
    client, created = await worker(**{"turn.nudge_after_seconds": 600.0})
    student = await connect(client, created)
    await until_listening(student)
    await student.send(silence(12.0), realtime=False)  # 375 chunks of silence
    await student.event({"type": "ping", "event_id": "p"})
    await student.until("pong")
    session = client.server.app[CONTEXT].live.get(created["session_code"])
    assert session is not None and session._conversation is not None
    assert len(session._conversation.listener._chunks) <= 64
    await student.send(clip_pcm() + silence(1.0), realtime=False)  # and answers still work
    heard = await student.until("conversation.item.input_audio_transcription.completed")
    assert heard["question_number"] == 1
    await student.stop()


def _small_receive_window(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32_768)  # before connect: small window
    return sock


async def test_a_client_that_stops_reading_is_cut_off_and_may_resume(worker: Open) -> None:
    """Paced examiner audio (48 KB/s) must fill the socket and trip the send timeout within
    seconds; with the kernel's autotuned send buffer (megabytes) it took over a minute."""
    client, created = await worker(**{"server.send_timeout_seconds": 1.0})
    code, token = created["session_code"], created["token"]
    cut_off = SLOW_CONSUMERS
    before = cut_off._value.get()
    connector = aiohttp.TCPConnector(socket_factory=_small_receive_window)
    async with aiohttp.ClientSession(connector=connector) as http:
        url = client.make_url(f"/v1/sessions/{code}/stream?token={token}")
        async with http.ws_connect(url) as ws:
            hello = await ws.receive_json(timeout=10)
            assert hello["type"] == "session.created"
            assert ws._conn is not None and ws._conn.transport is not None
            ws._conn.transport.pause_reading()
            loop = asyncio.get_running_loop()
            stopped_at = loop.time()
            # Keep the examiner talking: every repeat starts the question's audio again.
            while cut_off._value.get() == before and loop.time() - stopped_at < 30:
                await ws.send_str(json.dumps({"type": "exam.repeat"}))
                await asyncio.sleep(0.5)
            assert cut_off._value.get() == before + 1, "not cut off within 30 s"
            ws._conn.transport.resume_reading()
            while (await ws.receive(timeout=30)).type in (WSMsgType.TEXT, WSMsgType.BINARY):
                pass
            # Dropped without a close frame: one would wait behind the unread audio.
            assert ws.close_code == 1006
    student = await connect(client, created)
    resumed = await student.until("session.created")
    assert resumed["resumed"] is True
    assert (await student.until("exam.question"))["number"] == 1
    await student.until("response.created", kind="repeat")
    await student.stop()
