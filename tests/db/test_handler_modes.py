"""`python handler.py` as a process, with fake models and a real SQLite database: SIGTERM in
`--serve` mode and in serverless mode (`--rp_serve_api`) with a live session and writes still
pending, PORT/PORT_HEALTH, a failed warm-up, and the local test_input.json run.

Writes are held back (`writer.batch_interval_ms` of a minute) so that at SIGTERM the answers are
accepted but not committed: the shutdown itself must put them in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from db.tables import Answer, Evaluation, Result, Session
from tests.db.helpers import API_KEY, AUTH, FAST_AUDIO_BURST_S, TOKEN_SECRET
from tests.db.student import Student, clip_pcm, silence
from worker.service.tokens import issue_token, verify_token

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)]
ROOT = Path(__file__).resolve().parents[2]
SHUTDOWN_S = 8  # server.shutdown_timeout_seconds for these workers
LAW = {"student_id": "s-9", "college_type": "law", "scenario_id": "law_of_contract"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(db_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("VIVA", "RUNPOD", "PORT"))}
    keep.pop("DATABASE_URL", None)
    return {
        **keep,
        "VIVA_PROFILE": "fake",
        "DATABASE_URL": db_url,
        "VIVA_API_KEY": API_KEY,
        "VIVA_TOKEN_SECRET": TOKEN_SECRET,
        "VIVA__SERVER__AUDIO_BURST_SECONDS": str(FAST_AUDIO_BURST_S),
        "VIVA__WRITER__JOURNAL_DIR": str(tmp_path / "journal"),
        "VIVA__WRITER__BATCH_INTERVAL_MS": "60000",
        "VIVA__SERVER__SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_S),
        "VIVA__MODELS__TTS__FAKE_CHARS_PER_S": "120",  # ~0.6 s per question, not ~5 s
        **extra,
    }


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def terminate_and_wait(self, within: float) -> tuple[int, float]:
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            rc = self.popen.wait(within)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise AssertionError(f"no exit within {within} s:\n{self.tail()}") from None
        return rc, time.monotonic() - started


@contextlib.contextmanager
def worker(args: list[str], env: dict[str, str], log: Path) -> Iterator[Proc]:
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "handler.py", *args], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    proc = Proc(popen, log)
    try:
        yield proc
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(10)


async def wait_for(url: str, proc: Proc, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while True:
            assert proc.popen.poll() is None, f"worker exited:\n{proc.tail()}"
            assert time.monotonic() < deadline, f"{url} not up in {within} s:\n{proc.tail()}"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def student_at(url: str) -> AsyncIterator[Student]:
    async with aiohttp.ClientSession() as http:
        student = Student(await http.ws_connect(url)).start()
        yield student


async def answer_once(student: Student) -> None:
    """Question 1 heard, one answer given, the examiner's reply heard: the answer's rows are
    enqueued (and, with the minute-long batch interval, not committed)."""
    await student.until("exam.question", number=1)
    await student.until("response.done", count=2)  # greeting, question 1
    await student.send(clip_pcm() + silence(1.0), realtime=False)
    await student.until("conversation.item.input_audio_transcription.completed")
    await student.until("response.done", count=3)


async def sigterm_after_one_answer(proc: Proc, student: Student, db_session: Any) -> None:
    """One answer accepted and not yet committed, then SIGTERM: the student is told the server
    is shutting down, and the process exits 0 within the shutdown bound."""
    await answer_once(student)
    assert await count(db_session, Answer) == 0  # accepted, not yet committed
    rc, took = await asyncio.to_thread(proc.terminate_and_wait, SHUTDOWN_S + 10)
    ended = await student.until("session.ended")
    assert ended["reason"] == "server_shutdown"
    assert rc == 0, proc.tail()
    assert took < SHUTDOWN_S + 5, took


async def count(db_session: Any, model: Any) -> int:
    async with db_session() as db:
        return int((await db.execute(select(func.count()).select_from(model))).scalar_one())


async def check_rows(db_session: Any, code: str) -> None:
    async with db_session() as db:
        sess = (await db.execute(select(Session).filter_by(session_code=code))).scalar_one()
    assert sess.status == "terminated"
    assert await count(db_session, Answer) == 1
    assert await count(db_session, Evaluation) == 1
    assert await count(db_session, Result) == 1


async def test_serve_mode_sigterm(db_url: str, tmp_path: Path, db_session: Any) -> None:
    port, health = free_port(), free_port()
    env = worker_env(db_url, tmp_path, PORT=str(port), PORT_HEALTH=str(health))
    with worker(["--serve"], env, tmp_path / "serve.log") as proc:
        await wait_for(f"http://127.0.0.1:{health}/ping", proc)  # PORT_HEALTH answers /ping
        async with aiohttp.ClientSession() as http:
            resp = await http.post(f"http://127.0.0.1:{port}/v1/sessions", json=LAW, headers=AUTH)
            assert resp.status == 201, await resp.text()
            created = await resp.json()
        async with student_at(created["ws_url"]) as student:
            await sigterm_after_one_answer(proc, student, db_session)
            assert await student.closed() == 1001
    await check_rows(db_session, created["session_code"])


async def test_serverless_sigterm_ends_session_job(
    db_url: str, tmp_path: Path, db_session: Any
) -> None:
    api, ws_port = free_port(), free_port()
    env = worker_env(db_url, tmp_path, VIVA__SERVER__PORT=str(ws_port))
    args = ["--rp_serve_api", "--rp_api_port", str(api), "--rp_api_host", "127.0.0.1"]
    with worker(args, env, tmp_path / "serverless.log") as proc:
        await wait_for(f"http://127.0.0.1:{ws_port}/ping", proc)
        await wait_for(f"http://127.0.0.1:{api}/docs", proc)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            job = asyncio.ensure_future(
                http.post(
                    f"http://127.0.0.1:{api}/runsync", json={"input": {**LAW, "action": "session"}}
                )
            )
            # /runsync answers only when the job ends, so the test finds the announced session
            # through the worker's API and signs its own token for it.
            code = await pending_session(http, ws_port, proc)
            token = issue_token(code, TOKEN_SECRET, 600)
            url = f"ws://127.0.0.1:{ws_port}/v1/sessions/{code}/stream?token={token}"
            async with student_at(url) as student:
                await sigterm_after_one_answer(proc, student, db_session)
            resp = await asyncio.wait_for(job, 10)
            body = await resp.json()
    assert body["status"] == "COMPLETED", body
    items = body["output"]
    opened, final = items[0], items[-1]
    assert opened["type"] == "session.opened" and opened["code"] == code
    assert opened["ws_url"].startswith(f"ws://127.0.0.1:{ws_port}/v1/sessions/{code}/stream?")
    verify_token(opened["token"], code, TOKEN_SECRET)
    assert final["type"] == "session.ended" and final["reason"] == "server_shutdown"
    assert final["connected"] and final["session"]["status"] == "terminated"
    await check_rows(db_session, code)


async def pending_session(http: aiohttp.ClientSession, port: int, proc: Proc) -> str:
    deadline = time.monotonic() + 30
    url = f"http://127.0.0.1:{port}/v1/sessions?status=pending"
    while time.monotonic() < deadline:
        async with http.get(url, headers=AUTH) as resp:
            sessions = (await resp.json())["sessions"]
        if sessions:
            return str(sessions[0]["session_code"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"no pending session:\n{proc.tail()}")


@pytest.mark.parametrize("mode", ["serverless", "serve"])
def test_failed_warmup_exits_non_zero(db_url: str, tmp_path: Path, mode: str) -> None:
    env = worker_env(
        db_url,
        tmp_path,
        VIVA__SERVER__PORT=str(free_port()),
        VIVA__MODELS__LLM__BACKEND="vllm",
        VIVA__MODELS__LLM__MODEL="no-such-model",
    )
    args = ["--serve"] if mode == "serve" else []
    done = subprocess.run(
        [sys.executable, "handler.py", *args], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 1, done.stderr.decode()[-2000:]
    assert b"models failed to load" in done.stderr and b"no-such-model" in done.stderr


def test_local_run_executes_test_input(db_url: str, tmp_path: Path) -> None:
    env = worker_env(db_url, tmp_path, VIVA__SERVER__PORT=str(free_port()))
    done = subprocess.run(
        [sys.executable, "handler.py"], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    (item,) = [json.loads(line) for line in done.stdout.splitlines() if line.startswith(b"{")]
    assert item["type"] == "health" and item["status"] == "ok"
    bad = subprocess.run(
        [sys.executable, "handler.py", "--test_input", '{"input": {"action": "nope"}}'],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert json.loads(bad.stdout.splitlines()[-1])["error"]["code"] == "unknown_action"


class FakeRunPod:
    """The three RunPod endpoints a production worker talks to: job-take (one session job, then
    nothing), stream (items as the job yields them) and job-done (the aggregated output)."""

    def __init__(self, job_input: dict[str, Any]):
        self.job: dict[str, Any] | None = {"id": "job-1", "input": job_input}
        self.streamed: list[dict[str, Any]] = []
        self.done: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def app(self) -> Any:
        from aiohttp import web

        async def take(request: web.Request) -> web.Response:
            job, self.job = self.job, None
            if job is None:
                return web.Response(status=204)
            batch = "job-take-batch" in request.path
            return web.json_response([job] if batch else job)

        async def stop(_request: web.Request) -> web.Response:
            await asyncio.sleep(0.5)  # a long poll, briefly
            return web.Response(status=204)

        async def stream(request: web.Request) -> web.Response:
            self.streamed.append(json.loads(await request.text()))
            self.changed.set()
            return web.Response(text="ok")

        async def done(request: web.Request) -> web.Response:
            self.done.append(json.loads(await request.text()))
            self.changed.set()
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/job-take/{worker}", take)
        app.router.add_get("/job-take-batch/{worker}", take)
        app.router.add_get("/job-stop/{worker}", stop)
        app.router.add_post("/stream/{job}", stream)
        app.router.add_post("/done/{job}", done)
        return app

    async def until(self, check: Any, within: float = 30) -> None:
        async with asyncio.timeout(within):
            while not check():
                self.changed.clear()
                await self.changed.wait()


async def test_production_sigterm_with_a_fake_runpod(
    db_url: str, tmp_path: Path, db_session: Any
) -> None:
    """The real JobScaler path (RUNPOD_WEBHOOK_GET_JOB set) against a stand-in for RunPod:
    the session job streams its announcement, a student connects with it, SIGTERM ends it."""
    from aiohttp.test_utils import TestServer

    runpod = FakeRunPod({**LAW, "action": "session"})
    async with TestServer(runpod.app(), host="127.0.0.1") as fake:
        base = f"http://127.0.0.1:{fake.port}"
        env = worker_env(
            db_url,
            tmp_path,
            VIVA__SERVER__PORT=str(free_port()),
            RUNPOD_WEBHOOK_GET_JOB=f"{base}/job-take/$ID?gpu=none",
            RUNPOD_WEBHOOK_POST_OUTPUT=f"{base}/done/$ID?gpu=none",
            RUNPOD_WEBHOOK_POST_STREAM=f"{base}/stream/$ID?gpu=none",
            RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true",
            RUNPOD_SKIP_GPU_CHECK="true",
        )
        with worker([], env, tmp_path / "production.log") as proc:
            try:
                await runpod.until(lambda: runpod.streamed, within=60)
            except TimeoutError:
                raise AssertionError(f"no streamed item:\n{proc.tail()}") from None
            opened = runpod.streamed[0]["output"]
            assert opened["type"] == "session.opened"
            async with student_at(opened["ws_url"]) as student:
                await sigterm_after_one_answer(proc, student, db_session)
        assert len(runpod.done) == 1, runpod.done
        output = runpod.done[0]["output"]
        assert output[0] == opened and output[-1]["type"] == "session.ended"
        assert output[-1]["reason"] == "server_shutdown" and output[-1]["connected"]
        assert [s["output"] for s in runpod.streamed] == output
    await check_rows(db_session, opened["code"])


def test_sigterm_during_warmup_exits_zero(db_url: str, tmp_path: Path) -> None:
    env = worker_env(
        db_url,
        tmp_path,
        VIVA__SERVER__PORT=str(free_port()),
        VIVA__MODELS__LLM__FAKE_DELAY_MS="30000",  # the warm-up's first token
    )
    with worker([], env, tmp_path / "warmup.log") as proc:
        deadline = time.monotonic() + 30
        while b"WebSocket server on" not in proc.log.read_bytes():
            assert time.monotonic() < deadline and proc.popen.poll() is None, proc.tail()
            time.sleep(0.1)
        rc, took = proc.terminate_and_wait(20)
    assert rc == 0, proc.tail()
    assert took < 10, took
    assert "SIGTERM during warm-up" in proc.tail()
