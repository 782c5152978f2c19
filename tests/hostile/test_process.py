"""Hostile conditions that need a real worker process: start-up with the shipped secrets, a
socket fed audio at 50x real time (the process's memory), a request path that tries to forge a
log line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.db.helpers import API_KEY, AUTH
from tests.db.student import Student, tone
from tests.db.test_handler_modes import free_port, wait_for, worker, worker_env
from tests.hostile.conftest import LAW

ROOT = Path(__file__).resolve().parents[2]


def _start(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "VIVA__WRITER__JOURNAL_DIR": str(tmp_path / "journal"),
        "PORT": str(free_port()),  # never bound: start-up fails before the site starts
        **env,
    }
    return subprocess.run(
        [sys.executable, "handler.py", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("mode", [["--serve"], []])
def test_a_public_worker_with_the_default_key_does_not_start(
    tmp_path: Path, mode: list[str]
) -> None:
    done = _start(tmp_path, *mode, VIVA_PROFILE="gpu")  # listens on 0.0.0.0
    assert done.returncode == 2, done.stderr
    assert "VIVA_API_KEY" in done.stderr


def test_a_public_worker_needs_its_own_token_secret(tmp_path: Path) -> None:
    key = "k" * 32
    done = _start(tmp_path, "--serve", VIVA_PROFILE="gpu", VIVA_API_KEY=key)
    assert done.returncode == 2 and "VIVA_TOKEN_SECRET" in done.stderr
    same = _start(tmp_path, "--serve", VIVA_PROFILE="gpu", VIVA_API_KEY=key, VIVA_TOKEN_SECRET=key)
    assert same.returncode == 2 and "must differ" in same.stderr


@pytest.mark.slow
@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
async def test_audio_at_50x_real_time(db_url: str, tmp_path: Path) -> None:
    """20 s of audio at 50x real time (one 1 s frame every 20 ms): the session lives, is told
    `rate_limited`, and the worker's memory grows by less than 5 MB."""
    port = free_port()
    env = worker_env(db_url, tmp_path, PORT=str(port))
    with worker(["--serve"], env, tmp_path / "worker.log") as proc:
        base = f"http://127.0.0.1:{port}"
        await wait_for(f"{base}/ping", proc)
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"{base}/v1/sessions", json={**LAW, "student_id": "s"}, headers=AUTH
            )
            opened = await resp.json()
            s = Student(await http.ws_connect(opened["ws_url"])).start()
            await s.until("response.done", count=2)  # greeting, question 1
            frame = tone(1.0)  # speech to the fake VAD: the answer's buffer is what grows
            for _ in range(50):  # warm: buffers and allocator pools as in steady use
                await s.ws.send_bytes(frame)
                await asyncio.sleep(0.02)
            await asyncio.sleep(2.0)
            before = psutil.Process(proc.popen.pid).memory_info().rss
            loop = asyncio.get_running_loop()
            start = loop.time()
            for n in range(1000):
                await s.ws.send_bytes(frame)
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - loop.time()))
            await s.event({"type": "ping", "event_id": "after"})
            await s.until("pong")
            grown = psutil.Process(proc.popen.pid).memory_info().rss - before
            print(f"RSS growth under 50x audio: {grown / 2**20:.2f} MB")
            assert s.of("error") and {e["code"] for e in s.of("error")} == {"rate_limited"}
            assert grown < 5 * 2**20, f"RSS grew {grown / 2**20:.1f} MB"
            await s.event({"type": "session.end"})
            completed = await s.until("exam.completed")
            assert completed["status"] == "terminated"
            await s.ws.close()


@pytest.mark.slow
@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
async def test_a_crlf_in_the_path_cannot_forge_a_log_line(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "worker.log"
    with worker(["--serve"], worker_env(db_url, tmp_path, PORT=str(port)), log) as proc:
        await wait_for(f"http://127.0.0.1:{port}/ping", proc)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /x%0d%0aFORGED%20admin%20login HTTP/1.1\r\nHost: h\r\n\r\n")
        await writer.drain()
        assert b" 404 " in (await asyncio.wait_for(reader.read(4096), 10)).split(b"\r\n")[0]
        writer.close()
        await asyncio.sleep(0.5)
        text = log.read_text(errors="replace")
    assert "FORGED" in text, text[-2000:]  # the request was logged...
    assert not any(line.startswith("FORGED") for line in text.splitlines())  # ...on one line
    assert "\\x0d\\x0aFORGED" in text
    assert json.dumps(API_KEY) not in text
