"""Several worker processes on one PostgreSQL: a session has one owner at a time, students who
reconnect anywhere are served by that owner only, and when the owner dies the session moves to
another worker and continues at the question it stood at (never from the greeting)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from db.ids import MAX_NODE, SEQ_BITS
from db.tables import Answer, AuditLog, Evaluation, Result, Session
from tests.db.helpers import AUTH
from tests.db.student import Student, clip_pcm, silence
from tests.db.test_handler_modes import Proc, free_port, wait_for, worker, worker_env

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.parametrize("empty_db_url", ["postgres"], indirect=True),
]
LAW = {"college_type": "law", "scenario_id": "law_of_contract"}
QUESTIONS = 12


@contextlib.contextmanager
def workers(db_url: str, tmp_path: Path, n: int, **env: str) -> Iterator[list[tuple[str, Proc]]]:
    with contextlib.ExitStack() as stack:
        started = []
        for i in range(n):
            port = free_port()
            settings = {
                "PORT": str(port),
                "VIVA__WRITER__BATCH_INTERVAL_MS": "50",
                "VIVA__EXAM__MAX_FOLLOWUPS": "0",
                "VIVA__EXAM__TOTAL_QUESTIONS": "4",
                "VIVA__EXAM__RECONNECT_GRACE_SECONDS": "20",
                **env,
            }
            proc_env = worker_env(db_url, tmp_path / f"w{i}", **settings)
            proc = stack.enter_context(worker(["--serve"], proc_env, tmp_path / f"w{i}.log"))
            started.append((f"127.0.0.1:{port}", proc))
        yield started


def node_of(row_id: int) -> int:
    return (row_id >> SEQ_BITS) & MAX_NODE


def stream_url(host: str, opened: dict[str, Any]) -> str:
    return f"ws://{host}/v1/sessions/{opened['session_code']}/stream?token={opened['token']}"


async def count(db_session: Any, model: Any, **where: Any) -> int:
    async with db_session() as db:
        stmt = select(func.count()).select_from(model).filter_by(**where)
        return int((await db.execute(stmt)).scalar_one())


async def monitor_update(http: aiohttp.ClientSession, host: str, code: str) -> dict[str, Any]:
    """The first update about session `code` on `host`'s monitor feed."""
    url = f"http://{host}/v1/monitor/stream"
    async with http.get(url, headers=AUTH, timeout=aiohttp.ClientTimeout(total=20)) as resp:
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "update":
                data = json.loads(line[6:])
                if data.get("session_code") == code:
                    return dict(data)
    raise AssertionError(f"no update about {code}")


async def eventually(check: Any, wanted: int, within: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while (got := await check()) != wanted:
        assert asyncio.get_running_loop().time() < deadline, f"{got} != {wanted}"
        await asyncio.sleep(0.1)


async def answer(s: Student, number: int) -> None:
    await s.until("exam.question", number=number)
    await s.until("response.created")
    while True:  # every reply so far heard out: the question is asked
        created = {e["response_id"] for e in s.of("response.created")}
        if created <= {e["response_id"] for e in s.of("response.done")}:
            break
        await asyncio.sleep(0.05)
    await s.send(clip_pcm() + silence(1.0), realtime=False)
    await s.until("conversation.item.input_audio_transcription.completed", question_number=number)


async def test_one_owner_and_a_move_when_it_dies(
    db_url: str, tmp_path: Path, db_session: Any
) -> None:
    with workers(db_url, tmp_path, 2) as ((a, proc_a), (b, proc_b)):
        for host, proc in ((a, proc_a), (b, proc_b)):
            await wait_for(f"http://{host}/ping", proc)
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"http://{a}/v1/sessions", json={**LAW, "student_id": "s"}, headers=AUTH
            )
            opened = await resp.json()
            s = Student(await http.ws_connect(stream_url(a, opened))).start()
            await answer(s, 1)
            await s.until("exam.question", number=2)
            # The same token at the other worker: refused, while the owner goes on serving.
            other = Student(await http.ws_connect(stream_url(b, opened))).start()
            assert (await other.until("error"))["code"] == "session_elsewhere"
            assert await other.closed() == 4002
            await s.event({"type": "ping", "event_id": "owner"})
            await s.until("pong", event_id="owner")
            # B's monitor shows the session, on A (A's node id is in the ids A made).
            shown = await monitor_update(http, b, opened["session_code"])
            async with db_session() as db:
                row = (
                    await db.execute(select(Session).filter_by(session_code=opened["session_code"]))
                ).scalar_one()
            assert shown["state"] == "elsewhere" and shown["worker"] == node_of(row.id)
            assert shown["question_number"] in (1, 2)  # the checkpoint commits in 50 ms batches
            # The answer to question 1 is scored once question 2 has been heard out (until then
            # it could be taken back), then committed within a 50 ms batch.
            await eventually(lambda: count(db_session, Answer), 1)
            proc_a.popen.send_signal(signal.SIGKILL)  # the owner dies mid-question
            await asyncio.to_thread(proc_a.popen.wait, 10)
            await s.closed(within=10)
            back = Student(await http.ws_connect(stream_url(b, opened))).start()
            hello = await back.until("session.created")
            assert hello["resumed"] is True
            kinds = [e["kind"] for e in back.of("response.created")]
            await answer(back, 2)
            kinds = [e["kind"] for e in back.of("response.created")]
            assert "greeting" not in kinds and kinds[0] == "repeat", kinds
            await back.event({"type": "session.end"})
            await back.until("exam.completed")
            await back.until("session.ended")
            await eventually(lambda: count(db_session, Result), 1)
    code = opened["session_code"]
    async with db_session() as db:
        numbers = sorted(a.question_number for a in (await db.execute(select(Answer))).scalars())
        actions = [
            r.action
            for r in (await db.execute(select(AuditLog).filter_by(resource_id=code))).scalars()
        ]
    assert numbers == [1, 2]  # what was answered before the move is intact, nothing twice
    assert actions.count("session.started") == 1 and actions.count("session.moved") == 1
    assert await count(db_session, Result) == 1


async def test_a_follow_up_under_way_moves_with_what_was_said(
    db_url: str, tmp_path: Path, db_session: Any
) -> None:
    """The owner dies while its follow-up to question 1 waits for an answer: the other worker
    asks that follow-up again (not the question, not the greeting), and the two attempts are one
    answer row."""
    with workers(db_url, tmp_path, 2, VIVA__EXAM__MAX_FOLLOWUPS="1") as procs:
        (a, proc_a), (b, _) = procs
        for host, proc in procs:
            await wait_for(f"http://{host}/ping", proc)
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"http://{a}/v1/sessions", json={**LAW, "student_id": "s"}, headers=AUTH
            )
            opened = await resp.json()
            code = opened["session_code"]
            s = Student(await http.ws_connect(stream_url(a, opened))).start()
            await answer(s, 1)  # the fake transcript names no keyword: a follow-up
            followup = await s.until("response.created", kind="followup")
            await s.until("response.done", response_id=followup["response_id"])

            async def followups_checkpointed() -> int:
                async with db_session() as db:
                    sess = (await db.execute(select(Session).filter_by(session_code=code))).one()
                progress = sess[0].progress or {}
                return int(progress.get("followups", 0) and len(progress.get("said", [])))

            await eventually(followups_checkpointed, 1)  # heard out: the answer stands
            first = s.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
            proc_a.popen.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc_a.popen.wait, 10)
            await s.closed(within=10)
            back = Student(await http.ws_connect(stream_url(b, opened))).start()
            assert (await back.until("session.created"))["resumed"] is True
            assert (await back.until("response.created"))["kind"] == "repeat"
            assert not back.of("exam.question") or back.of("exam.question")[0]["number"] == 1
            await answer(back, 1)
            second = back.of("conversation.item.input_audio_transcription.completed")[0]
            # The follow-up was used before the move: the examiner moves on, to question 2.
            assert (await back.until("response.created", count=2))["kind"] == "acknowledge"
            await back.until("exam.question", number=2)
            await back.event({"type": "session.end"})
            await back.until("session.ended")
            await eventually(lambda: count(db_session, Result), 1)
    async with db_session() as db:
        answers = (await db.execute(select(Answer))).scalars().all()
        evaluations = await count(db_session, Evaluation)
    assert [a.question_number for a in answers] == [1]
    assert answers[0].transcribed_text == f"{first} {second['transcript']}"
    assert evaluations == 1


async def test_students_reconnecting_anywhere_are_served_once(
    db_url: str, tmp_path: Path, db_session: Any
) -> None:
    """Three workers; three students each reconnect to a random worker after every answer
    (retrying another when told `session_elsewhere`) and finish a 12-question viva."""
    rng = random.Random(16)
    with workers(db_url, tmp_path, 3, VIVA__EXAM__TOTAL_QUESTIONS=str(QUESTIONS)) as procs:
        hosts = [host for host, _ in procs]
        for host, proc in procs:
            await wait_for(f"http://{host}/ping", proc)

        async def one(n: int) -> list[str]:
            async with aiohttp.ClientSession() as http:
                url = f"http://{rng.choice(hosts)}/v1/sessions"
                opened = await (
                    await http.post(url, json={**LAW, "student_id": f"s{n}"}, headers=AUTH)
                ).json()
                kinds: list[str] = []
                asked: list[list[int]] = []  # question numbers announced, per connection
                for number in range(1, QUESTIONS + 1):
                    while True:  # until a worker serves it: the owner, or anyone once it is free
                        s = Student(
                            await http.ws_connect(stream_url(rng.choice(hosts), opened))
                        ).start()
                        first = await s.until("session.created") if not await _refused(s) else None
                        if first is not None:
                            break
                        await asyncio.sleep(0.2)
                    await answer(s, number)
                    if number == QUESTIONS:
                        await s.until("exam.completed")
                    kinds += [e["kind"] for e in s.of("response.created")]
                    asked.append([q["number"] for q in s.of("exam.question")])
                    await s.ws.close()
                return kinds, asked

        all_kinds = await asyncio.gather(*(one(n) for n in range(3)))
        await eventually(lambda: count(db_session, Result), 3)
    for kinds, asked in all_kinds:
        assert kinds.count("greeting") == 1, kinds  # never from the greeting again
        flat = [n for numbers in asked for n in numbers]
        assert flat == sorted(flat) and set(flat) == set(range(1, QUESTIONS + 1)), asked
        assert all(len(numbers) == len(set(numbers)) for numbers in asked), asked
    async with db_session() as db:
        rows = (await db.execute(select(Answer.session_id, Answer.question_number))).all()
    assert len(rows) == 3 * QUESTIONS and len(set(rows)) == 3 * QUESTIONS  # none twice
    assert await count(db_session, Result) == 3
    assert await count(db_session, AuditLog, action="session.started") == 3


async def _refused(s: Student) -> bool:
    """Wait for the first event: True when it is the `session_elsewhere` refusal."""
    while not s.events:
        await asyncio.sleep(0.02)
        if s._reader is not None and s._reader.done():
            return True
    first = s.events[0]
    return first["type"] == "error" and first["code"] == "session_elsewhere"
