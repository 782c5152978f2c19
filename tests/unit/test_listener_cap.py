"""An answer is bounded on the audio clock: the listener cuts it at
`exam.max_question_duration_seconds` of received audio, however fast the audio arrives."""

from __future__ import annotations

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
