"""A viva over the real WebSocket server with fake models (fast) and a real database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from db.tables import Answer, Evaluation, Result
from tests.db.helpers import AUTH, server_config, wait_ready
from tests.db.student import clip_pcm, silence
from worker.http.server import build_app

FRAME = 640  # 20 ms of 16 kHz PCM16


@pytest.fixture
async def client(db_url: str, tmp_path) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    cfg = server_config(db_url, str(tmp_path / "journal"))
    async with TestClient(TestServer(build_app(cfg))) as c:
        await wait_ready(c)
        yield c


async def _until(ws: Any, kind: str, seen: list[dict]) -> dict:
    try:
        return await asyncio.wait_for(_next(ws, kind, seen), 60)
    except TimeoutError:
        raise AssertionError(f"no {kind} in 60 s; saw {[e['type'] for e in seen]}") from None


async def _next(ws: Any, kind: str, seen: list[dict]) -> dict:
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            event = json.loads(msg.data)
            seen.append(event)
            if event["type"] == kind:
                return event
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
    raise AssertionError(f"no {kind}; saw {[e['type'] for e in seen]}")


@pytest.mark.slow
async def test_one_turn_then_end(client: TestClient, db_session) -> None:  # type: ignore[no-untyped-def]
    body = {"student_id": "s1", "college_type": "law", "scenario_id": "law_of_contract"}
    created = await (await client.post("/v1/sessions", json=body, headers=AUTH)).json()
    code, token = created["session_code"], created["token"]
    ws = await client.ws_connect(f"/v1/sessions/{code}/stream?token={token}")
    seen: list[dict] = []
    hello = await _until(ws, "session.created", seen)
    assert hello["output_audio_format"]["sample_rate"] == 24000
    q1 = await _until(ws, "exam.question", seen)
    assert q1["number"] == 1
    await _until(ws, "response.done", seen)  # greeting
    await _until(ws, "response.done", seen)  # question 1
    pcm = clip_pcm() + silence(1.0)  # the answer, then a second of silence
    # The fake ASR's words match no expected keyword, so the examiner asks one follow-up
    # (max_followups 1) before moving on: answer twice.
    kinds, heard_texts = [], []
    for _attempt in range(2):
        for i in range(0, len(pcm), FRAME):
            await ws.send_bytes(pcm[i : i + FRAME])
        stopped = await _until(ws, "input_audio_buffer.speech_stopped", seen)
        assert stopped["audio_end_ms"] > 0
        heard = await _until(ws, "conversation.item.input_audio_transcription.completed", seen)
        assert heard["question_number"] == 1 and heard["transcript"]
        heard_texts.append(heard["transcript"])
        kinds.append((await _until(ws, "response.created", seen))["kind"])
        done = await _until(ws, "response.done", seen)
        assert done["latency_ms"] is not None and done["latency_ms"] >= 0
    assert kinds == ["followup", "acknowledge"]
    questions = [e for e in seen if e["type"] == "exam.question"]
    if len(questions) < 2:
        questions.append(await _until(ws, "exam.question", seen))
    assert [q["number"] for q in questions] == [1, 2]
    await ws.send_str(json.dumps({"type": "session.end"}))
    completed = await _until(ws, "exam.completed", seen)
    assert completed["status"] == "terminated" and completed["max_score"] == 120
    await _until(ws, "session.ended", seen)
    await ws.close()
    await asyncio.sleep(0.5)
    async with db_session() as db:
        for _ in range(50):  # the writer commits within its batch interval
            rows = (await db.execute(select(Evaluation))).scalars().all()
            result = (await db.execute(select(Result))).scalars().all()
            if rows and result:
                break
            await asyncio.sleep(0.1)
        answers = (await db.execute(select(Answer))).scalars().all()
    assert [a.question_number for a in answers] == [1]  # the follow-up's answer joined it
    assert answers[0].transcribed_text == " ".join(heard_texts)  # both attempts, one answer
    assert len(rows) == 1 and rows[0].latency_ms is not None
    assert result and result[0].grade in "ABCDF"


async def test_bad_token_and_bad_frames(client: TestClient) -> None:
    body = {"student_id": "s2", "college_type": "law", "scenario_id": "law_of_contract"}
    created = await (await client.post("/v1/sessions", json=body, headers=AUTH)).json()
    ws = await client.ws_connect(f"/v1/sessions/{created['session_code']}/stream?token=nope")
    msg = await ws.receive()
    assert json.loads(msg.data)["code"] == "unauthorized"
    msg = await ws.receive()
    assert msg.type == WSMsgType.CLOSE and msg.data == 1008
    ws = await client.ws_connect(
        f"/v1/sessions/{created['session_code']}/stream?token={created['token']}"
    )
    seen: list[dict] = []
    await _until(ws, "session.created", seen)
    await ws.send_bytes(b"\x00")  # odd length
    await ws.send_str("{not json")
    await ws.send_str(json.dumps({"type": "no.such"}))
    await ws.send_bytes(bytes(40_000))  # over the 32 000-byte frame limit
    await ws.send_str(json.dumps({"type": "response.cancel", "response_id": 7}))
    codes = []
    async with asyncio.timeout(30):
        while len(codes) < 5:
            event = await _until(ws, "error", seen)
            codes.append(event["code"])
    assert codes == [
        "audio_format",
        "invalid_json",
        "unknown_event",
        "frame_too_large",
        "invalid_event",
    ]
    await ws.send_str(json.dumps({"type": "ping", "event_id": "p1"}))
    pong = await _until(ws, "pong", seen)
    assert pong["event_id"] == "p1"
    await ws.close()
