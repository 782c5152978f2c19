"""Browser tests: the real cpu-profile worker in a subprocess, Debian's headless Chromium.

One worker serves every test of the session (vLLM takes ~30-60 s to warm); each test launches
its own Chromium because the fake microphone's file is a launch flag. Playwright drives the
system browser (`executable_path`), so `playwright install` is never needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session as OrmSession

from core.config import DatabaseConfig
from db.setup import migrate_and_seed
from db.tables import Answer
from db.tables import Session as VivaSession

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "tests" / "data" / "clips"
SCREENSHOTS = ROOT / "results" / "screenshots"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
API_KEY = "browser-test-api-key"
WARM_UP_SECONDS = 300  # vLLM's engine alone takes 30-60 s on a 2-core machine
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--use-fake-device-for-media-stream",
]
# Settings for the worker under test, on top of config.yaml's cpu profile. The nudge comes
# late so that it never talks over a clip the fake microphone has not reached yet.
WORKER_ENV = {
    "VIVA_PROFILE": "cpu",
    "VIVA__TURN__NUDGE_AFTER_SECONDS": "120",
    "HF_HUB_OFFLINE": "1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Worker:
    base_url: str
    db_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def create_session(self, college_type: str, scenario_id: str, student: str) -> dict[str, Any]:
        """`POST /v1/sessions` with the API key, as the exam platform does."""
        body = {"student_id": student, "college_type": college_type, "scenario_id": scenario_id}
        request = urllib.request.Request(
            f"{self.base_url}/v1/sessions",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201
            created: dict[str, Any] = json.load(response)
        return created

    def link(self, created: dict[str, Any]) -> str:
        """The link a student is given: the page, with the session's code and token."""
        return f"{self.base_url}/?code={created['session_code']}&token={created['token']}"

    def answers(self, code: str) -> list[Answer]:
        """The session's answer rows, read straight from the SQLite file."""
        engine = create_engine(f"sqlite:///{self.db_path}")
        try:
            with OrmSession(engine) as db:
                rows = db.scalars(
                    select(Answer)
                    .join(VivaSession, Answer.session_id == VivaSession.id)
                    .where(VivaSession.session_code == code)
                    .order_by(Answer.id)
                ).all()
                db.expunge_all()
                return list(rows)
        finally:
            engine.dispose()


def _wait_ready(worker: Worker, deadline: float) -> None:
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            pytest.fail(f"the worker exited with {worker.proc.returncode}:\n{worker.log_tail()}")
        try:
            with urllib.request.urlopen(f"{worker.base_url}/ping", timeout=5) as response:
                if response.status == 200:  # 204 while the models warm
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"the worker was not ready in {WARM_UP_SECONDS} s:\n{worker.log_tail()}")


@pytest.fixture(scope="session")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """The real cpu-profile worker (Silero, faster-whisper, vLLM, Piper) on a fresh SQLite file."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure_package.sh chromium {CHROMIUM}")
    tmp = tmp_path_factory.mktemp("browser_worker")
    db_path = tmp / "viva.db"
    db_url = f"sqlite+aiosqlite:///{db_path}"
    asyncio.run(migrate_and_seed(DatabaseConfig(url=db_url, connect_attempts=1)))
    port = _free_port()
    env = {
        **os.environ,
        **WORKER_ENV,
        "DATABASE_URL": db_url,
        "PORT": str(port),
        "VIVA_API_KEY": API_KEY,
        "VIVA__WRITER__JOURNAL_DIR": str(tmp / "journal"),
    }
    log_path = tmp / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.browser.serve"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(f"http://127.0.0.1:{port}", db_path, log_path, proc)
    try:
        _wait_ready(worker, time.monotonic() + WARM_UP_SECONDS)
        yield worker
    finally:
        proc.send_signal(signal.SIGTERM)  # graceful: drains the writer
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def playwright() -> Iterator[Any]:
    # Per test, not per session: while Playwright's sync API is open it leaves an event loop
    # marked running in the main thread, and every asyncio test after it would fail to start.
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        yield p


@dataclass
class Launched:
    """One Chromium with its context and page, and what the page logged."""

    browser: Any
    context: Any
    page: Any
    console: list[str] = field(default_factory=list)


@pytest.fixture
def launch(playwright: Any) -> Iterator[Callable[..., Launched]]:
    """Start Chromium with a fake microphone playing `audio` (or a beep when None), granting
    the microphone when `grant_mic` (Chromium's fake prompt accepts it) or denying it."""
    opened: list[Launched] = []

    def _launch(audio: Path | None = None, grant_mic: bool = True) -> Launched:
        args = list(CHROMIUM_ARGS)
        if grant_mic:
            args.append("--use-fake-ui-for-media-stream")
        if audio is not None:
            # %noloop: play the file once, then silence (Chromium loops it otherwise).
            args.append(f"--use-file-for-fake-audio-capture={audio}%noloop")
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=args
        )
        context = browser.new_context(
            permissions=["microphone"] if grant_mic else [],
            viewport={"width": 1100, "height": 900},
        )
        page = context.new_page()
        launched = Launched(browser, context, page)
        page.on("console", lambda msg: launched.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: launched.console.append(f"pageerror: {exc}"))
        opened.append(launched)
        return launched

    yield _launch
    for launched in opened:
        launched.browser.close()


def speech_wav(tmp_path: Path, clip: str, lead_s: float, tail_s: float) -> Path:
    """The clip with `lead_s` of silence before it and `tail_s` after, as a 16 kHz PCM16 WAV."""
    with wave.open(str(CLIPS / clip)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    out = np.concatenate(
        [np.zeros(int(lead_s * 16000), "<i2"), pcm, np.zeros(int(tail_s * 16000), "<i2")]
    )
    path = tmp_path / f"mic_{Path(clip).stem}.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(out.tobytes())
    return path


def clip_text(name: str) -> str:
    entries = json.loads((CLIPS / "clips.json").read_text())
    return next(str(c["text"]) for c in entries if c["file"] == name)
