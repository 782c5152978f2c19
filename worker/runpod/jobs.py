"""RunPod job inputs: validated models, typed errors, the examiner's reply.

Pure functions, no I/O: `parse_job(raw)` turns a job's `input` into one of the four job models
or raises `JobError(code, message)`; `examiner_reply` is what the exam flow would say after the
answer. Audio decoding is `worker.runpod.audio`; the async side that runs the jobs is
`worker.runpod.runner`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.config import ExamConfig
from core.vocabulary import COLLEGE_TYPES
from worker.exam.flow import ACKNOWLEDGEMENTS, MOVE_ON, ExamFlow, Question, Say
from worker.runpod.audio import INPUT_RATES, MAX_AUDIO_B64_CHARS
from worker.runpod.errors import JobError
from worker.service.opening import STUDENT_ID_PATTERN

MAX_TEXT_CHARS = 4000
MAX_ANSWERS = 100
MAX_SESSION_TIMEOUT_S = 4 * 3600.0

Action = Literal["evaluate", "viva", "session", "health"]
ACTIONS: tuple[str, ...] = ("evaluate", "viva", "session", "health")


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
