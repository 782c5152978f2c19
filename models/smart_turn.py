"""Smart Turn v3.2: an end-of-turn model that hears whether an utterance sounds finished.

The int8 ONNX file ships inside the `pipecat-ai` wheel (BSD-2-Clause) and is located there
(`models.weights.smart_turn_path`), never imported. Input: Whisper log-mel features (80 x 800)
of the last 8 s of 16 kHz audio, zero-padded at the front and normalised to zero mean and unit
variance first, as the model was trained (Pipecat's `LocalSmartTurnAnalyzerV3` does the same).
Output: the probability that the turn is complete.

One inference costs ~50 ms on a quiet CPU core, so it runs in this model's own single-thread
executor, one call at a time, off the event loop.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models.base import SAMPLE_RATE, Audio, ModelInfo, WeightsMissing, check_audio

WINDOW_S = 8
WINDOW = WINDOW_S * SAMPLE_RATE
N_MELS = 80
NORM_EPS = 1e-7  # transformers' zero_mean_unit_var_norm


def last_window(audio: Audio) -> Audio:
    """The last 8 s of `audio`, zero-padded at the front to exactly 8 s."""
    tail = audio[-WINDOW:]
    if len(tail) == WINDOW:
        return tail
    return np.concatenate([np.zeros(WINDOW - len(tail), dtype=np.float32), tail])


class Features:
    """Whisper log-mel features of one 8 s window, by faster-whisper's numpy extractor (the
    same mel filters and STFT as transformers' WhisperFeatureExtractor, without importing
    transformers); do_normalize is the one step it lacks."""

    def __init__(self) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        self._extract = FeatureExtractor(feature_size=N_MELS, chunk_length=WINDOW_S)

    def __call__(self, audio: Audio) -> np.ndarray:
        """(80, 800) float32 features of the last 8 s of `audio`."""
        x = last_window(audio).astype(np.float64)
        x = (x - x.mean()) / np.sqrt(x.var() + NORM_EPS)
        # padding=0: the window is already 8 s, and 128000 samples give 800 frames exactly.
        mel = self._extract(x.astype(np.float32), padding=0)
        return np.asarray(mel[:, : WINDOW // self._extract.hop_length], dtype=np.float32)


class SmartTurn:
    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        if not path.is_file():
            raise WeightsMissing(str(path), "end of turn (package pipecat-ai)")
        opts = ort.SessionOptions()
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = threads
        self._session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._features = Features()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eot")
        self.info = ModelInfo(
            "eot",
            path.stem,
            "smart_turn",
            "cpu",
            str(path),
            {"window_s": WINDOW_S, "threads": threads},
        )

    def predict(self, audio: Audio) -> float:
        """Blocking inference (the executor's body; benchmarks call it directly)."""
        features = self._features(check_audio(audio))[np.newaxis]
        (out,) = self._session.run(None, {"input_features": features})
        return float(np.asarray(out).reshape(-1)[0])

    async def probability(self, audio: Audio) -> float:
        audio = check_audio(audio)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.predict, audio)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
