"""RunPod job inputs: validated models, typed errors, audio decoding, the examiner's reply.

Pure functions, no I/O: `parse_job(raw)` turns a job's `input` into one of the four job models
or raises `JobError(code, message)`; `decode_audio` turns `audio_b64` (a WAV file, or raw PCM16
with its `sample_rate`) into 16 kHz mono float32 within the size limits; `examiner_reply` is
what the exam flow would say after the answer; `wav_bytes` packs TTS output as a WAV file.
The async side that runs the jobs is `worker.job_runner`.
"""

from __future__ import annotations

import base64
import binascii
import io
import wave
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.config import ExamConfig
from core.vocabulary import COLLEGE_TYPES
from models.base import SAMPLE_RATE, Audio, pcm16_to_float
from models.resample import resample
from worker.exam import ACKNOWLEDGEMENTS, MOVE_ON, ExamFlow, Question, Say
from worker.opening import STUDENT_ID_PATTERN

MAX_AUDIO_BYTES = 10 * 1024 * 1024  # decoded; RunPod's /run takes 10 MB per request anyway
MAX_AUDIO_SECONDS = 120.0  # SPEC's default max_question_duration_seconds
MIN_AUDIO_SECONDS = 0.1
# base64 carries 3 bytes in 4 characters; a longer string cannot decode under the limit.
MAX_AUDIO_B64_CHARS = (MAX_AUDIO_BYTES + 2) // 3 * 4 + 16
MAX_TEXT_CHARS = 4000
MAX_ANSWERS = 100
MAX_SESSION_TIMEOUT_S = 4 * 3600.0
INPUT_RATES = (8000, 48000)  # sample rates accepted for input audio, inclusive

Action = Literal["evaluate", "viva", "session", "health"]
ACTIONS: tuple[str, ...] = ("evaluate", "viva", "session", "health")
ErrorCode = Literal[
    "missing_action",
    "unknown_action",
    "invalid_input",
    "invalid_base64",
    "invalid_audio",
    "audio_too_large",
    "unknown_college_type",
    "unknown_scenario",
    "unknown_question",
    "unknown_session",
    "session_closed",
    "at_capacity",
    "unhealthy",
    "models_not_ready",
    "evaluation_failed",
    "model_error",
    "internal_error",
]


class JobError(Exception):
    """A job that cannot run; yielded as `{"error": {"code", "message"}}`."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message

    def as_item(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Rate = Annotated[int, Field(ge=INPUT_RATES[0], le=INPUT_RATES[1])]


class Answer(_Input):
    """One spoken (`audio_b64`) or written (`text`) answer."""

    audio_b64: str | None = Field(None, min_length=1, max_length=MAX_AUDIO_B64_CHARS)
    sample_rate: Rate | None = None  # raw PCM16 only; a WAV file says its own
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS)

    @model_validator(mode="after")
    def _one_of(self) -> Answer:
        if (self.audio_b64 is None) == (self.text is None):
            raise ValueError("give exactly one of audio_b64 and text")
        if self.text is not None and self.sample_rate is not None:
            raise ValueError("sample_rate goes with audio_b64, not text")
        return self


class EvaluateJob(Answer):
    action: Literal["evaluate"]
    question_id: int | None = Field(None, ge=1)
    question_text: str | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS)
    expected_keywords: tuple[Annotated[str, Field(min_length=1, max_length=100)], ...] = ()
    answer_guidelines: str = Field("", max_length=MAX_TEXT_CHARS)
    session_code: str | None = Field(None, min_length=1, max_length=32)

    @model_validator(mode="after")
    def _question(self) -> EvaluateJob:
        if (self.question_id is None) == (self.question_text is None):
            raise ValueError("give exactly one of question_id and question_text")
        if self.question_text is not None and not self.expected_keywords:
            raise ValueError("question_text needs expected_keywords")
        if self.question_id is not None and (self.expected_keywords or self.answer_guidelines):
            raise ValueError("a bank question (question_id) brings its own keywords")
        if self.session_code is not None and self.question_id is None:
            # answers.question_bank_id is required: a stored answer answers a bank question.
            raise ValueError("session_code needs question_id")
        return self


class _Student(_Input):
    student_id: str = Field(min_length=1, max_length=64, pattern=STUDENT_ID_PATTERN)
    full_name: str | None = Field(None, max_length=255)
    email: str | None = Field(None, max_length=255)
    college_type: str = Field(min_length=1, max_length=32)  # checked by parse_job
    scenario_id: str = Field(min_length=1, max_length=64)


class VivaJob(_Student):
    action: Literal["viva"]
    answers: tuple[Answer, ...] = Field(min_length=1, max_length=MAX_ANSWERS)


class SessionJob(_Student):
    action: Literal["session"]
    timeout_s: float | None = Field(None, gt=0, le=MAX_SESSION_TIMEOUT_S)


class HealthJob(_Input):
    action: Literal["health"]


Job = EvaluateJob | VivaJob | SessionJob | HealthJob
_MODELS: dict[str, type[BaseModel]] = {
    "evaluate": EvaluateJob,
    "viva": VivaJob,
    "session": SessionJob,
    "health": HealthJob,
}


def parse_job(raw: Any) -> Job:
    """The job's `input`, validated; raises JobError with the first problem found."""
    if not isinstance(raw, dict):
        raise JobError("invalid_input", f"input must be a JSON object, got {type(raw).__name__}")
    action = raw.get("action")
    if action is None:
        raise JobError("missing_action", f"input.action is required: one of {', '.join(ACTIONS)}")
    if not isinstance(action, str) or action not in _MODELS:
        raise JobError("unknown_action", f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    try:
        job: Job = _MODELS[action].model_validate(raw)  # type: ignore[assignment]
    except ValidationError as exc:
        raise JobError("invalid_input", _describe(exc)) from None
    if isinstance(job, VivaJob | SessionJob) and job.college_type not in COLLEGE_TYPES:
        raise JobError(
            "unknown_college_type",
            f"unknown college type {job.college_type!r}; one of {', '.join(COLLEGE_TYPES)}",
        )
    return job


def _describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


# --- audio -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedAudio:
    samples: Audio  # 16 kHz mono float32
    duration_s: float
    source_rate: int
    source: Literal["wav", "pcm16"]


def decode_audio(audio_b64: str, sample_rate: int | None = None) -> DecodedAudio:
    """`audio_b64` as 16 kHz mono float32: a 16-bit PCM WAV file (mono or stereo, any rate in
    INPUT_RATES), or raw PCM16LE mono at `sample_rate`. Raises JobError."""
    if len(audio_b64) > MAX_AUDIO_B64_CHARS:
        raise JobError("audio_too_large", f"audio is over {MAX_AUDIO_BYTES // 2**20} MB")
    try:
        data = base64.b64decode(audio_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise JobError("invalid_base64", f"audio_b64 is not valid base64: {exc}") from None
    if len(data) > MAX_AUDIO_BYTES:
        raise JobError("audio_too_large", f"audio is over {MAX_AUDIO_BYTES // 2**20} MB")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        pcm, rate, channels = _read_wav(data)
        source: Literal["wav", "pcm16"] = "wav"
    elif sample_rate is None:
        raise JobError(
            "invalid_audio", "audio_b64 is not a WAV file; raw PCM16 needs its sample_rate"
        )
    else:
        pcm, rate, channels, source = data, sample_rate, 1, "pcm16"
    if not INPUT_RATES[0] <= rate <= INPUT_RATES[1]:  # the job model checks it too
        raise JobError("invalid_audio", f"sample rate {rate} Hz is outside {INPUT_RATES}")
    if len(pcm) % (2 * channels):
        raise JobError("invalid_audio", "PCM16 data does not end on a whole sample")
    duration = len(pcm) / (2 * channels * rate)
    if duration > MAX_AUDIO_SECONDS:
        raise JobError(
            "audio_too_large", f"audio is {duration:.1f} s; the limit is {MAX_AUDIO_SECONDS:g} s"
        )
    if duration < MIN_AUDIO_SECONDS:
        raise JobError("invalid_audio", f"audio is {duration:.3f} s; too short to transcribe")
    samples = pcm16_to_float(pcm)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.float32)
    samples = resample(samples, rate, SAMPLE_RATE)
    return DecodedAudio(np.clip(samples, -1.0, 1.0), duration, rate, source)


def _read_wav(data: bytes) -> tuple[bytes, int, int]:
    try:
        with wave.open(io.BytesIO(data)) as w:
            width, rate, channels = w.getsampwidth(), w.getframerate(), w.getnchannels()
            pcm = w.readframes(w.getnframes())
    except Exception as exc:  # the wave module raises several kinds on malformed bytes
        raise JobError("invalid_audio", f"unreadable WAV file: {exc!r}") from None
    if width != 2:
        raise JobError("invalid_audio", f"WAV samples must be 16-bit PCM, not {8 * width}-bit")
    if channels not in (1, 2):
        raise JobError("invalid_audio", f"WAV must be mono or stereo, not {channels} channels")
    if not INPUT_RATES[0] <= rate <= INPUT_RATES[1]:
        raise JobError("invalid_audio", f"WAV sample rate {rate} Hz is outside {INPUT_RATES}")
    return pcm, rate, channels


def wav_bytes(pcm16: bytes, sample_rate: int) -> bytes:
    """Mono PCM16LE as a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm16)
    return out.getvalue()


# --- the examiner's reply ----------------------------------------------------------------------


def examiner_reply(question: Question, transcript: str, exam: ExamConfig) -> Say:
    """What the examiner says right after this answer, by the exam flow's own rules: a
    follow-up naming a missing keyword when the answer looks partial, "let's move on" after
    "I don't know", a repeat when asked, otherwise a neutral acknowledgement. The job was asked
    to judge the answer, so the minimum answer length does not apply."""
    flow = ExamFlow([question], exam, clock=lambda: 0.0)
    flow.start()
    for decision in flow.answer(transcript, duration_s=exam.min_answer_duration_seconds + 1):
        if isinstance(decision, Say) and decision.kind in ("followup", "acknowledge", "repeat"):
            return decision
    # Nothing heard: the live examiner would wait; a one-shot reply moves on.
    return Say(MOVE_ON if not transcript.strip() else ACKNOWLEDGEMENTS[0], "acknowledge")
