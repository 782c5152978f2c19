"""Real cpu-profile models, loaded once per test session (vLLM's engine takes ~35 s to start)."""

from __future__ import annotations

import json
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from core.config import load_config
from models.hub import Hub, load_hub

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "tests" / "data" / "clips"


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        data = w.readframes(w.getnframes())
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0).astype(np.float32)


def clips(kind: str = "speech") -> list[dict]:
    return [c for c in json.loads((CLIPS / "clips.json").read_text()) if c["kind"] == kind]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def hub() -> AsyncIterator[Hub]:
    cfg = load_config(ROOT / "config.yaml", {})
    loaded = await load_hub(cfg.models)
    yield loaded
    await loaded.close()


@pytest.fixture(scope="session")
def models_config():  # type: ignore[no-untyped-def]
    return load_config(ROOT / "config.yaml", {}).models
