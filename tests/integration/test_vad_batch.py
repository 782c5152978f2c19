"""Silero VAD batched across sessions gives each session the probabilities it gets alone.

Real Silero weights on committed speech clips: three sessions stream different clips with
uneven frame sizes at once, through one `SileroVAD(batch_ms=...)`; each stream's probabilities
match the same clip through its own unbatched stream, and the chunks went in fewer model calls
than there were chunks.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from models.base import VAD_CHUNK, InvalidAudio, pcm16_to_float
from models.silero import SileroVAD
from tests.db.student import clip_pcm

CLIPS = ("law_contract.wav", "medicine_antibiotics.wav", "dont_know_polite.wav")


def _chunks(name: str) -> list[np.ndarray]:
    audio = pcm16_to_float(clip_pcm(name))
    whole = len(audio) // VAD_CHUNK * VAD_CHUNK
    return [audio[i : i + VAD_CHUNK] for i in range(0, whole, VAD_CHUNK)]


async def test_batched_probabilities_match_one_session_alone() -> None:
    alone = SileroVAD()
    expected = {}
    for name in CLIPS:
        stream = alone.stream()
        expected[name] = [stream.probability(c) for c in _chunks(name)]

    batched = SileroVAD(batch_ms=4)
    assert batched.batcher is not None

    async def session(name: str, frame: int) -> list[float]:
        stream, chunks, out = batched.stream(), _chunks(name), []
        for i in range(0, len(chunks), frame):  # 1, 2 or 3 chunks per received frame
            out += await stream.probabilities(chunks[i : i + frame])
        return out

    got = await asyncio.gather(*(session(n, k) for n, k in zip(CLIPS, (1, 2, 3), strict=True)))
    for name, probabilities in zip(CLIPS, got, strict=True):
        np.testing.assert_allclose(probabilities, expected[name], atol=1e-4)
        assert max(probabilities) > 0.9 and min(probabilities) < 0.1  # speech and pauses
    total = sum(len(v) for v in expected.values())
    assert batched.batcher.calls < total * 0.7  # the sessions shared model calls (430 chunks: 269)


async def test_a_bad_chunk_is_refused_before_it_joins_a_batch() -> None:
    vad = SileroVAD(batch_ms=4)
    stream = vad.stream()
    with pytest.raises(InvalidAudio):
        await stream.probabilities([np.zeros(100, dtype=np.float32)])
    assert vad.batcher is not None and vad.batcher.calls == 0
    assert len(await stream.probabilities([np.zeros(VAD_CHUNK, dtype=np.float32)])) == 1
