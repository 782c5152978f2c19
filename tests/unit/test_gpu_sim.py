"""The gpu-sim device (models/gpu_sim.py): slots bound what runs at once, requests that share
the device stretch each other's service time by `overlap`. Service times are read from the
sleeps the device asks for, not from a clock."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from core.config import GPUSimConfig
from models import gpu_sim
from models.gpu_sim import SimASR, SimDevice


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float, *args: Any) -> None:
        asked.append(round(seconds, 6))
        await real_sleep(seconds / 50)  # in proportion: who runs beside whom is kept

    monkeypatch.setattr(gpu_sim.asyncio, "sleep", sleep)
    return asked


async def test_requests_beside_others_take_longer(sleeps: list[float]) -> None:
    device = SimDevice(slots=2, overlap=0.5)
    await asyncio.gather(*(device.serve(1.0) for _ in range(3)))
    # The first alone, the second beside it (x1.5), the third waits for the first's slot and
    # starts beside the second (x1.5).
    assert sorted(sleeps) == [1.0, 1.5, 1.5]


async def test_independent_slots_without_overlap(sleeps: list[float]) -> None:
    device = SimDevice(slots=2, overlap=0.0)
    await asyncio.gather(device.serve(0.2), device.serve(0.2))
    assert sleeps == [0.2, 0.2]


async def test_asr_cost_grows_with_audio_and_batches_share_it(sleeps: list[float]) -> None:
    asr = SimASR(GPUSimConfig(asr_fixed_ms=80, asr_ms_per_audio_s=24, asr_batch_share=0.3))
    one_s, two_s = np.zeros(16000, np.float32), np.zeros(32000, np.float32)
    await asr.transcribe(two_s)
    await asr.transcribe_batch([one_s, two_s])
    assert sleeps == [0.128, pytest.approx(0.080 + 0.024 * (2 + 0.3 * 1))]
