"""An answer is bounded on the audio clock: the listener cuts it at
`exam.max_question_duration_seconds` of received audio, however fast the audio arrives."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from core.config import load_config, replace_settings
from models.base import SAMPLE_RATE
from models.fakes import FakeASR, FakeEOT, FakeLLM, FakeTTS, FakeVAD
from models.hub import Hub
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
