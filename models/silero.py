"""Silero VAD through onnxruntime, weights from the `silero-vad` package data (no torch).

One InferenceSession per process; each connection gets its own recurrent state and 64-sample
context, which is what Silero v5+ carries between 512-sample chunks. A chunk costs ~0.1 ms on
a CPU core, so `probability` runs inline on the event loop rather than paying a thread hop.
"""

from __future__ import annotations

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


class SileroStream:
    def __init__(self, session: object):
        self._session = session
        self._sr = np.array(16000, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, CONTEXT), dtype=np.float32)

    def probability(self, chunk: Audio) -> float:
        if not isinstance(chunk, np.ndarray) or chunk.dtype != np.float32:
            raise InvalidAudio("VAD chunk must be a float32 numpy array")
        if chunk.shape != (VAD_CHUNK,):
            raise InvalidAudio(f"VAD chunk must have {VAD_CHUNK} samples, got {chunk.shape}")
        x = np.concatenate([self._context, chunk[np.newaxis, :]], axis=1)
        out, self._state = self._session.run(  # type: ignore[attr-defined]
            None, {"input": x, "state": self._state, "sr": self._sr}
        )
        self._context = x[:, -CONTEXT:]
        return float(out[0][0])


class SileroVAD:
    def __init__(self, path: Path | None = None, device: str = "cpu"):
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
        self.info = ModelInfo("vad", "silero-vad", "silero", "cpu", str(self.path))

    def stream(self) -> SileroStream:
        return SileroStream(self._session)
