"""Listening like an examiner, on the real cpu-profile models over the real WebSocket.

- An answer with a 900 ms thinking pause after a complete first sentence is stored as ONE answer
  with both sentences: with the viva turn policy (which waits the pause out), and with a fixed
  500 ms silence that ends the turn inside the pause (the examiner starts replying, the student
  goes on, the reply is taken back and the continuation joins the answer).
- A polite ten-word "I'm sorry, I don't know the answer to that one." moves on at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from core.config import DatabaseConfig, load_config, replace_settings
from db.engine import create_engine, sessionmaker
from db.queries.configuration import set_setting
from db.setup import migrate_and_seed
from db.tables import Answer, Evaluation, Session
from models.hub import Hub
from models.silero import SileroVAD
from tests.db.helpers import API_KEY, AUTH, TOKEN_SECRET
from tests.db.student import FRAME, Student, clip_pcm, silence
from tests.integration.conftest import ROOT, clips
from tests.integration.wer import wer
from worker.exam.flow import MOVE_ON
from worker.http.server import build_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLIP = {c["name"]: c for kind in ("pause", "intent") for c in clips(kind)}
PAUSED = CLIP["medicine_insulin_pause"]
DONT_KNOW = CLIP["dont_know_polite"]


async def _stream(student: Student, answers: asyncio.Queue[bytes]) -> None:
    """Real-time audio forever: the next answer when there is one, silence otherwise."""
    start, n, pending = time.monotonic(), 0, b""
    while True:
        if not pending and not answers.empty():
            pending = answers.get_nowait()
        frame, pending = (pending[:FRAME], pending[FRAME:]) if pending else (silence(0.032), b"")
        await student.ws.send_bytes(frame)
        n += 1
        await asyncio.sleep(max(0.0, start + n * 0.032 - time.monotonic()))


async def _viva(client: TestClient, script: list[str], until_question: int) -> tuple[Student, str]:
    """Answer each question with the next clip of `script`; stop once `until_question` has
    been asked and heard out."""
    body = {"student_id": "listen", "college_type": "law", "scenario_id": "law_of_contract"}
    created = await (await client.post("/v1/sessions", json=body, headers=AUTH)).json()
    code, token = created["session_code"], created["token"]
    student = Student(await client.ws_connect(f"/v1/sessions/{code}/stream?token={token}"))
    student.start()
    answers: asyncio.Queue[bytes] = asyncio.Queue()
    streamer = asyncio.ensure_future(_stream(student, answers))
    try:
        asked: dict[str, int] = {}  # question response id -> question number
        handled: set[str] = set()
        deadline = time.monotonic() + 240
        while True:
            assert time.monotonic() < deadline, f"not done in 240 s: {student.types()}"
            numbers = [e["number"] for e in student.of("exam.question")]
            for e in student.of("response.created"):
                if e["kind"] == "question" and e["response_id"] not in asked:
                    asked[e["response_id"]] = numbers[-1]
            for e in student.of("response.done"):
                number = asked.get(e["response_id"])
                if number is None or e["response_id"] in handled:
                    continue
                handled.add(e["response_id"])
                if number >= until_question:
                    return student, code
                if number <= len(script):
                    await answers.put(clip_pcm(script[number - 1]))
            await asyncio.sleep(0.05)
    finally:
        streamer.cancel()


async def _answers(db_url: str, code: str) -> tuple[list[Answer], list[Evaluation]]:
    engine = create_engine(DatabaseConfig(url=db_url))
    try:
        async with sessionmaker(engine)() as db:
            sess = (await db.execute(select(Session).filter_by(session_code=code))).scalar_one()
            rows = await db.execute(select(Answer).filter_by(session_id=sess.id))
            evals = await db.execute(select(Evaluation).filter_by(session_id=sess.id))
            return list(rows.scalars()), list(evals.scalars())
    finally:
        await engine.dispose()


async def _eventually_answers(db_url: str, code: str, count: int) -> list[Answer]:
    deadline = time.monotonic() + 30
    while True:
        rows, evals = await _answers(db_url, code)
        if len(rows) >= count and len(evals) >= count:
            return sorted(rows, key=lambda a: a.question_number)
        assert time.monotonic() < deadline, [a.transcribed_text for a in rows]
        await asyncio.sleep(0.2)


async def _set_live(db_url: str, key: str, value: Any) -> None:
    engine = create_engine(DatabaseConfig(url=db_url))
    try:
        async with sessionmaker(engine)() as db, db.begin():
            await set_setting(db, key, value)
    finally:
        await engine.dispose()


def _config(db_url: str, tmp_path: Any, **settings: Any) -> Any:
    return replace_settings(
        load_config(ROOT / "config.yaml", {}),
        {
            "database.url": db_url,
            "server.api_key": API_KEY,
            "server.token_secret": TOKEN_SECRET,
            "writer.journal_dir": str(tmp_path / "journal"),
            "exam.total_questions": 3,
            "exam.max_followups": 0,  # one clip per question: no follow-up to answer
            "exam.acknowledgement": "fixed",
            **settings,
        },
    )


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("policy", ["viva", "silence"])
async def test_a_thinking_pause_keeps_the_whole_answer(
    hub: Hub, empty_db_url: str, tmp_path: Any, policy: str
) -> None:
    """`viva`: the policy waits the pause out. `silence`: a fixed 500 ms silence ends the turn
    inside the 900 ms pause, the examiner starts replying, and the continuation takes it back."""
    await migrate_and_seed(DatabaseConfig(url=empty_db_url, connect_attempts=1))
    # The first sentence (2.8 s) is long enough to be answered on its own: in the `silence` run
    # the examiner really replies inside the pause. (A live setting: the table wins over config.)
    await _set_live(empty_db_url, "min_answer_duration_seconds", 1)
    cfg = _config(empty_db_url, tmp_path, **{"turn.policy": policy, "turn.end_silence_ms": 500})
    async with TestClient(TestServer(build_app(cfg, hub=hub))) as client:
        script = [PAUSED["file"], DONT_KNOW["file"]]
        student, code = await _viva(client, script, until_question=3)
        await student.stop()
    heard = student.of("conversation.item.input_audio_transcription.completed")
    first = [h for h in heard if h["question_number"] == 1]
    assert first and wer([PAUSED["text"]], [first[-1]["transcript"]]) <= 0.2, heard
    cancelled = student.of("response.cancelled")
    if policy == "silence":  # the examiner did start inside the pause, and was stopped
        assert any(c["reason"] == "barge_in" for c in cancelled), student.types()
        assert [q["number"] for q in student.of("exam.question")][:3] == [1, 2, 1]
    rows = await _eventually_answers(empty_db_url, code, 2)
    assert [a.question_number for a in rows] == [1, 2]  # one row per question, none skipped
    assert wer([PAUSED["text"]], [rows[0].transcribed_text]) <= 0.2, rows[0].transcribed_text
    assert wer([DONT_KNOW["text"]], [rows[1].transcribed_text]) <= 0.2, rows[1].transcribed_text


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
async def test_a_polite_dont_know_moves_on_at_once(
    hub: Hub, empty_db_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await migrate_and_seed(DatabaseConfig(url=empty_db_url, connect_attempts=1))
    cfg = _config(empty_db_url, tmp_path)
    # The gpu profile's VAD, batched across sessions (models.vad.batch_ms): same turns.
    batched = SileroVAD(batch_ms=8)
    monkeypatch.setattr(hub, "vad", batched)
    async with TestClient(TestServer(build_app(cfg, hub=hub))) as client:
        student, _ = await _viva(client, [DONT_KNOW["file"]], until_question=2)
        await student.stop()
    stopped = student.of("input_audio_buffer.speech_stopped")
    assert len(stopped) == 1  # one turn: not held, not split
    replies = [e for e in student.of("response.created") if e["kind"] != "greeting"]
    kinds = [e["kind"] for e in replies]
    assert kinds[:3] == ["question", "acknowledge", "question"], kinds
    assert "nudge" not in kinds
    said = " ".join(e["delta"] for e in student.of("response.audio_transcript.delta"))
    assert MOVE_ON in said
    done = {e["response_id"]: e for e in student.of("response.done")}
    assert done[replies[1]["response_id"]]["latency_ms"] is not None
    assert batched.batcher is not None and batched.batcher.calls > 0
