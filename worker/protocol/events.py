"""The events of the voice WebSocket's wire protocol, version 1 (docs/protocol.md is its prose
form): limits, close codes, and every event as a pydantic model with a literal `type`.

Text frames carry JSON events, named after the OpenAI Realtime API where the concept is the same;
binary frames carry PCM16LE audio. Client events are strict (unknown fields are refused); server
events ignore unknown fields when a client parses them, so additive changes keep the version.
Messages inside the process are dataclasses elsewhere (worker.voice.turns); nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Annotated, Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from core.text import PlainText
from core.vocabulary import FeedbackType, Grade, WireErrorCode

PROTOCOL_VERSION = "1"

INPUT_SAMPLE_RATE = 16_000
MAX_AUDIO_FRAME_BYTES = 32_000  # 1 s of 16 kHz mono PCM16
MAX_TEXT_FRAME_BYTES = 16_384
# The transport limit (aiohttp's `max_msg_size`): bigger messages close the socket with 1009;
# anything between the limits above and this one is refused with a non-fatal `error`.
MAX_WS_MESSAGE_BYTES = 65_536

# The WebSocket's error codes are the vocabulary's WireErrorCode (core/vocabulary.py).
ErrorCode: TypeAlias = WireErrorCode
ResponseKind: TypeAlias = Literal[
    "greeting", "question", "acknowledge", "followup", "clarify", "repeat", "nudge", "closing"
]
EndReason: TypeAlias = Literal["completed", "terminated", "server_shutdown", "timeout"]
CancelReason: TypeAlias = Literal["barge_in", "client_cancel", "superseded"]
JsonScalar: TypeAlias = str | int | float | bool | None
# What a client may tell about itself: stored in the audit log, so no NUL or control characters.
ClientScalar: TypeAlias = Annotated[PlainText, Field(max_length=256)] | int | float | bool | None


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (RFC 6455 ones, then application ones)."""

    NORMAL = 1000  # the session ended; `session.ended` came first
    GOING_AWAY = 1001  # the server is shutting down
    POLICY_VIOLATION = 1008  # missing, wrong or expired token; unknown session
    MESSAGE_TOO_BIG = 1009  # a message over MAX_WS_MESSAGE_BYTES
    INTERNAL_ERROR = 1011  # a server fault; reconnecting within the grace period resumes
    TRY_AGAIN_LATER = 1013  # the process is at its session limit
    SESSION_BUSY = 4000  # another connection holds this session
    SESSION_CLOSED = 4001  # the session is already completed or terminated
    SESSION_ELSEWHERE = 4002  # another worker serves this session: reconnect (elsewhere) soon


CLOSE_CODE_FOR: Mapping[ErrorCode, CloseCode] = {
    "unauthorized": CloseCode.POLICY_VIOLATION,
    "token_expired": CloseCode.POLICY_VIOLATION,
    "session_not_found": CloseCode.POLICY_VIOLATION,
    "session_closed": CloseCode.SESSION_CLOSED,
    "session_busy": CloseCode.SESSION_BUSY,
    "session_elsewhere": CloseCode.SESSION_ELSEWHERE,
    "at_capacity": CloseCode.TRY_AGAIN_LATER,
    "too_many_connections": CloseCode.TRY_AGAIN_LATER,
    "database_unavailable": CloseCode.TRY_AGAIN_LATER,
    "internal_error": CloseCode.INTERNAL_ERROR,
}


class ProtocolError(ValueError):
    """A client message broke the protocol; `code` and `message` go out as an `error` event."""

    def __init__(self, code: ErrorCode, message: str, event_id: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code: ErrorCode = code
        self.message = message
        self.event_id = event_id  # the offending event's `event_id`, when it could be read

    def to_event(self) -> ErrorEvent:
        return ErrorEvent(code=self.code, message=self.message, event_id=self.event_id)


class WireEvent(BaseModel):
    """Base of every JSON event; `type` is the discriminator."""

    model_config = ConfigDict(frozen=True)
    type: str


class _ServerEvent(WireEvent):
    # Unknown fields are ignored on parse so that a v1 client survives additive changes.
    model_config = ConfigDict(frozen=True, extra="ignore")


class _ClientEvent(WireEvent):
    model_config = ConfigDict(frozen=True, extra="forbid")
    # Optional client-chosen id, echoed in the `error` (or `pong`) it causes.
    event_id: str | None = Field(None, min_length=1, max_length=64)


# --- shared parts ---------------------------------------------------------------------------


class AudioFormat(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    encoding: Literal["pcm16le"] = "pcm16le"
    sample_rate: int = Field(gt=0)
    channels: Literal[1] = 1


INPUT_AUDIO_FORMAT = AudioFormat(sample_rate=INPUT_SAMPLE_RATE)


class TurnDetection(BaseModel):
    """How the server decides turns (OpenAI's `turn_detection`, plus the exam's limits)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(ge=0, le=1)
    min_speech_ms: int = Field(ge=0)
    silence_duration_ms: int = Field(ge=0)  # silence that ends an answer
    min_interrupt_ms: int = Field(ge=0)  # speech over the examiner that counts as barge-in
    min_answer_seconds: float = Field(ge=0)
    max_answer_seconds: float = Field(gt=0)
    nudge_after_seconds: float = Field(gt=0)


# --- server -> client -----------------------------------------------------------------------


class SessionCreatedEvent(_ServerEvent):
    type: Literal["session.created"] = "session.created"
    protocol_version: str = PROTOCOL_VERSION
    session_code: str
    question_count: int = Field(ge=1)
    input_audio_format: AudioFormat = INPUT_AUDIO_FORMAT
    output_audio_format: AudioFormat
    turn_detection: TurnDetection
    show_scores: bool = False  # whether `exam.evaluation` events will be sent
    resumed: bool = False  # a reconnect within the grace period; the exam goes on
    # How long a dropped connection may take to come back with the same token.
    reconnect_grace_seconds: float = Field(30.0, ge=0)


class SpeechStartedEvent(_ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    item_id: str
    audio_start_ms: int = Field(ge=0)  # offset in the audio received on this connection


class SpeechStoppedEvent(_ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    item_id: str
    audio_end_ms: int = Field(ge=0)


class InputAudioBufferClearedEvent(_ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class TranscriptionCompletedEvent(_ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    transcript: str
    confidence: float = Field(ge=0, le=1)
    question_number: int = Field(ge=1)


class ResponseCreatedEvent(_ServerEvent):
    type: Literal["response.created"] = "response.created"
    response_id: str
    kind: ResponseKind


class ResponseTranscriptDeltaEvent(_ServerEvent):
    type: Literal["response.audio_transcript.delta"] = "response.audio_transcript.delta"
    response_id: str
    delta: str


class ResponseDoneEvent(_ServerEvent):
    type: Literal["response.done"] = "response.done"
    response_id: str
    latency_ms: float | None = Field(ge=0)  # turn latency; null when no answer preceded it
    audio_ms: int = Field(ge=0)  # examiner audio sent for this response
    # With latency_ms: where the turn's time went (see docs/protocol.md, worker/voice/metrics.py).
    stages_ms: dict[str, float] | None = None


class ResponseCancelledEvent(_ServerEvent):
    type: Literal["response.cancelled"] = "response.cancelled"
    response_id: str
    reason: CancelReason
    audio_ms: int = Field(ge=0)  # examiner audio sent before the cancel


class ExamQuestionEvent(_ServerEvent):
    type: Literal["exam.question"] = "exam.question"
    number: int = Field(ge=1)
    total: int = Field(ge=1)
    text: str


class ExamEvaluationEvent(_ServerEvent):
    type: Literal["exam.evaluation"] = "exam.evaluation"
    question_number: int = Field(ge=1)
    score: float = Field(ge=0)
    max_score: float = Field(gt=0)
    feedback_type: FeedbackType
    feedback: str


class ExamCompletedEvent(_ServerEvent):
    type: Literal["exam.completed"] = "exam.completed"
    status: Literal["completed", "terminated"]
    total_score: float = Field(ge=0)
    max_score: float = Field(gt=0)
    percentage: float = Field(ge=0, le=100)
    grade: Grade
    passed: bool


class SessionEndedEvent(_ServerEvent):
    type: Literal["session.ended"] = "session.ended"
    reason: EndReason


class ErrorEvent(_ServerEvent):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    event_id: str | None = None  # the client event that caused it, when it had one


class PongEvent(_ServerEvent):
    type: Literal["pong"] = "pong"
    event_id: str | None = None


ServerEvent: TypeAlias = Annotated[
    SessionCreatedEvent
    | SpeechStartedEvent
    | SpeechStoppedEvent
    | InputAudioBufferClearedEvent
    | TranscriptionCompletedEvent
    | ResponseCreatedEvent
    | ResponseTranscriptDeltaEvent
    | ResponseDoneEvent
    | ResponseCancelledEvent
    | ExamQuestionEvent
    | ExamEvaluationEvent
    | ExamCompletedEvent
    | SessionEndedEvent
    | ErrorEvent
    | PongEvent,
    Field(discriminator="type"),
]


# --- client -> server -----------------------------------------------------------------------


class SessionUpdateEvent(_ClientEvent):
    type: Literal["session.update"] = "session.update"
    # Free-form facts about the client (app, version, platform), kept for the audit log.
    client_info: dict[Annotated[PlainText, Field(max_length=64)], ClientScalar] = Field(
        default_factory=dict, max_length=32
    )


class InputAudioBufferClearEvent(_ClientEvent):
    type: Literal["input_audio_buffer.clear"] = "input_audio_buffer.clear"


class ResponseCancelEvent(_ClientEvent):
    type: Literal["response.cancel"] = "response.cancel"
    response_id: str | None = Field(None, max_length=64)  # None: whatever is playing


class ExamRepeatEvent(_ClientEvent):
    type: Literal["exam.repeat"] = "exam.repeat"


class SessionEndEvent(_ClientEvent):
    type: Literal["session.end"] = "session.end"


class PingEvent(_ClientEvent):
    type: Literal["ping"] = "ping"


ClientEvent: TypeAlias = Annotated[
    SessionUpdateEvent
    | InputAudioBufferClearEvent
    | ResponseCancelEvent
    | ExamRepeatEvent
    | SessionEndEvent
    | PingEvent,
    Field(discriminator="type"),
]

# get_args twice: Annotated[Union[...], Field] -> Union[...] -> the event classes.
CLIENT_EVENT_TYPES: frozenset[str] = frozenset(
    cls.model_fields["type"].default for cls in get_args(get_args(ClientEvent)[0])
)
CLIENT_ADAPTER: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
SERVER_ADAPTER: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)
