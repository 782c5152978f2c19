"""The student page in headless Chromium against the real cpu-profile worker.

Chromium's fake microphone plays a committed speech clip into getUserMedia; the page captures
it through its AudioWorklet, streams it over the session WebSocket and plays the examiner's
reply. Waits are deadlines on what the page shows or counts (`window.vivaDebug`), never sleeps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import SCREENSHOTS, Launched, Worker, clip_text, speech_wav
from tests.integration.wer import wer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CLIP = "law_contract.wav"  # answers question 1 of law / law_of_contract
# The clip starts this long after the page opens the microphone, once the greeting and
# question 1 have been spoken (~12 s of audio); an earlier start would be a barge-in.
CLIP_LEAD_S = 22.0
TURN_TIMEOUT_MS = 120_000


def _debug(page: Any, field: str) -> Any:
    return page.evaluate(f"() => window.vivaDebug.{field}")


def _wait(launched: Launched, worker: Worker, expression: str, timeout_ms: int, what: str) -> None:
    """Wait until the page's `expression` is truthy; on timeout say what the page had seen."""
    try:
        launched.page.wait_for_function(expression, timeout=timeout_ms, polling=200)
    except Exception as exc:  # playwright's TimeoutError, or the page crashed
        events = _debug(launched.page, "events")
        statuses = _debug(launched.page, "statusLog")
        raise AssertionError(
            f"{what}: not within {timeout_ms / 1000:g} s ({type(exc).__name__})\n"
            f"events: {events}\nstatus: {statuses}\nconsole: {launched.console[-20:]}\n"
            f"worker log:\n{worker.log_tail(40)}"
        ) from None


def _open_link(launched: Launched, worker: Worker, created: dict[str, Any]) -> None:
    launched.page.goto(worker.link(created))
    launched.page.get_by_role("button", name="Start viva").click()


def _until_question_shown(launched: Launched, worker: Worker) -> None:
    _wait(
        launched,
        worker,
        "() => window.vivaDebug.events.includes('exam.question')",
        60_000,
        "question 1 shown",
    )


def test_one_full_turn_with_the_fake_microphone(
    worker: Worker, launch: Callable[..., Launched], tmp_path: Path
) -> None:
    mic = speech_wav(tmp_path, CLIP, lead_s=CLIP_LEAD_S, tail_s=4.0)
    launched = launch(audio=mic)
    page = launched.page
    created = worker.create_session("law", "law_of_contract", "browser-turn")
    started = time.monotonic()
    _open_link(launched, worker, created)

    _until_question_shown(launched, worker)
    assert page.locator("#question").inner_text().strip()
    assert "Question 1 of" in page.locator("#question-number").inner_text()

    # One full turn: the answer is heard, transcribed, and the examiner replies with a latency.
    _wait(
        launched,
        worker,
        "() => window.vivaDebug.latencies.length > 0",
        TURN_TIMEOUT_MS,
        "the examiner's reply to the clip",
    )
    turn_s = time.monotonic() - started
    said = page.locator("#transcript .line.student .text").first.inner_text()
    error_rate = wer([clip_text(CLIP)], [said])
    assert error_rate <= 0.2, f"page shows {said!r} for {clip_text(CLIP)!r} (WER {error_rate:.2f})"

    # The reply's audio arrived and went through the playback worklet.
    _wait(
        launched,
        worker,
        "() => window.vivaDebug.framesPlayed > 0 && !window.vivaDebug.playing",
        30_000,
        "the reply played out",
    )
    assert _debug(page, "bytesReceived") > 0
    assert _debug(page, "framesSent") > 0
    latency = _debug(page, "latencies")[0]
    # Math.round on the page: halves round up (Python's round() would take 2.5 to 2)
    assert page.locator("#latency").inner_text() == f"{math.floor(latency + 0.5)} ms"

    # The answer row is written behind the voice path: poll the database with a deadline.
    deadline = time.monotonic() + 60
    rows = worker.answers(created["session_code"])
    while not rows and time.monotonic() < deadline:
        time.sleep(0.25)
        rows = worker.answers(created["session_code"])
    assert rows, "no answer row in the database within 60 s"
    assert rows[0].question_number == 1
    assert wer([clip_text(CLIP)], [rows[0].transcribed_text or ""]) <= 0.2

    # End early: the result panel shows what was answered.
    page.get_by_role("button", name="End the viva").click()
    _wait(
        launched,
        worker,
        "() => !document.getElementById('result').hidden",
        60_000,
        "the result after ending",
    )
    assert page.locator("#result-grade").inner_text().startswith("Grade ")
    _wait(
        launched,
        worker,
        "() => window.vivaDebug.events.includes('session.ended')",
        30_000,
        "session.ended",
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "student.png"), full_page=True)
    print(
        f"turn completed {turn_s:.1f} s after start; turn latency {latency:.0f} ms; "
        f"transcript {said!r}"
    )


def test_denied_microphone_shows_its_message(
    worker: Worker, launch: Callable[..., Launched]
) -> None:
    launched = launch(grant_mic=False)
    created = worker.create_session("law", "law_of_contract", "browser-denied")
    _open_link(launched, worker, created)
    alert = launched.page.get_by_role("alert")
    alert.wait_for(state="visible", timeout=20_000)
    assert "Microphone access was denied" in alert.inner_text()
    assert _debug(launched.page, "connects") == 0  # nothing to stream: no session opened
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    launched.page.screenshot(path=str(SCREENSHOTS / "student_mic_denied.png"))


def test_dropped_connection_reconnects_and_resumes(
    worker: Worker, launch: Callable[..., Launched], tmp_path: Path
) -> None:
    silent = speech_wav(tmp_path, "silence_2s.wav", lead_s=0.0, tail_s=0.0)
    launched = launch(audio=silent)
    page = launched.page
    created = worker.create_session("law", "law_of_contract", "browser-drop")
    _open_link(launched, worker, created)
    _until_question_shown(launched, worker)
    question = page.locator("#question").inner_text()

    # The network goes away under a live session: the page says so and keeps trying.
    launched.context.set_offline(True)
    page.evaluate("() => window.vivaDebug.dropConnection()")
    _wait(
        launched,
        worker,
        "() => document.getElementById('status').textContent.includes('reconnecting')",
        10_000,
        "the connection-lost message",
    )
    assert page.locator("#indicator").get_attribute("data-state") == "offline"
    launched.context.set_offline(False)

    _wait(
        launched,
        worker,
        "() => document.getElementById('status').textContent.startsWith('Reconnected')",
        45_000,
        "reconnected",
    )
    _wait(
        launched,
        worker,
        "() => window.vivaDebug.events.lastIndexOf('exam.question')"
        " > window.vivaDebug.events.lastIndexOf('session.created')",
        30_000,
        "the question asked again after the reconnect",
    )
    assert _debug(page, "resumed") is True
    assert page.locator("#question").inner_text() == question
    connects = _debug(page, "connects")
    assert connects >= 2
    print(f"reconnected on connection {connects}; status: {_debug(page, 'statusLog')[-4:]}")
    page.get_by_role("button", name="End the viva").click()
    _wait(
        launched,
        worker,
        "() => window.vivaDebug.events.includes('session.ended')",
        30_000,
        "session.ended",
    )


def test_practice_form_starts_a_viva(worker: Worker, launch: Callable[..., Launched]) -> None:
    launched = launch(audio=None)
    page = launched.page
    page.goto(worker.base_url + "/")
    form = page.locator("#practice-form")
    try:
        form.wait_for(state="visible", timeout=10_000)
    except Exception:
        if page.locator("#practice-off").is_visible():
            pytest.skip("practice sessions are off on this worker")
        raise
    page.get_by_label("Your name").fill("Browser Student")
    page.get_by_label("College type").select_option("law")
    page.get_by_label("Scenario").select_option("law_of_contract")
    page.get_by_role("button", name="Start practice viva").click()
    _wait(
        launched,
        worker,
        "() => window.vivaDebug.events.includes('exam.question')",
        60_000,
        "question 1 of the practice viva",
    )
    assert "code=VIVA-" in page.url and "token=" in page.url  # a reload rejoins this viva
    page.get_by_role("button", name="End the viva").click()
    _wait(
        launched,
        worker,
        "() => window.vivaDebug.events.includes('session.ended')",
        30_000,
        "session.ended",
    )
