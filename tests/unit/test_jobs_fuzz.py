"""Fuzzing the job inputs: any JSON a client can send as a RunPod job, and any bytes as audio,
either parse or fail with a typed JobError; nothing else escapes."""

from __future__ import annotations

import base64
import typing

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.runpod.audio import decode_audio
from worker.runpod.jobs import Job, JobError, parse_job

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=15,
)
FIELDS = st.sampled_from(
    [
        "action", "audio_b64", "sample_rate", "text", "question_id", "question_text",
        "expected_keywords", "session_code", "college_type", "scenario_id", "student_id",
        "answers", "timeout_s",
    ]
)  # fmt: skip
B64 = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
ACTIONS = st.sampled_from(["evaluate", "viva", "session", "health"]) | st.text(max_size=10)
JOBS = JSON | st.builds(
    lambda action, rest: {**rest, "action": action},
    ACTIONS,
    st.dictionaries(FIELDS, JSON | B64),
)


@settings(max_examples=3000, deadline=None)
@given(JOBS)
def test_any_job_input_parses_or_fails_typed(raw: object) -> None:
    try:
        job = parse_job(raw)
    except JobError as exc:
        assert exc.code and exc.message
    else:
        assert isinstance(job, typing.get_args(Job))


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=4096), st.none() | st.integers(min_value=-10, max_value=200_000))
def test_any_audio_bytes_decode_or_fail_typed(data: bytes, rate: int | None) -> None:
    try:
        decoded = decode_audio(base64.b64encode(data).decode(), rate)
    except JobError as exc:
        assert exc.code in {"invalid_audio", "audio_too_large", "invalid_input", "invalid_base64"}
        assert exc.message
    else:
        assert decoded.samples.ndim == 1 and decoded.duration_s >= 0
