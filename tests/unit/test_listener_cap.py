"""The listener's bounds: an answer is cut at `exam.max_question_duration_seconds` of received
audio, however fast the audio arrives; a pause is heard again with more silence; and under load
a pause's transcription window is kept rather than transcribed again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from core.config import load_config, replace_settings
from models.base import SAMPLE_RATE
from models.fakes import FakeASR, FakeEOT, FakeLLM, FakeTTS, FakeVAD
from models.hub import Hub
from models.scheduler import Priority, Scheduler
from worker.voice.listener import Listener
from worker.voice.turns import SpeechStarted, SpeechStopped

ROOT = Path(__file__).resolve().parents[2]


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


async def test_an_unbroken_answer_is_cut_at_the_limit_of_received_audio() -> None:
    cfg = replace_settings(
        load_config(ROOT / "config.yaml", {}),
        {"exam.max_question_duration_seconds": 3, "turn.policy": "silence"},
    )
    hub = Hub(vad=FakeVAD(), asr=FakeASR(), llm=FakeLLM(), tts=FakeTTS(), eot=FakeEOT())
    listener = Listener(hub, cfg, lambda: None)
    events = listener.feed(_tone(10.0))  # 10 s of speech in one go, no pause in it
    listener.close()
    started = [e for e in events if isinstance(e, SpeechStarted)]
    stopped = [e for e in events if isinstance(e, SpeechStopped)]
    assert started and stopped, events
    first = stopped[0]
    assert 3000 <= first.end_ms - first.start_ms <= 3000 + 64  # cut at 3 s of audio
    # The buffer is bounded too: what is kept since the cut, not the whole 10 s.
    assert len(listener._chunks) * 512 < 8 * SAMPLE_RATE


async def test_a_long_pause_is_heard_again_with_more_silence() -> None:
    """With `turn.relisten_ms`, the end-of-turn model hears a pause twice: at its start and
    with that much silence; the detector keeps the later answer."""
    heard: list[float] = []

    def eot(audio: np.ndarray) -> float:
        heard.append(len(audio) / SAMPLE_RATE)
        return 0.05 if len(heard) == 1 else 0.9

    cfg = replace_settings(
        load_config(ROOT / "config.yaml", {}), {"turn.relisten_ms": 416, "turn.policy": "viva"}
    )
    hub = Hub(vad=FakeVAD(), asr=FakeASR(), llm=FakeLLM(), tts=FakeTTS(), eot=FakeEOT(eot))
    listener = Listener(hub, cfg, lambda: None)
    listener.feed(_tone(2.0))
    listener.feed(np.zeros(SAMPLE_RATE // 5, np.float32))  # 200 ms: the pause's first question
    await asyncio.sleep(0.01)
    assert listener.turns.signals().eot == 0.05
    listener.feed(np.zeros(SAMPLE_RATE // 4, np.float32))  # past 416 ms: asked again
    await asyncio.sleep(0.01)
    listener.close()
    assert len(heard) == 2 and heard[1] > heard[0] + 0.25  # the second heard more silence
    assert listener.turns.signals().eot == 0.9


async def _busy_asr(waiting: int) -> tuple[Scheduler, list[asyncio.Task[None]]]:
    """An ASR scheduler whose one slot is taken and `waiting` requests queue behind it."""
    queue = Scheduler("asr", 1)
    await queue.acquire(Priority.TURN)
    waiters = [asyncio.ensure_future(queue.acquire(Priority.SCORING)) for _ in range(waiting)]
    await asyncio.sleep(0)
    return queue, waiters


async def _two_segments(waiting: int) -> tuple[list[float], str]:
    """Seconds of audio in each ASR call, and the answer's text, for 1.5 s of speech, a 200 ms
    pause, 1 s of speech and the end, with `waiting` transcriptions queued for the ASR."""
    heard: list[float] = []

    def asr(audio: np.ndarray) -> str:
        heard.append(len(audio) / SAMPLE_RATE)
        return f"part{len(heard)}"

    cfg = replace_settings(
        load_config(ROOT / "config.yaml", {}),
        {"turn.policy": "silence", "turn.busy_asr_waiting": 2, "turn.busy_window_ms": 0},
    )
    hub = Hub(vad=FakeVAD(), asr=FakeASR(asr), llm=FakeLLM(), tts=FakeTTS(), eot=FakeEOT())
    hub.schedulers["asr"], waiters = await _busy_asr(waiting)
    listener = Listener(hub, cfg, lambda: None)
    listener.feed(_tone(1.5))
    listener.feed(np.zeros(SAMPLE_RATE // 5, np.float32))
    await asyncio.sleep(0.01)
    listener.feed(_tone(1.0))
    events = listener.feed(np.zeros(SAMPLE_RATE, np.float32))
    stop = next(e for e in events if isinstance(e, SpeechStopped))
    answer = await listener.answer(stop)
    for w in waiters:
        w.cancel()
    listener.close()
    return heard, answer.transcript.text


async def test_under_load_each_pause_keeps_its_window() -> None:
    """With `turn.busy_asr_waiting` transcriptions already queued, the window transcribed at a
    pause is kept (`turn.busy_window_ms` 0): the next pause transcribes only the new speech,
    and the answer joins both."""
    heard, text = await _two_segments(waiting=2)
    assert len(heard) == 2 and heard[1] < 1.5, heard  # the second call: the second stretch only
    assert text == "part1 part2"


async def test_without_load_a_short_window_is_transcribed_again_whole() -> None:
    heard, text = await _two_segments(waiting=1)  # one waiting: below the mark
    assert len(heard) == 2 and heard[1] > 2.6, heard  # both stretches again, in one call
    assert text == "part2"


async def test_a_kept_window_survives_a_dropped_transcription_that_waits_for_it() -> None:
    """A window's transcription waits for the kept windows before it (their text is its
    prompt); when a later pause drops it, the kept window it was waiting for goes on."""
    heard: list[float] = []

    def asr(audio: np.ndarray) -> str:
        heard.append(len(audio) / SAMPLE_RATE)
        return f"part{len(heard)}"

    cfg = replace_settings(
        load_config(ROOT / "config.yaml", {}),
        {"turn.policy": "silence", "turn.busy_asr_waiting": 1, "turn.busy_window_ms": 1000},
    )
    hub = Hub(
        vad=FakeVAD(), asr=FakeASR(asr, delay_ms=100), llm=FakeLLM(), tts=FakeTTS(), eot=FakeEOT()
    )
    hub.schedulers["asr"], waiters = await _busy_asr(1)
    listener = Listener(hub, cfg, lambda: None)
    pause = np.zeros(SAMPLE_RATE // 5, np.float32)
    # The first window is still being transcribed when it is kept; the second window's
    # transcription starts (and waits for it), then the third pause drops it.
    listener.feed(np.concatenate([_tone(1.5), pause, _tone(0.5), pause]))
    await asyncio.sleep(0.01)
    listener.feed(_tone(0.5))
    events = listener.feed(np.zeros(SAMPLE_RATE, np.float32))
    stop = next(e for e in events if isinstance(e, SpeechStopped))
    answer = await listener.answer(stop)
    for w in waiters:
        w.cancel()
    listener.close()
    assert answer.transcript.text.startswith("part1 "), answer.transcript.text
