"""RunPod job inputs: validation, typed errors, audio decoding, the examiner's reply, ws_url."""

from __future__ import annotations

import base64
import io
import wave
from typing import Any

import numpy as np
import pytest

from core.config import ExamConfig, ServerConfig
from worker.exam.flow import ACKNOWLEDGEMENTS, MOVE_ON, Question
from worker.exam.probes import leaks
from worker.runpod.audio import MAX_AUDIO_B64_CHARS, MAX_AUDIO_BYTES, decode_audio, wav_bytes
from worker.runpod.jobs import (
    EvaluateJob,
    HealthJob,
    JobError,
    SessionJob,
    VivaJob,
    examiner_reply,
    parse_job,
)
from worker.service.urls import public_ws_base


def _wav(samples: np.ndarray, rate: int = 16000, channels: int = 1, width: int = 2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 2:
            w.writeframes((samples * 32767).astype("<i2").tobytes())
        else:
            w.writeframes(((samples + 1) * 127).astype("u1").tobytes())
    return out.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _code(raw: Any) -> str:
    with pytest.raises(JobError) as err:
        parse_job(raw)
    return err.value.code


EVALUATE = {"action": "evaluate", "text": "an offer", "question_id": 3}
VIVA = {
    "action": "viva",
    "student_id": "s-1",
    "college_type": "law",
    "scenario_id": "law_of_contract",
    "answers": [{"text": "offer and acceptance"}],
}
SESSION = {k: v for k, v in VIVA.items() if k != "answers"} | {"action": "session"}


def test_each_action_parses() -> None:
    assert isinstance(parse_job({"action": "health"}), HealthJob)
    assert isinstance(parse_job(EVALUATE), EvaluateJob)
    assert isinstance(parse_job(VIVA), VivaJob)
    session = parse_job({**SESSION, "timeout_s": 60})
    assert isinstance(session, SessionJob) and session.timeout_s == 60


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ({}, "missing_action"),
        ({"text": "hi"}, "missing_action"),
        ("health", "invalid_input"),
        (None, "invalid_input"),
        ({"action": "grade"}, "unknown_action"),
        ({"action": 5}, "unknown_action"),
        ({"action": "health", "extra": 1}, "invalid_input"),
        ({**VIVA, "college_type": "astrology"}, "unknown_college_type"),
        ({**VIVA, "answers": []}, "invalid_input"),
        ({**VIVA, "student_id": "no spaces"}, "invalid_input"),
        ({**VIVA, "answers": [{"text": "a", "audio_b64": "AAAA"}]}, "invalid_input"),
        ({**VIVA, "answers": [{}]}, "invalid_input"),
        ({**EVALUATE, "question_id": None}, "invalid_input"),
        ({**EVALUATE, "question_text": "Why?"}, "invalid_input"),
        ({"action": "evaluate", "text": "x", "question_text": "Why?"}, "invalid_input"),
        ({**EVALUATE, "session_code": "VIVA-ABC"} | {"question_id": None}, "invalid_input"),
        ({**EVALUATE, "sample_rate": 16000}, "invalid_input"),
        ({**EVALUATE, "text": None, "audio_b64": "AAAA", "sample_rate": 4000}, "invalid_input"),
        ({**SESSION, "timeout_s": 0}, "invalid_input"),
        ({**SESSION, "answers": []}, "invalid_input"),
        ({**SESSION, "college_type": "LAW"}, "unknown_college_type"),
    ],
)
def test_bad_inputs_have_typed_errors(raw: Any, code: str) -> None:
    assert _code(raw) == code


def test_error_item_shape_and_message_names_the_field() -> None:
    with pytest.raises(JobError) as err:
        parse_job({**VIVA, "student_id": ""})
    item = err.value.as_item()
    assert item["error"]["code"] == "invalid_input"
    assert item["error"]["message"].startswith("student_id:")


def test_question_text_with_keywords() -> None:
    job = parse_job(
        {
            "action": "evaluate",
            "text": "offer",
            "question_text": "What makes a contract?",
            "expected_keywords": ["offer", "acceptance"],
        }
    )
    assert isinstance(job, EvaluateJob) and job.expected_keywords == ("offer", "acceptance")


# --- audio -------------------------------------------------------------------------------------


def test_wav_at_16k_decodes_unchanged() -> None:
    tone = _tone(1.0)
    audio = decode_audio(_b64(_wav(tone)))
    assert audio.source == "wav" and audio.source_rate == 16000
    assert audio.samples.dtype == np.float32 and len(audio.samples) == 16000
    assert np.allclose(audio.samples, tone, atol=1e-3)


def test_stereo_44k_wav_is_mixed_down_and_resampled() -> None:
    tone = _tone(0.5, 44100)
    stereo = np.repeat(tone, 2)
    audio = decode_audio(_b64(_wav(stereo, 44100, channels=2)))
    assert len(audio.samples) == 8000 and abs(audio.duration_s - 0.5) < 1e-3
    assert abs(float(np.abs(audio.samples).max()) - 0.3) < 0.02


def test_raw_pcm16_needs_its_rate() -> None:
    pcm = (_tone(1.0, 24000) * 32767).astype("<i2").tobytes()
    audio = decode_audio(_b64(pcm), sample_rate=24000)
    assert audio.source == "pcm16" and len(audio.samples) == 16000
    with pytest.raises(JobError) as err:
        decode_audio(_b64(pcm))
    assert err.value.code == "invalid_audio"


@pytest.mark.parametrize(
    ("data", "rate", "code"),
    [
        (b"RIFF\x10\x00\x00\x00WAVEjunkjunk", None, "invalid_audio"),  # a torn WAV
        (_wav(_tone(0.5), width=1), None, "invalid_audio"),  # 8-bit
        (_wav(_tone(0.5, 4000), rate=4000), None, "invalid_audio"),  # rate out of range
        (b"\x00\x01\x02", 16000, "invalid_audio"),  # odd byte count
        (bytes(64), 16000, "invalid_audio"),  # 2 ms: too short
        (bytes(2 * 16000 * 121), 16000, "audio_too_large"),  # 121 s
        (_wav(np.zeros(16000 * 121, dtype=np.float32)), None, "audio_too_large"),
    ],
)
def test_bad_audio(data: bytes, rate: int | None, code: str) -> None:
    with pytest.raises(JobError) as err:
        decode_audio(_b64(data), rate)
    assert err.value.code == code, err.value.message


def test_invalid_base64_and_oversized_payloads() -> None:
    for text in ("not base64!!", "QUJD=extra", "A"):
        with pytest.raises(JobError) as err:
            decode_audio(text, 16000)
        assert err.value.code == "invalid_base64"
    with pytest.raises(JobError) as err:
        decode_audio("A" * (MAX_AUDIO_B64_CHARS + 4), 16000)
    assert err.value.code == "audio_too_large"
    with pytest.raises(JobError) as err:
        decode_audio(_b64(bytes(MAX_AUDIO_BYTES + 2)), 48000)
    assert err.value.code == "audio_too_large"


def test_wav_bytes_round_trip() -> None:
    pcm = (_tone(0.25, 22050) * 32767).astype("<i2").tobytes()
    with wave.open(io.BytesIO(wav_bytes(pcm, 22050))) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        assert w.readframes(w.getnframes()) == pcm


# --- the examiner's reply ----------------------------------------------------------------------

QUESTION = Question(7, 1, "What makes a contract?", ("offer", "acceptance", "consideration"), "")


def test_reply_follows_the_exam_flow() -> None:
    exam = ExamConfig()
    partial = examiner_reply(QUESTION, "there must be an offer", exam)
    assert partial.kind == "followup" and not leaks(partial.text, QUESTION.expected_keywords)
    full = examiner_reply(QUESTION, "an offer, acceptance and consideration", exam)
    assert full.kind == "acknowledge" and full.text in ACKNOWLEDGEMENTS
    assert examiner_reply(QUESTION, "I don't know", exam).text == MOVE_ON
    assert examiner_reply(QUESTION, "", exam).text == MOVE_ON
    no_followups = examiner_reply(QUESTION, "an offer", ExamConfig(max_followups=0))
    assert no_followups.kind == "acknowledge"
    short = examiner_reply(QUESTION, "offer", ExamConfig(min_answer_duration_seconds=60))
    assert short.kind == "followup"  # the minimum answer length does not apply to jobs


# --- where students connect --------------------------------------------------------------------


def test_public_ws_base_order() -> None:
    server = ServerConfig(port=8000)
    runpod = {"RUNPOD_PUBLIC_IP": "203.0.113.7", "RUNPOD_TCP_PORT_8000": "40123"}
    assert public_ws_base(server, {}) is None
    assert public_ws_base(server, {"RUNPOD_PUBLIC_IP": "203.0.113.7"}) is None
    assert public_ws_base(server, runpod) == "ws://203.0.113.7:40123"
    assert public_ws_base(ServerConfig(port=9000), runpod) is None  # a mapping of another port
    configured = ServerConfig(port=8000, public_url="https://abc-8000.proxy.runpod.net/")
    assert public_ws_base(configured, runpod) == "wss://abc-8000.proxy.runpod.net"
