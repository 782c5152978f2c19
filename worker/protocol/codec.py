"""Parsing and checking what crosses the voice WebSocket: client events (strict, typed errors),
server events (for clients: tests, the benchmark), audio frames, and compact JSON out.
Pure functions; the event models are in `worker.protocol.events`.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from pydantic import ValidationError

from worker.protocol.events import (
    CLIENT_ADAPTER,
    CLIENT_EVENT_TYPES,
    INPUT_SAMPLE_RATE,
    MAX_AUDIO_FRAME_BYTES,
    MAX_TEXT_FRAME_BYTES,
    SERVER_ADAPTER,
    ClientEvent,
    ErrorCode,
    ProtocolError,
    ServerEvent,
    WireEvent,
)


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _short(value: object, limit: int = 64) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_UNION_MEMBERS = frozenset({"str", "int", "float", "bool"})


def _summarise(exc: ValidationError, limit: int = 3, skip: int = 0) -> str:
    """Which fields were wrong and why, without echoing the client's values.

    `skip` drops leading location parts (a discriminated union puts the tag first); the errors
    of one value against each member of a scalar union are folded into one.
    """
    fields: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False, include_input=False):
        loc = [str(part)[:64] for part in err["loc"][skip:]]
        if len(loc) > 1 and loc[-1] in _UNION_MEMBERS:
            loc.pop()
        fields.setdefault(".".join(loc) or "event", []).append(err["msg"])
    parts = [
        f"{where}: {msgs[0] if len(msgs) == 1 else 'matches none of the allowed types'}"
        for where, msgs in fields.items()
    ]
    more = len(parts) - limit
    return "; ".join(parts[:limit]) + (f" (and {more} more)" if more > 0 else "")


def parse_client_event(text: str) -> ClientEvent:
    """Validate one text frame from the client; raises ProtocolError with a typed code."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_FRAME_BYTES:
        raise ProtocolError(
            "frame_too_large", f"text frame of {size} bytes exceeds {MAX_TEXT_FRAME_BYTES}"
        )
    try:
        data: Any = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("invalid_json", f"not valid JSON: {_short(str(exc), 120)}") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_event", f"expected a JSON object, got {type(data).__name__}")
    event_id = data.get("event_id")
    if not (isinstance(event_id, str) and 0 < len(event_id) <= 64):
        event_id = None
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_event", "field 'type' is missing or not a string", event_id)
    if kind not in CLIENT_EVENT_TYPES:
        raise ProtocolError("unknown_event", f"unknown event type {_short(kind)}", event_id)
    try:
        # strict: no coercion ("1" is not a number, 1 is not true)
        return CLIENT_ADAPTER.validate_python(data, strict=True)
    except ValidationError as exc:
        summary = f"{kind}: {_summarise(exc, skip=1)}"
        raise ProtocolError("invalid_event", summary, event_id) from None


def parse_server_event(text: str | bytes) -> ServerEvent:
    """Validate one server event, for clients (tests, the benchmark).

    Unknown fields are ignored; an unknown `type` raises ProtocolError("unknown_event"), which a
    client should skip rather than fail on (see the versioning rules).
    """
    try:
        return SERVER_ADAPTER.validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        code: ErrorCode = "invalid_event"
        if first["type"] == "json_invalid":
            code = "invalid_json"
        elif first["type"] == "union_tag_invalid":
            code = "unknown_event"
        raise ProtocolError(code, _summarise(exc)) from None


def check_audio_frame(data: bytes) -> None:
    """Refuse a binary frame that is not whole PCM16 samples within the size limit."""
    if len(data) > MAX_AUDIO_FRAME_BYTES:
        raise ProtocolError(
            "frame_too_large",
            f"audio frame of {len(data)} bytes exceeds {MAX_AUDIO_FRAME_BYTES} (1 s at 16 kHz)",
        )
    if not data:
        raise ProtocolError("audio_format", "audio frame is empty")
    if len(data) % 2:
        raise ProtocolError(
            "audio_format", f"audio frame of {len(data)} bytes is not whole PCM16 samples"
        )


def pcm16_ms(num_bytes: int, sample_rate: int = INPUT_SAMPLE_RATE) -> float:
    """Duration of mono PCM16 audio of this many bytes."""
    return num_bytes * 1000 / (2 * sample_rate)


def dump(event: WireEvent) -> str:
    """Compact JSON for one text frame."""
    return event.model_dump_json()
