"""Under load the listener keeps each pause's window once it holds `turn.busy_window_ms`, so
the next pause does not transcribe it again: on the real cpu-profile models (Silero, tiny.en)
an answer with a thinking pause is still heard whole, in two kept windows instead of one."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from core.config import load_config, replace_settings
from models.base import SAMPLE_RATE
from models.hub import Hub
from models.scheduler import Priority, Scheduler
from tests.integration.conftest import CLIPS, ROOT, clips, read_wav
from tests.integration.wer import wer
from worker.voice.listener import Listener
from worker.voice.turns import SpeechStopped

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
PAUSED = next(c for c in clips("pause") if c["name"] == "medicine_insulin_pause")


async def _hear(hub: Hub, waiting: int) -> tuple[int, str]:
    """Windows kept before the end, and the answer's words, for the insulin answer (2.8 s, a
    900 ms pause, 4 s) while `waiting` transcriptions queue for the ASR (as the listener sees
    the queue; the real ASR itself is idle)."""
    cfg = replace_settings(
        load_config(ROOT / "config.yaml", {}),
        {
            "turn.policy": "silence",
            "turn.end_silence_ms": 1500,  # the 900 ms pause does not end the answer
            "turn.busy_asr_waiting": 1,
            "turn.busy_window_ms": 2500,
        },
    )
    queue = Scheduler("asr", 1)
    await queue.acquire(Priority.TURN)
    waiters = [asyncio.ensure_future(queue.acquire(Priority.SCORING)) for _ in range(waiting)]
    await asyncio.sleep(0)
    listener = Listener(hub, cfg, lambda: None)
    listener._asr_queue = queue  # what the listener reads the load from
    audio = np.concatenate(
        [read_wav(CLIPS / PAUSED["file"]), np.zeros(2 * SAMPLE_RATE, np.float32)]
    )
    kept, stop = 0, None
    for i in range(0, len(audio), 1024):
        for event in await listener.hear(audio[i : i + 1024]):
            if isinstance(event, SpeechStopped):
                stop = event
        kept = max(kept, len(listener._sealed))
        await asyncio.sleep(0)
    for w in waiters:
        w.cancel()
    assert stop is not None
    answer = await listener.answer(stop)
    listener.close()
    return kept, answer.transcript.text


async def test_under_load_the_pause_keeps_its_window_and_every_word(hub: Hub) -> None:
    kept, text = await _hear(hub, waiting=1)
    assert kept >= 1  # the first sentence's window was kept at the pause
    assert wer([PAUSED["text"]], [text]) <= 0.2, text


async def test_without_load_the_answer_is_one_window(hub: Hub) -> None:
    kept, text = await _hear(hub, waiting=0)
    assert kept == 0
    assert wer([PAUSED["text"]], [text]) <= 0.2, text
