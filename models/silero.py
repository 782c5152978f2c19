"""Silero VAD through onnxruntime, weights from the `silero-vad` package data (no torch).

One InferenceSession per process; each connection gets its own recurrent state and 64-sample
context, which is what Silero v5+ carries between 512-sample chunks. A chunk costs ~0.1-0.2 ms
on a CPU core, so it runs inline on the event loop rather than paying a thread hop.

Batching across sessions (`batch_ms` > 0): `probabilities()` of every session's stream waits
at most `batch_ms` and goes into one model call with one row per session (the model takes a
batch of chunks and a batch of states); measured here, 32 sessions' chunks cost 2.1 ms in one
call against 4.8 ms one by one (benchmarks/vad_batch.py). A stream's chunks stay in order: a
session with several chunks waiting gives one per call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from models.base import VAD_CHUNK, Audio, InvalidAudio, ModelInfo, WeightsMissing, package_dir

CONTEXT = 64


def silero_onnx_path() -> Path:
    root = package_dir("silero_vad")
    if root is None:
        raise WeightsMissing("silero_vad/data/silero_vad.onnx", "VAD (package silero-vad)")
    path = root / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise WeightsMissing(str(path), "VAD")
    return path


def _check(chunk: Audio) -> None:
    if not isinstance(chunk, np.ndarray) or chunk.dtype != np.float32:
        raise InvalidAudio("VAD chunk must be a float32 numpy array")
    if chunk.shape != (VAD_CHUNK,):
        raise InvalidAudio(f"VAD chunk must have {VAD_CHUNK} samples, got {chunk.shape}")


class SileroStream:
    def __init__(self, vad: SileroVAD):
        self._vad = vad
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, CONTEXT), dtype=np.float32)

    def probability(self, chunk: Audio) -> float:
        _check(chunk)
        return float(self._vad.run([self], [chunk])[0])

    async def probabilities(self, chunks: list[Audio]) -> list[float]:
        if self._vad.batcher is None:
            return [self.probability(c) for c in chunks]
        for chunk in chunks:
            _check(chunk)  # before any joins a batch: a bad chunk fails its caller only
        return await self._vad.batcher.submit(self, chunks)


class SileroVAD:
    def __init__(self, path: Path | None = None, device: str = "cpu", batch_ms: float = 0):
        import onnxruntime as ort

        self.path = path or silero_onnx_path()
        if not self.path.is_file():
            raise WeightsMissing(str(self.path), "VAD")
        opts = ort.SessionOptions()
        # Tiny model: threads only add scheduling cost, and the cores belong to ASR and LLM.
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(16000, dtype=np.int64)
        self.batcher = _Batcher(self, batch_ms / 1000) if batch_ms > 0 else None
        self.info = ModelInfo("vad", "silero-vad", "silero", "cpu", str(self.path))

    def stream(self) -> SileroStream:
        return SileroStream(self)

    def run(self, streams: list[SileroStream], chunks: list[Audio]) -> np.ndarray:
        """One model call over one chunk of each stream (distinct streams), advancing each
        stream's state and context; the speech probability of each chunk, in order."""
        pairs = zip(streams, chunks, strict=True)
        x = np.concatenate([np.concatenate([s._context, c[None, :]], axis=1) for s, c in pairs])
        state = np.concatenate([s._state for s in streams], axis=1)
        out, state = self._session.run(None, {"input": x, "state": state, "sr": self._sr})
        for i, s in enumerate(streams):
            s._state = state[:, i : i + 1, :]
            s._context = x[i : i + 1, -CONTEXT:]
        return np.asarray(out).reshape(-1)


class _Batcher:
    """Chunks of every session waiting at most `wait_s`, then run in as few calls as their
    order allows (a stream's second chunk goes in the next call)."""

    def __init__(self, vad: SileroVAD, wait_s: float):
        self.vad, self.wait_s = vad, wait_s
        self._pending: dict[SileroStream, list[tuple[Audio, asyncio.Future[float]]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.calls = 0  # model calls made (benchmarks and tests read it)

    async def submit(self, stream: SileroStream, chunks: list[Audio]) -> list[float]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in chunks]
        if self._loop is not loop:  # a loop that ended with chunks waiting: start afresh
            self._pending, self._timer, self._loop = {}, None, loop
        self._pending.setdefault(stream, []).extend(zip(chunks, futures, strict=True))
        if self._timer is None:
            self._timer = loop.call_later(self.wait_s, self._flush)
        return list(await asyncio.gather(*futures))

    def _flush(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, {}
        while pending:
            streams = list(pending)
            rows = [pending[s].pop(0) for s in streams]
            try:
                probs = self.vad.run(streams, [chunk for chunk, _ in rows])
            except Exception as exc:  # a model failure fails this call's waiters, not the loop
                for _, future in rows:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), p in zip(rows, probs, strict=True):
                    if not future.done():  # a caller that left (its task cancelled)
                        future.set_result(float(p))
            self.calls += 1
            pending = {s: left for s, left in pending.items() if left}
