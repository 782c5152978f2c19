"""The wire protocol: round trips of every event, each error path, and fuzzed client input."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from worker.protocol import (
    CLIENT_EVENT_TYPES,
    CLOSE_CODE_FOR,
    INPUT_AUDIO_FORMAT,
    MAX_AUDIO_FRAME_BYTES,
    MAX_TEXT_FRAME_BYTES,
    PROTOCOL_VERSION,
    AudioFormat,
    ClientEvent,
    CloseCode,
    ErrorCode,
    ErrorEvent,
    ExamCompletedEvent,
    ExamEvaluationEvent,
    ExamQuestionEvent,
    ExamRepeatEvent,
    InputAudioBufferClearedEvent,
    InputAudioBufferClearEvent,
    PingEvent,
    PongEvent,
    ProtocolError,
    ResponseCancelEvent,
    ResponseCancelledEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
    ResponseTranscriptDeltaEvent,
    SessionCreatedEvent,
    SessionEndedEvent,
    SessionEndEvent,
    SessionUpdateEvent,
    SpeechStartedEvent,
    SpeechStoppedEvent,
    TranscriptionCompletedEvent,
    TurnDetection,
    WireEvent,
    check_audio_frame,
    dump,
    parse_client_event,
    parse_server_event,
    pcm16_ms,
)

TURNS = TurnDetection(
    threshold=0.5,
    min_speech_ms=250,
    silence_duration_ms=500,
    min_interrupt_ms=300,
    min_answer_seconds=3,
    max_answer_seconds=120,
    nudge_after_seconds=15,
)

SERVER_EVENTS: list[WireEvent] = [
    SessionCreatedEvent(
        session_code="VIVA-7K2M9Q",
        question_count=12,
        output_audio_format=AudioFormat(sample_rate=24_000),
        turn_detection=TURNS,
    ),
    SpeechStartedEvent(item_id="item_1", audio_start_ms=1280),
    SpeechStoppedEvent(item_id="item_1", audio_end_ms=5120),
    InputAudioBufferClearedEvent(),
    TranscriptionCompletedEvent(
        item_id="item_1",
        transcript="Ischaemia of the myocardium.",
        confidence=0.91,
        question_number=1,
    ),
    ResponseCreatedEvent(response_id="resp_1", kind="acknowledge"),
    ResponseTranscriptDeltaEvent(response_id="resp_1", delta="Good. "),
    ResponseDoneEvent(response_id="resp_1", latency_ms=312.5, audio_ms=1400),
    ResponseDoneEvent(response_id="resp_0", latency_ms=None, audio_ms=2100),
    ResponseCancelledEvent(response_id="resp_2", reason="barge_in", audio_ms=640),
    ExamQuestionEvent(number=2, total=12, text="What is the first-line drug for angina?"),
    ExamEvaluationEvent(
        question_number=1,
        score=7.5,
        max_score=10,
        feedback_type="partial",
        feedback="Named ischaemia; missed the coronary arteries.",
    ),
    ExamCompletedEvent(
        status="completed",
        total_score=84,
        max_score=120,
        percentage=70.0,
        grade="B",
        passed=True,
    ),
    SessionEndedEvent(reason="completed"),
    ErrorEvent(code="invalid_json", message="not valid JSON", event_id="evt_9"),
    PongEvent(event_id="evt_10"),
]

CLIENT_EVENTS: list[WireEvent] = [
    SessionUpdateEvent(client_info={"app": "web", "version": "1.4.2", "echo_cancel": True}),
    SessionUpdateEvent(),
    InputAudioBufferClearEvent(),
    ResponseCancelEvent(),
    ResponseCancelEvent(response_id="resp_2", event_id="evt_1"),
    ExamRepeatEvent(),
    SessionEndEvent(),
    PingEvent(event_id="p1"),
]


def test_every_event_type_is_covered() -> None:
    assert {e.type for e in CLIENT_EVENTS} == set(CLIENT_EVENT_TYPES)
    assert {e.type for e in SERVER_EVENTS} == {
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.cleared",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.audio_transcript.delta",
        "response.done",
        "response.cancelled",
        "exam.question",
        "exam.evaluation",
        "exam.completed",
        "session.ended",
        "error",
        "pong",
    }


@pytest.mark.parametrize("event", SERVER_EVENTS, ids=lambda e: e.type)
def test_server_event_round_trip(event: WireEvent) -> None:
    text = dump(event)
    assert json.loads(text)["type"] == event.type
    assert parse_server_event(text) == event
    assert parse_server_event(text.encode()) == event


@pytest.mark.parametrize("event", CLIENT_EVENTS, ids=lambda e: e.type)
def test_client_event_round_trip(event: WireEvent) -> None:
    assert parse_client_event(dump(event)) == event


def test_dump_is_compact_and_keeps_nulls() -> None:
    text = dump(ResponseDoneEvent(response_id="r", latency_ms=None, audio_ms=0))
    assert text == (
        '{"type":"response.done","response_id":"r","latency_ms":null,"audio_ms":0,"stages_ms":null}'
    )


def test_session_created_announces_version_and_formats() -> None:
    event = SERVER_EVENTS[0]
    body = json.loads(dump(event))
    assert body["protocol_version"] == PROTOCOL_VERSION == "1"
    assert body["input_audio_format"] == {
        "encoding": "pcm16le",
        "sample_rate": 16000,
        "channels": 1,
    }
    assert body["output_audio_format"]["sample_rate"] == 24_000
    assert body["turn_detection"]["type"] == "server_vad"
    assert INPUT_AUDIO_FORMAT.sample_rate == 16_000


def test_events_are_frozen() -> None:
    with pytest.raises(ValidationError):
        PingEvent().event_id = "x"  # type: ignore[misc]


def test_server_events_ignore_unknown_fields() -> None:
    # An additive change (a new field) must not break a v1 client.
    event = parse_server_event('{"type":"session.ended","reason":"timeout","after_s":900}')
    assert event == SessionEndedEvent(reason="timeout")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"type":"session.created"', "invalid_json"),
        ('{"type":"no.such.event"}', "unknown_event"),
        ('{"type":"session.ended","reason":"bored"}', "invalid_event"),
    ],
)
def test_parse_server_event_errors(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_server_event(text)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("text", "code", "fragment"),
    [
        ("", "invalid_json", "not valid JSON"),
        ("{'type': 'ping'}", "invalid_json", "not valid JSON"),
        ('{"type":"ping"', "invalid_json", "not valid JSON"),
        ('{"type":"session.update","client_info":{"x":NaN}}', "invalid_json", "NaN"),
        ("[" * 5000 + "]" * 5000, "invalid_json", "not valid JSON"),
        ('["ping"]', "invalid_event", "expected a JSON object, got list"),
        ('"ping"', "invalid_event", "got str"),
        ("null", "invalid_event", "got NoneType"),
        ("{}", "invalid_event", "'type' is missing"),
        ('{"type":7}', "invalid_event", "'type' is missing or not a string"),
        ('{"type":"response.create"}', "unknown_event", "'response.create'"),
        ('{"type":"' + "x" * 500 + '"}', "unknown_event", "..."),
        ('{"type":"ping","extra":1}', "invalid_event", "ping: extra: Extra inputs"),
        ('{"type":"session.update","show_scores":true}', "invalid_event", "show_scores"),
        ('{"type":"response.cancel","response_id":5}', "invalid_event", "response_id"),
        ('{"type":"ping","event_id":""}', "invalid_event", "event_id"),
        (
            '{"type":"session.update","client_info":{"a":[1],"b":{}}}',
            "invalid_event",
            "client_info.a: matches none of the allowed types; client_info.b",
        ),
        ('{"type":"session.update","client_info":"web"}', "invalid_event", "client_info"),
        (
            json.dumps({"type": "session.update", "client_info": {str(i): i for i in range(40)}}),
            "invalid_event",
            "client_info",
        ),
        (
            '{"type":"ping","a":1,"b":2,"c":3,"d":4,"e":5}',
            "invalid_event",
            "(and 2 more)",
        ),
        ('{"type":"ping"}' + " " * MAX_TEXT_FRAME_BYTES, "frame_too_large", "16384"),
        ('{"type":"ping","event_id":"' + "é" * 8200 + '"}', "frame_too_large", "bytes"),
    ],
)
def test_parse_client_event_errors(text: str, code: ErrorCode, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_event(text)
    assert info.value.code == code
    assert fragment in info.value.message
    assert len(info.value.message) < 600
    event = info.value.to_event()
    assert event.code == code and parse_server_event(dump(event)) == event


def test_strict_validation_does_not_coerce() -> None:
    with pytest.raises(ProtocolError, match="event_id"):
        parse_client_event('{"type":"ping","event_id":12}')


def test_error_echoes_event_id_when_readable() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_event('{"type":"response.cancle","event_id":"evt_42"}')
    assert info.value.to_event() == ErrorEvent(
        code="unknown_event", message=info.value.message, event_id="evt_42"
    )
    with pytest.raises(ProtocolError) as info:
        parse_client_event('{"type":"nope","event_id":["evt"]}')
    assert info.value.event_id is None


def test_text_frame_at_the_limit_is_accepted() -> None:
    base = '{"type":"ping"}'
    assert parse_client_event(base + " " * (MAX_TEXT_FRAME_BYTES - len(base))) == PingEvent()


def test_check_audio_frame_accepts_whole_samples() -> None:
    check_audio_frame(b"\x00\x01")
    check_audio_frame(bytes(MAX_AUDIO_FRAME_BYTES))
    assert pcm16_ms(MAX_AUDIO_FRAME_BYTES) == 1000
    assert pcm16_ms(960, sample_rate=24_000) == 20


@pytest.mark.parametrize(
    ("size", "code"),
    [
        (0, "audio_format"),
        (1, "audio_format"),
        (641, "audio_format"),
        (MAX_AUDIO_FRAME_BYTES + 1, "frame_too_large"),
        (MAX_AUDIO_FRAME_BYTES + 2, "frame_too_large"),
    ],
)
def test_check_audio_frame_errors(size: int, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        check_audio_frame(bytes(size))
    assert info.value.code == code


def test_fatal_codes_have_close_codes() -> None:
    assert CLOSE_CODE_FOR["at_capacity"] == CloseCode.TRY_AGAIN_LATER == 1013
    assert CLOSE_CODE_FOR["unauthorized"] == CloseCode.POLICY_VIOLATION == 1008
    assert CLOSE_CODE_FOR["internal_error"] == 1011
    non_fatal = {"invalid_json", "unknown_event", "invalid_event", "audio_format"}
    assert non_fatal.isdisjoint(CLOSE_CODE_FOR)
    assert set(CLOSE_CODE_FOR) <= set(typing.get_args(ErrorCode))
    assert all(code >= 4000 for code in CloseCode if code.name.startswith("SESSION_"))


def test_docs_examples_are_exact_dumps() -> None:
    """docs/protocol.md shows every server event as `dump` writes it, and valid client events."""
    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")
    shown = set()
    for block in re.findall(r"```json\n(.*?)```", doc, re.S):
        compact = json.dumps(json.loads(block), separators=(",", ":"), ensure_ascii=False)
        assert dump(parse_server_event(compact)) == compact
        shown.add(json.loads(block)["type"])
    assert shown == {e.type for e in SERVER_EVENTS}
    client = {parse_client_event(m).type for m in re.findall(r"^\| `(\{.*?\})`", doc, re.M)}
    assert client == set(CLIENT_EVENT_TYPES)


# --- fuzzing: any input gives a ClientEvent or a ProtocolError, nothing else ------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(["type", "event_id", "client_info", "response_id", "x"])
# Any object, plus objects with a known (or random) type, so validation itself is exercised.
EVENT_OBJECTS = st.dictionaries(FIELDS | st.text(max_size=8), JSON, max_size=5) | st.builds(
    lambda kind, rest: {**rest, "type": kind},
    st.sampled_from(sorted(CLIENT_EVENT_TYPES)) | st.text(max_size=12),
    st.dictionaries(FIELDS, JSON, max_size=3),
)


def _parse_or_error(text: str) -> None:
    try:
        event = parse_client_event(text)
    except ProtocolError as exc:
        assert exc.code in typing.get_args(ErrorCode)
        assert exc.message
    else:
        assert isinstance(event, typing.get_args(typing.get_args(ClientEvent)[0]))
        assert parse_client_event(dump(event)) == event


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_fuzz_arbitrary_text(text: str) -> None:
    _parse_or_error(text)


@settings(max_examples=500, deadline=None)
@given(EVENT_OBJECTS)
def test_fuzz_arbitrary_json_objects(obj: dict[str, object]) -> None:
    _parse_or_error(json.dumps(obj))
