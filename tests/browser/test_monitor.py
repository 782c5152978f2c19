"""The examiner monitor in headless Chromium against the real cpu-profile worker.

Students here are Python scripts over the session WebSocket (tests/db/student.py) on an event
loop in a thread of their own, so the test can drive them step by step while Playwright's
synchronous API watches the page. One answers question 1 with a speech clip (twice if the
examiner follows up) and moves to question 2, then ends early; another only stays connected.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.browser.conftest import API_KEY, SCREENSHOTS, Launched, Worker, clip_text
from tests.db.student import Student, clip_pcm, silence
from tests.integration.wer import wer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CLIP = "law_contract.wav"  # answers question 1 of law / law_of_contract
TURN_S = 180  # one real-model turn on a 2-core machine, with room to spare
_T = TypeVar("_T")


class Students:
    """An event loop in a thread for scripted students; `run()` waits for one of its steps."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="students", daemon=True)
        self.thread.start()
        self.http: aiohttp.ClientSession | None = None
        self.students: list[Student] = []

    def run(self, step: Coroutine[Any, Any, _T], timeout: float) -> _T:
        return asyncio.run_coroutine_threadsafe(step, self.loop).result(timeout)

    async def connect(self, created: dict[str, Any]) -> Student:
        if self.http is None:
            self.http = aiohttp.ClientSession()
        student = Student(await self.http.ws_connect(created["ws_url"])).start()
        self.students.append(student)
        await student.until("exam.question", number=1)
        return student

    async def _close(self) -> None:
        for student in self.students:
            if not student.ws.closed:
                await student.stop()
        if self.http is not None:
            await self.http.close()

    def close(self) -> None:
        self.run(self._close(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def students() -> Iterator[Students]:
    s = Students()
    yield s
    s.close()


async def answer_question_1(student: Student) -> None:
    """Answer with the clip until question 2 is asked (the examiner may follow up once)."""
    asked = await student.until("response.created", kind="question")
    for _ in range(3):
        await student.until("response.done", response_id=asked["response_id"], within=TURN_S)
        replies = len(student.of("response.created"))
        await student.send(clip_pcm(CLIP) + silence(1.5))
        asked = await student.until("response.created", count=replies + 1, within=TURN_S)
        if asked["kind"] != "followup":
            break
    await student.until("exam.question", number=2, within=TURN_S)


async def end(student: Student) -> None:
    await student.event({"type": "session.end"})
    await student.until("session.ended", within=60)


def _wait(page: Any, worker: Worker, expression: str, timeout_s: float, what: str) -> None:
    try:
        page.wait_for_function(expression, timeout=timeout_s * 1000, polling=200)
    except Exception as exc:
        seen = page.evaluate("() => window.monitorDebug")
        raise AssertionError(
            f"{what}: not within {timeout_s:g} s ({type(exc).__name__})\n"
            f"monitor: {seen}\nstatus: {page.locator('#status').inner_text()}\n"
            f"worker log:\n{worker.log_tail(40)}"
        ) from None


def _row(code: str) -> str:
    return f'#live-rows tr[data-code="{code}"]'


def test_monitor_follows_a_live_session_and_shows_a_finished_one(
    worker: Worker, launch: Callable[..., Launched], students: Students
) -> None:
    page = launch().page
    page.goto(f"{worker.base_url}/monitor")

    # A wrong key is refused with a clear message; the right one opens the live feed.
    page.get_by_label("API key").fill("not-the-key")
    page.get_by_role("button", name="Open the monitor").click()
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible", timeout=10_000)
    assert "401" in alert.inner_text() and "Wrong API key" in alert.inner_text()
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_role("button", name="Open the monitor").click()
    _wait(page, worker, "() => window.monitorDebug.events.includes('sessions')", 20, "the feed")

    answering = worker.create_session("law", "law_of_contract", "monitor-answering")
    waiting = worker.create_session("law", "law_of_contract", "monitor-waiting")
    code = answering["session_code"]
    student = students.run(students.connect(answering), timeout=90)
    students.run(students.connect(waiting), timeout=90)

    # Both appear live, pushed over the feed (one connection, no reloads).
    row = page.locator(_row(code))
    row.wait_for(timeout=20_000)
    page.locator(_row(waiting["session_code"])).wait_for(timeout=20_000)
    assert row.locator(".question .q").inner_text() == f"1 / {answering['total_questions']}"
    assert row.locator(".student .name").inner_text() == "monitor-answering"
    assert row.locator(".college").inner_text() == "Law"
    assert row.locator(".state").inner_text() == "Connected"

    students.run(answer_question_1(student), timeout=3 * TURN_S)
    expected = f"2 / {answering['total_questions']}"
    _wait(
        page,
        worker,
        f"() => document.querySelector('{_row(code)} .question .q')?.textContent === '{expected}'",
        20,
        "question 2 on the monitor",
    )
    assert page.evaluate("() => window.monitorDebug.opens") == 1
    latency = row.locator(".latency").inner_text()
    assert latency.endswith("ms") and float(latency[:-2]) > 0, latency
    assert row.locator("svg.sparkline circle.last").count() == 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "monitor_live.png"), full_page=True)

    # Ended: it leaves the live table and shows up among the finished sessions.
    students.run(end(student), timeout=90)
    _wait(page, worker, f"() => !document.querySelector('{_row(code)}')", 30, "the session gone")
    finished = page.locator(f'#finished button[data-code="{code}"]')
    finished.wait_for(timeout=30_000)
    assert "Terminated" in finished.inner_text()
    finished.click()
    _wait(
        page,
        worker,
        "() => document.getElementById('detail-grade').textContent !== ''"
        " && document.querySelectorAll('#detail-answers tr').length > 0",
        20,
        "the finished session's details",
    )
    assert page.locator("#detail-title").inner_text() == f"Session {code}"
    said = page.locator("#detail-answers tr .said").first.inner_text()
    assert wer([clip_text(CLIP)], [said]) <= 0.3, said
    assert page.locator("#detail-answers tr .qn").first.inner_text() == "1"
    assert page.locator("#detail-answers .feedback .badge").first.inner_text() in {
        "correct",
        "partial",
        "incorrect",
    }
    assert page.locator("#detail-pass").inner_text() in {"Passed", "Not passed"}
    page.screenshot(path=str(SCREENSHOTS / "monitor.png"), full_page=True)
    students.run(end(students.students[1]), timeout=90)
