"""The RunPod handler on the real cpu-profile models, driven the way RunPod's local test server
drives it: one `python handler.py --rp_serve_api` process for the module (vLLM's warm-up is
the slow part), a migrated SQLite file, and `/runsync` jobs for every action and bad input.

`/runsync` answers when a job ends, so the `session` test runs its job in the background, finds
the announced session through the worker's own API, connects a student and completes a turn.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.db.helpers import API_KEY, AUTH, TOKEN_SECRET
from tests.db.student import Student, clip_pcm, silence
from tests.integration.conftest import CLIPS, ROOT, clips
from tests.integration.wer import wer
from worker.exam.probes import leaks
from worker.service.tokens import issue_token

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLIP = {c["file"]: c for c in clips()}
LAW = {"student_id": "rp-1", "college_type": "law", "scenario_id": "law_of_contract"}
START_S = 300  # vLLM's engine alone takes ~35 s on two cores; a loaded machine takes longer


@dataclass
class Worker:
    api: str  # RunPod's local API
    http: str  # the worker's own HTTP/WebSocket server
    ws_port: int
    db_path: Path
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.db_path)) as db:
            return db.execute(sql, args).fetchall()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    tmp = tmp_path_factory.mktemp("handler")
    api_port, ws_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIVA", "RUNPOD", "PORT"))}
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/viva.db",
        VIVA_API_KEY=API_KEY,
        VIVA_TOKEN_SECRET=TOKEN_SECRET,
        VIVA__WRITER__JOURNAL_DIR=str(tmp / "journal"),
        VIVA__SERVER__PORT=str(ws_port),
    )
    subprocess.run([sys.executable, "scripts/init_db.py"], cwd=ROOT, env=env, check=True)
    log = tmp / "worker.log"
    args = ["--rp_serve_api", "--rp_api_port", str(api_port), "--rp_api_host", "127.0.0.1"]
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "handler.py", *args], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    w = Worker(
        f"http://127.0.0.1:{api_port}",
        f"http://127.0.0.1:{ws_port}",
        ws_port,
        tmp / "viva.db",
        popen,
        log,
    )
    try:
        deadline = time.monotonic() + START_S
        while not (_up(f"{w.http}/ping") and _up(f"{w.api}/docs")):
            assert popen.poll() is None, f"worker exited:\n{w.tail()}"
            assert time.monotonic() < deadline, f"worker not up in {START_S} s:\n{w.tail()}"
            time.sleep(0.5)
        yield w
    finally:
        popen.send_signal(signal.SIGTERM)
        try:
            rc = popen.wait(60)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(10)
            raise
    assert rc == 0, w.tail()  # SIGTERM: sessions told, writer drained, models closed
    assert "Async Generator output" not in w.log.read_text()  # no tokens or audio in the log


async def runsync(w: Worker, job_input: Any) -> list[dict[str, Any]]:
    """The job's items; no time limit here: pytest's, or the session's own, bound it."""
    no_limit = aiohttp.ClientTimeout(total=None)
    async with (
        aiohttp.ClientSession(timeout=no_limit) as http,
        http.post(f"{w.api}/runsync", json={"input": job_input}) as resp,
    ):
        body = await resp.json()
    assert body.get("status") == "COMPLETED", f"{body}\n{w.tail()}"
    return list(body["output"])


def b64_clip(name: str) -> str:
    return base64.b64encode((CLIPS / name).read_bytes()).decode()


def question_id(w: Worker, number: int) -> int:
    ((qid,),) = w.rows(
        "SELECT id FROM question_banks WHERE college_type=? AND scenario_id=? AND "
        "question_number=?",
        LAW["college_type"],
        LAW["scenario_id"],
        number,
    )
    return int(qid)


def wait_rows(w: Worker, sql: str, *args: Any, want: int, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while (n := w.rows(sql, *args)[0][0]) < want:
        assert time.monotonic() < deadline, f"{sql}: {n} rows, want {want}"
        time.sleep(0.1)


async def test_health(worker: Worker) -> None:
    (health,) = await runsync(worker, {"action": "health"})
    assert health["status"] == "ok" and health["profile"] == "cpu"
    assert set(health["models"]["models"]) == {"vad", "asr", "llm", "tts", "eot"}
    assert health["models"]["models"]["llm"]["backend"] == "vllm"
    assert health["database"]["dialect"] == "sqlite" and health["database"]["writer"]["healthy"]
    assert health["ws_base"] == f"ws://127.0.0.1:{worker.ws_port}"


async def test_evaluate_a_recorded_answer(worker: Worker) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{worker.http}/v1/sessions", json=LAW, headers=AUTH)
        code = (await resp.json())["session_code"]
    job = {
        "action": "evaluate",
        "audio_b64": b64_clip("law_contract.wav"),
        "question_id": question_id(worker, 1),
        "session_code": code,
    }
    (item,) = await runsync(worker, job)
    assert "error" not in item, item
    heard = item["transcript"]["text"]
    assert wer([CLIP["law_contract.wav"]["text"]], [heard]) <= 0.2, heard
    evaluation = item["evaluation"]
    assert evaluation["evaluator_type"] in ("hybrid", "keyword_match")
    assert 0 <= evaluation["score_obtained"] <= evaluation["max_score"] == 10
    assert {"offer", "acceptance", "consideration"} <= set(evaluation["matched_keywords"])
    reply = item["reply"]
    assert reply["text"] and reply["kind"] in ("acknowledge", "followup")
    with wave.open(io.BytesIO(base64.b64decode(reply["audio_b64"]))) as wav:
        assert wav.getframerate() == reply["sample_rate"] and wav.getnframes() > 0.3 * 22050
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    assert np.abs(samples).max() > 1000  # speech, not silence
    assert set(item["timings_ms"]) >= {"decode", "asr", "evaluate", "tts", "total"}
    answer_id = item["persisted"]["answer_id"]
    wait_rows(worker, "SELECT count(*) FROM evaluations WHERE answer_id=?", answer_id, want=1)
    ((text,),) = worker.rows("SELECT transcribed_text FROM answers WHERE id=?", answer_id)
    assert text == heard
    print("evaluate timings ms:", item["timings_ms"])


async def test_evaluate_text_against_given_keywords(worker: Worker) -> None:
    job = {
        "action": "evaluate",
        "text": "A wing stalls when the angle of attack is too large.",
        "question_text": "Why does a wing stall?",
        "expected_keywords": ["angle of attack", "airflow separation", "lift"],
    }
    (item,) = await runsync(worker, job)
    assert item["transcript"] == {
        "text": job["text"],
        "source": "text",
        "confidence": 1.0,
        "duration_s": 0.0,
    }
    assert item["evaluation"]["matched_keywords"] == ["angle of attack"]
    assert item["evaluation"]["missing_keywords"] == ["airflow separation", "lift"]
    # A follow-up that probes without naming what is missing.
    assert item["reply"]["kind"] == "followup" and item["reply"]["text"]
    assert not leaks(item["reply"]["text"], ["airflow separation", "lift"])
    assert item["persisted"] is None


async def test_viva_of_three_recorded_answers(worker: Worker) -> None:
    names = ["law_contract.wav", "law_negligence.wav", "medicine_antibiotics.wav"]
    job = {**LAW, "action": "viva", "answers": [{"audio_b64": b64_clip(n)} for n in names]}
    items = await runsync(worker, job)
    assert [i.get("type") for i in items] == ["question", "question", "question", "result"], items
    for item, name in zip(items, names, strict=False):
        assert wer([CLIP[name]["text"]], [item["transcript"]["text"]]) <= 0.2, item
        assert item["evaluation"]["max_score"] == 10
    result = items[-1]
    assert result["stored"] and result["status"] == "completed"
    assert result["result"]["max_score"] == 30 and result["result"]["grade"] in "ABCDF"
    code = result["session_code"]
    ((sid, status, answered),) = worker.rows(
        "SELECT id, status, questions_answered FROM sessions WHERE session_code=?", code
    )
    assert status == "completed" and answered == 3
    assert worker.rows("SELECT count(*) FROM answers WHERE session_id=?", sid) == [(3,)]
    assert worker.rows("SELECT count(*) FROM evaluations WHERE session_id=?", sid) == [(3,)]
    assert worker.rows("SELECT count(*) FROM results WHERE session_id=?", sid) == [(1,)]


async def test_session_job_serves_a_realtime_turn(worker: Worker) -> None:
    async with aiohttp.ClientSession() as http:
        earlier = await _pending(http, worker)  # other tests' sessions are pending too
        job = asyncio.ensure_future(runsync(worker, {**LAW, "action": "session", "timeout_s": 600}))
        code = await _announced(http, worker, job, earlier)
        token = issue_token(code, TOKEN_SECRET, 600)
        ws = await http.ws_connect(
            f"ws://127.0.0.1:{worker.ws_port}/v1/sessions/{code}/stream?token={token}"
        )
        student = Student(ws).start()
        await student.until("response.done", count=2, within=120)  # greeting, question 1
        await student.send(clip_pcm("law_contract.wav") + silence(1.5))
        heard = await student.until("conversation.item.input_audio_transcription.completed")
        assert wer([CLIP["law_contract.wav"]["text"]], [heard["transcript"]]) <= 0.2, heard
        reply = await student.until("response.done", count=3, within=120)
        assert reply["latency_ms"] is not None
        await student.event({"type": "session.end"})
        assert (await student.until("session.ended", within=120))["reason"] == "terminated"
        await student.closed()
    items = await asyncio.wait_for(job, 60)
    opened, final = items[0], items[-1]
    assert opened["type"] == "session.opened" and opened["code"] == code
    assert opened["ws_url"].startswith(f"ws://127.0.0.1:{worker.ws_port}/v1/sessions/{code}/")
    assert any(i["type"] == "session.update" and i["answered"] == 1 for i in items)
    assert final["type"] == "session.ended" and final["reason"] == "ended" and final["connected"]
    session = final["session"]
    assert session["status"] == "terminated" and len(session["answers"]) == 1
    assert session["answers"][0]["evaluation"] is not None and session["result"] is not None
    print("session turn latency ms:", reply["latency_ms"])


async def _pending(http: aiohttp.ClientSession, w: Worker) -> set[str]:
    async with http.get(f"{w.http}/v1/sessions?status=pending", headers=AUTH) as resp:
        return {s["session_code"] for s in (await resp.json())["sessions"]}


async def _announced(
    http: aiohttp.ClientSession, w: Worker, job: asyncio.Future[Any], earlier: set[str]
) -> str:
    """The session the job opened: the new pending one."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert not job.done(), job.result()
        new = await _pending(http, w) - earlier
        if new:
            (code,) = new
            return code
        await asyncio.sleep(0.1)
    raise AssertionError(f"the session job announced nothing:\n{w.tail()}")


def _long_wav(seconds: float) -> str:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(int(32000 * seconds)))
    return base64.b64encode(out.getvalue()).decode()


async def test_bad_jobs_yield_typed_errors_and_the_worker_goes_on(worker: Worker) -> None:
    q1 = question_id(worker, 1)
    not_audio = base64.b64encode(json.dumps({"not": "audio"}).encode()).decode()
    bad = [
        ({"college_type": "law"}, "missing_action"),
        ({"action": "transcribe"}, "unknown_action"),
        (
            {"action": "evaluate", "audio_b64": "***not base64***", "question_id": q1},
            "invalid_base64",
        ),
        ({"action": "evaluate", "audio_b64": not_audio, "question_id": q1}, "invalid_audio"),
        ({"action": "evaluate", "audio_b64": _long_wav(125), "question_id": q1}, "audio_too_large"),
        ({**LAW, "action": "session", "college_type": "wizardry"}, "unknown_college_type"),
        ({"action": "evaluate", "text": "an offer", "question_id": 987654321}, "unknown_question"),
    ]
    for job_input, code in bad:
        items = await runsync(worker, job_input)
        assert items == [{"error": {"code": code, "message": items[0]["error"]["message"]}}]
        (good,) = await runsync(worker, {"action": "evaluate", "text": "offer", "question_id": q1})
        assert good["type"] == "evaluation", good
    (health,) = await runsync(worker, {"action": "health"})
    assert health["status"] == "ok"
    assert worker.popen.poll() is None
