"""Smart Turn v3.2 on real clips: its features match transformers' WhisperFeatureExtractor, and it
hears a finished sentence as finished and a clause cut in the middle as not (marker
`integration`; the model alone, without the hub's other models)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from models.base import SAMPLE_RATE, InvalidAudio
from models.smart_turn import Features, SmartTurn, last_window
from models.weights import smart_turn_path
from tests.integration.conftest import CLIPS, read_wav

pytestmark = pytest.mark.integration

# "Insulin is made by | the beta cells of the pancreas. [900 ms] It lets glucose ..."
INSULIN = "medicine_insulin_pause.wav"
MID_CLAUSE_S = 1.54  # after "made by" (faster-whisper word timestamps)
# The model was trained on audio that runs into the pause (Pipecat calls it 200 ms into one): cut
# exactly at the last voiced sample, complete sentences score low (0.01-0.6 on these clips).
PAUSE = int(0.2 * SAMPLE_RATE)


def into_pause(audio: np.ndarray, end: int) -> np.ndarray:
    """`audio` up to `end`, then 200 ms of silence, as the model hears a pause."""
    return np.concatenate([audio[:end], np.zeros(PAUSE, dtype=np.float32)])


def to_pause(audio: np.ndarray, end: int) -> np.ndarray:
    """`audio` up to 200 ms past `end`, where the clip itself falls silent."""
    return audio[: end + PAUSE]


def voiced_end(audio: np.ndarray, window: int = 160) -> int:
    """One past the last 10 ms window above -40 dBFS."""
    n = len(audio) // window
    rms = np.sqrt(np.mean(np.square(audio[: n * window].reshape(n, window)), axis=1)) + 1e-12
    return (int(np.nonzero(20 * np.log10(rms) > -40)[0][-1]) + 1) * window


def first_pause(audio: np.ndarray, min_s: float = 0.6, window: int = 160) -> int:
    """Start of the first silence of at least `min_s` after speech."""
    n = len(audio) // window
    rms = np.sqrt(np.mean(np.square(audio[: n * window].reshape(n, window)), axis=1)) + 1e-12
    quiet = 20 * np.log10(rms) <= -40
    run, spoke = 0, False
    for i, q in enumerate(quiet):
        spoke = spoke or not q
        run = run + 1 if q and spoke else 0
        if run * window >= min_s * SAMPLE_RATE:
            return (i - run + 1) * window
    raise AssertionError("no pause")


@pytest.fixture(scope="module")
def model() -> Iterator[SmartTurn]:
    m = SmartTurn(smart_turn_path())
    yield m
    m.close()


@pytest.mark.parametrize("clip", ["engineering_bridge_long.wav", "law_contract.wav"])
@pytest.mark.parametrize("seconds", [None, 2.5])
def test_features_match_transformers(clip: str, seconds: float | None) -> None:
    from transformers import WhisperFeatureExtractor

    audio = read_wav(CLIPS / clip)
    if seconds is not None:  # shorter than the window: zero padding at the front
        audio = audio[: int(seconds * SAMPLE_RATE)]
    reference = WhisperFeatureExtractor(chunk_length=8)(
        last_window(audio),
        sampling_rate=16000,
        padding="max_length",
        max_length=128000,
        truncation=True,
        do_normalize=True,
        return_tensors="np",
    ).input_features[0]
    ours = Features()(audio)
    assert ours.shape == reference.shape == (80, 800) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_complete_sentences_end_turns_and_a_cut_clause_does_not(model: SmartTurn) -> None:
    audio = read_wav(CLIPS / INSULIN)
    whole = model.predict(to_pause(audio, voiced_end(audio)))
    mid_clause = model.predict(into_pause(audio, int(MID_CLAUSE_S * SAMPLE_RATE)))
    # It hears a finished sentence, not a finished answer: the thinking pause after the first
    # sentence sounds like an end (why the turn policy weighs more than this model).
    first_sentence = model.predict(to_pause(audio, first_pause(audio)))
    assert whole > 0.5 and first_sentence > 0.5, (whole, first_sentence)
    assert mid_clause < 0.5, mid_clause
    for clip in ("medicine_triage.wav", "engineering_beam.wav"):
        other = read_wav(CLIPS / clip)
        assert model.predict(to_pause(other, voiced_end(other))) > 0.5, clip


def test_async_call_runs_in_its_executor_and_checks_audio(model: SmartTurn) -> None:
    audio = read_wav(CLIPS / INSULIN)

    async def both() -> tuple[float, float]:
        return await asyncio.gather(
            model.probability(into_pause(audio, int(MID_CLAUSE_S * SAMPLE_RATE))),
            model.probability(to_pause(audio, voiced_end(audio))),
        )

    low, high = asyncio.run(both())
    assert 0.0 <= low < 0.5 < high <= 1.0
    assert model.info.stage == "eot" and model.info.backend == "smart_turn"
    with pytest.raises(InvalidAudio):
        asyncio.run(model.probability(audio.astype(np.float64)))  # type: ignore[arg-type]
