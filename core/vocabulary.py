"""The words every layer shares, each defined once: college types, session statuses, feedback
types, grades and typed error codes.

Each is a `Literal` type (for pydantic models and the type checker) and, where code iterates over
it (database enums, input checks), the tuple of its values derived from that one definition.
"""

from __future__ import annotations

from typing import Literal, TypeAlias, get_args

CollegeType: TypeAlias = Literal[
    "medical", "law", "aviation", "automobile", "engineering", "management"
]
SessionStatus: TypeAlias = Literal["pending", "in_progress", "completed", "terminated"]
FeedbackType: TypeAlias = Literal["correct", "partial", "incorrect"]
Grade: TypeAlias = Literal["A", "B", "C", "D", "F"]

COLLEGE_TYPES: tuple[CollegeType, ...] = get_args(CollegeType)
SESSION_STATUSES: tuple[SessionStatus, ...] = get_args(SessionStatus)
FEEDBACK_TYPES: tuple[FeedbackType, ...] = get_args(FeedbackType)
GRADES: tuple[Grade, ...] = get_args(Grade)

# Typed error codes, `{"error": {"code", "message"}}` wherever they surface. Each code is named
# once, in the group of the surface that introduced it; a code may surface elsewhere too (an
# `at_capacity` answers an HTTP request, a WebSocket and a job alike). `ErrorCode` is all of them.

# The voice WebSocket's `error` event (docs/protocol.md): the only codes a WebSocket carries.
WireErrorCode: TypeAlias = Literal[
    # non-fatal: the offending message is discarded and the session goes on
    "invalid_json",
    "unknown_event",
    "invalid_event",
    "audio_format",
    "frame_too_large",
    "rate_limited",
    "transcription_failed",
    # fatal: the server closes the connection with the close code docs/protocol.md lists
    "unauthorized",
    "token_expired",
    "session_not_found",
    "session_closed",
    "session_busy",
    "session_elsewhere",
    "at_capacity",
    "too_many_connections",
    "database_unavailable",
    "internal_error",
]
# Opening a session and the sessions API (HTTP bodies; the RunPod jobs that open sessions).
RequestErrorCode: TypeAlias = Literal[
    "invalid_request",
    "unsupported_media_type",
    "request_timeout",
    "conflict",
    "forbidden_origin",
    "not_found",
    "practice_disabled",
    "shutting_down",
    "unhealthy",
    "unknown_scenario",
]
# RunPod jobs only (docs/deployment.md).
JobErrorCode: TypeAlias = Literal[
    "missing_action",
    "unknown_action",
    "invalid_input",
    "invalid_base64",
    "invalid_audio",
    "audio_too_large",
    "unknown_college_type",
    "unknown_question",
    "unknown_session",
    "models_not_ready",
    "evaluation_failed",
    "model_error",
]
ErrorCode: TypeAlias = Literal[WireErrorCode, RequestErrorCode, JobErrorCode]
ERROR_CODES: tuple[ErrorCode, ...] = get_args(ErrorCode)
