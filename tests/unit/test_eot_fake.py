"""The fake end-of-turn model and the hub with every model faked (the fake profile)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from core.config import load_config
from models.base import InvalidAudio
from models.fakes import FakeEOT
from models.hub import load_hub

AUDIO = np.zeros(1600, dtype=np.float32)


async def test_fake_eot_is_scripted_and_delayed() -> None:
    assert await FakeEOT(0.3).probability(AUDIO) == 0.3
    by_length = FakeEOT(lambda audio: min(1.0, len(audio) / 16000), delay_ms=30)
    start = time.perf_counter()
    assert await by_length.probability(np.zeros(8000, dtype=np.float32)) == 0.5
    assert time.perf_counter() - start >= 0.025
    assert by_length.calls == 1 and by_length.info.stage == "eot"
    with pytest.raises(InvalidAudio):
        await by_length.probability(AUDIO.astype(np.float64))  # type: ignore[arg-type]


async def test_fake_profile_hub_builds_warms_and_reports_the_eot_model() -> None:
    cfg = load_config("config.yaml", {"VIVA_PROFILE": "fake"})
    assert cfg.models.eot.backend == "fake"
    hub = await load_hub(cfg.models)
    try:
        assert hub.ready and isinstance(hub.eot, FakeEOT) and hub.eot.calls == 1  # warm-up
        assert set(hub.describe()["models"]) == {"vad", "asr", "llm", "tts", "eot"}
    finally:
        await hub.close()


def test_eot_runs_on_the_cpu_in_every_real_profile() -> None:
    for profile in ("cpu", "gpu"):
        eot = load_config("config.yaml", {"VIVA_PROFILE": profile}).models.eot
        assert (eot.backend, eot.device, eot.threads) == ("smart_turn", "cpu", 1), profile
