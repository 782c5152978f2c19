"""The serverless handler iterated directly, on a Runtime in this process with fake models and a
real SQLite database: the bridge between the SDK's loop and the worker's, every action, bad jobs,
a realtime session reached through the announced ws_url, and a job cancelled mid-session.

tests/integration/test_handler_real.py drives the same handler through RunPod's local API with
the real models; tests/db/test_handler_modes.py covers SIGTERM in each mode.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from db.tables import Answer, Evaluation, Result, Session
from models.fakes import FakeASR, FakeTTS
from models.scheduled import unwrapped
from tests.db.helpers import server_config
from tests.db.student import CLIPS, Student, clip_pcm, silence
from worker.runpod.runtime import Runtime
from worker.runpod.serverless import Handler, make_handler

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)]
LAW = {"student_id": "s-1", "college_type": "law", "scenario_id": "law_of_contract"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def runtime(db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    cfg = server_config(db_url, str(tmp_path / "journal"), **{"server.port": free_port()})
    rt = Runtime(cfg, {})
    rt.start(60)
    assert rt.context is not None
    tts = unwrapped(rt.context.models.hub.tts)  # type: ignore[union-attr]
    assert isinstance(tts, FakeTTS)
    tts.chars_per_s = 120  # ~0.6 s per question instead of ~5 s of paced audio
    try:
        yield rt
    finally:
        rt.stop()


@pytest.fixture
def handler(runtime: Runtime) -> Handler:
    return make_handler(runtime)


async def run(handler: Handler, job_input: Any) -> list[dict[str, Any]]:
    return [item async for item in handler({"id": "t", "input": job_input})]


async def test_call_and_stream_cross_loops(runtime: Runtime) -> None:
    async def where() -> int:
        return id(asyncio.get_running_loop())

    assert await runtime.call(where) == id(runtime.loop) != id(asyncio.get_running_loop())

    async def count() -> Any:
        for i in range(20):  # more than the hand-over buffer
            yield i, id(asyncio.get_running_loop())

    got = [item async for item in runtime.stream(count)]
    assert [i for i, _ in got] == list(range(20))
    assert {loop for _, loop in got} == {id(runtime.loop)}

    async def fails() -> Any:
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        [item async for item in runtime.stream(fails)]


async def test_health_and_evaluate(runtime: Runtime, handler: Handler) -> None:
    (health,) = await run(handler, {"action": "health"})
    assert health["status"] == "ok" and health["models"]["ready"]
    assert health["database"]["writer"]["healthy"] and health["sessions"]["accepting"]
    clip = base64.b64encode((CLIPS / "law_contract.wav").read_bytes()).decode()
    (item,) = await run(
        handler,
        {
            "action": "evaluate",
            "audio_b64": clip,
            "question_text": "What makes a contract?",
            "expected_keywords": ["offer", "acceptance"],
        },
    )
    assert item["type"] == "evaluation" and item["transcript"]["source"] == "asr"
    assert item["transcript"]["text"] == "fake transcript"  # the fake ASR
    asr = unwrapped(runtime.context.models.hub.asr)  # type: ignore[union-attr]
    assert isinstance(asr, FakeASR)  # primed with the question's keywords, as the listener does
    assert asr.prompts[-1] == "Terms: offer, acceptance."
    assert item["evaluation"]["max_score"] == 10.0 and item["reply"]["text"]
    assert base64.b64decode(item["reply"]["audio_b64"])[:4] == b"RIFF"
    assert set(item["timings_ms"]) >= {"decode", "asr", "evaluate", "tts", "total"}
    assert item["persisted"] is None


async def test_bad_jobs_then_a_good_one(handler: Handler) -> None:
    not_audio = base64.b64encode(b"hello world!").decode()
    one = [{"text": "x"}]
    bad = [
        ({}, "missing_action"),
        ({"action": "explode"}, "unknown_action"),
        ({"action": "evaluate", "audio_b64": "%%%", "question_id": 1}, "invalid_base64"),
        ({"action": "evaluate", "audio_b64": not_audio, "question_id": 1}, "invalid_audio"),
        ({"action": "evaluate", "text": "x", "question_id": 999999}, "unknown_question"),
        (
            {**LAW, "action": "viva", "college_type": "cooking", "answers": one},
            "unknown_college_type",
        ),
        ({**LAW, "action": "viva", "scenario_id": "nope", "answers": one}, "unknown_scenario"),
        (
            {"action": "evaluate", "text": "x", "question_id": 1, "session_code": "VIVA-NONE22"},
            "unknown_session",
        ),
    ]
    for job_input, code in bad:
        items = await run(handler, job_input)
        assert len(items) == 1 and set(items[0]) == {"error"}, items
        assert items[0]["error"]["code"] == code, items
    (health,) = await run(handler, {"action": "health"})
    assert health["status"] == "ok"


async def test_viva_persists_answers_and_result(handler: Handler, db_session: Any) -> None:
    answers = [{"text": "an offer and acceptance"}, {"text": "I don't know"}]
    items = await run(handler, {**LAW, "action": "viva", "answers": answers})
    assert [i["type"] for i in items] == ["question", "question", "result"]
    result = items[-1]
    assert result["stored"] and result["status"] == "completed"
    assert result["result"]["max_score"] == 20.0 and len(result["answers"]) == 2
    async with db_session() as db:
        sess = (await db.execute(select(Session))).scalar_one()
        assert sess.status == "completed" and sess.questions_answered == 2
        assert len((await db.execute(select(Answer))).all()) == 2
        assert len((await db.execute(select(Evaluation))).all()) == 2
        assert (await db.execute(select(Result))).scalar_one().session_id == sess.id
    # more answers than the scenario has questions: refused before anything is created
    many = [{"text": "x"}] * 13
    (error,) = await run(handler, {**LAW, "action": "viva", "answers": many})
    assert error["error"]["code"] == "invalid_input"


def _start_job(
    handler: Handler, job_input: Any
) -> tuple[asyncio.Task[None], list[dict[str, Any]], asyncio.Event]:
    """The job running in the background: its task, its items so far, set at the first."""
    items: list[dict[str, Any]] = []
    first = asyncio.Event()

    async def collect() -> None:
        async for item in handler({"id": "s", "input": job_input}):
            items.append(item)
            first.set()

    return asyncio.create_task(collect()), items, first


async def test_session_job_announces_a_reachable_session(handler: Handler, db_session: Any) -> None:
    job, items, first = _start_job(handler, {**LAW, "action": "session"})
    await asyncio.wait_for(first.wait(), 30)
    opened = items[0]
    assert opened["type"] == "session.opened" and opened["ws_url"].startswith("ws://127.0.0.1:")
    assert opened["code"] in opened["ws_url"] and opened["token"] in opened["ws_url"]
    async with aiohttp.ClientSession() as http:
        student = Student(await http.ws_connect(opened["ws_url"])).start()
        await student.until("exam.question", number=1)
        await student.until("response.done", count=2)  # the greeting, question 1
        await student.send(clip_pcm() + silence(1.0), realtime=False)
        await student.until("conversation.item.input_audio_transcription.completed")
        await student.until("response.done", count=3)  # the examiner's reply was heard
        await student.event({"type": "session.end"})
        ended = await student.until("session.ended")
        assert ended["reason"] == "terminated"
        await student.closed()
    await asyncio.wait_for(job, 30)
    kinds = [i["type"] for i in items]
    assert kinds[0] == "session.opened" and kinds[-1] == "session.ended"
    assert "session.update" in kinds
    final = items[-1]
    assert final["connected"] and final["reason"] == "ended"
    assert final["session"]["status"] == "terminated"
    assert len(final["session"]["answers"]) == 1 and final["session"]["result"] is not None


async def test_unused_session_times_out_terminated(handler: Handler) -> None:
    items = await run(handler, {**LAW, "action": "session", "timeout_s": 0.5})
    assert [i["type"] for i in items] == ["session.opened", "session.ended"]
    assert items[-1]["reason"] == "timed_out" and not items[-1]["connected"]
    assert items[-1]["session"]["status"] == "terminated"
    assert items[-1]["session"]["result"]["max_score"] == 120.0


async def test_cancelled_session_job_leaves_nothing_open(
    handler: Handler, runtime: Runtime, db_session: Any
) -> None:
    job, items, first = _start_job(handler, {**LAW, "action": "session"})
    await asyncio.wait_for(first.wait(), 30)
    opened = items[0]
    job.cancel()  # what RunPod's stop signal does to a running job
    with pytest.raises(asyncio.CancelledError):
        await job
    assert runtime.context is not None
    await runtime.call(runtime.context.db().writer.flush)
    async with db_session() as db:
        sess = (await db.execute(select(Session).filter_by(session_code=opened["code"]))).one()[0]
        assert sess.status == "terminated"
