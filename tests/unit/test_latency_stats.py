"""The latency benchmark's pure parts: percentiles, overhead, voiced spans, the per-turn records
built from protocol events, and the summary the table and JSON are made of (no server)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from benchmarks.latency import Row, stage_p50s, summarize, worker_env
from benchmarks.latency_client import (
    FRAME_SAMPLES,
    SILENCE,
    Clip,
    StudentResult,
    TurnRecord,
    TurnTracker,
    by_length,
    interleave_by_length,
    length_bucket,
    load_clips,
    overhead_ms,
    percentile,
    quantiles,
    voiced_span,
)

# --- percentiles and overhead ----------------------------------------------------------------


def test_percentile_matches_numpy_linear() -> None:
    rng = random.Random(4)
    for n in (1, 2, 3, 10, 101, 1000):
        values = [rng.uniform(0, 900) for _ in range(n)]
        for q in (0, 1, 50, 95, 99, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5  # between the two middle ranks
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0  # order of input does not matter


def test_quantiles_rounds_and_names_keys() -> None:
    assert quantiles([100.04, 200.0, 300.0]) == {"p50": 200.0, "p95": 290.0, "p99": 298.0}
    assert quantiles([], (50, 95)) == {"p50": None, "p95": None}


def test_overhead_is_latency_less_critical_path_models() -> None:
    assert overhead_ms(312.5, {"critical_path_models": 305.0, "asr": 100.0}) == 7.5
    assert overhead_ms(312.5, {"asr": 100.0}) is None  # the server did not say
    assert overhead_ms(None, {"critical_path_models": 305.0}) is None
    record = TurnRecord(0, 1, "acknowledge", 250.0, 700.0, {"critical_path_models": 240.0})
    assert record.overhead_ms == 10.0


def test_answer_lengths_fall_into_buckets() -> None:
    assert [length_bucket(s) for s in (0.4, 4.99, 5.0, 9.9, 10.0, 19.9, 20.0, 60)] == [
        "<5s", "<5s", "5-10s", "5-10s", "10-20s", "10-20s", ">=20s", ">=20s",
    ]  # fmt: skip


def test_figures_by_length_have_p50_p95_and_n_per_bucket() -> None:
    pairs = [(3.0, 200.0), (4.0, 220.0), (4.5, 240.0), (15.0, 300.0), (18.0, 500.0)]
    out = by_length(pairs)
    assert out["<5s"] == {"p50": 220.0, "p95": 238.0, "n": 3}
    assert out["5-10s"] == {"p50": None, "p95": None, "n": 0}  # always there, even empty
    assert out["10-20s"] == {"p50": 400.0, "p95": 490.0, "n": 2}
    assert ">=20s" not in out
    assert by_length([(25.0, 100.0)])[">=20s"] == {"p50": 100.0, "p95": 100.0, "n": 1}
    assert json.loads(json.dumps(out)) == out


def test_clips_are_interleaved_by_length() -> None:
    def clip(name: str, seconds: float) -> Clip:
        return Clip(name, bytes(2 * FRAME_SAMPLES), 0, int(seconds * 16000))

    clips = [clip("s1", 3), clip("s2", 4), clip("s3", 4.5), clip("m1", 7), clip("l1", 15)]
    clips.append(clip("l2", 18))
    order = [c.name for c in interleave_by_length(clips)]
    assert order == ["s1", "m1", "l1", "s2", "l2", "s3"]
    committed = interleave_by_length(load_clips())
    assert {length_bucket(c.voiced_s) for c in committed[:3]} == {"<5s", "5-10s", "10-20s"}
    assert sum(10 <= c.voiced_s < 20 for c in committed) >= 3  # the long answers are in the mix


# --- clips -----------------------------------------------------------------------------------


def test_voiced_span_finds_the_tone_in_silence() -> None:
    tone = (8000 * np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000)).astype(np.int16)
    audio = np.concatenate([np.zeros(8000, np.int16), tone, np.zeros(4000, np.int16)])
    start, end = voiced_span(audio)  # type: ignore[misc]
    assert start == 8000 and end == 24000
    assert voiced_span(np.zeros(16000, np.int16)) is None
    assert voiced_span(np.zeros(10, np.int16)) is None


def test_committed_clips_have_whole_frames_and_a_voiced_end() -> None:
    clips = {c.name: c for c in load_clips()}
    assert "silence_2s" not in clips and "noise_2s" not in clips
    for clip in clips.values():
        assert len(clip.pcm) % len(SILENCE) == 0
        assert 0 < clip.voiced_start < clip.voiced_end <= clip.frames * FRAME_SAMPLES
        assert clip.last_voiced_frame < clip.frames
    assert clips["law_contract"].voiced_s > 3.0  # long enough to count as an answer


# --- turns from protocol events --------------------------------------------------------------


def _created(rid: str, kind: str) -> dict:
    return {"type": "response.created", "response_id": rid, "kind": kind}


def _done(rid: str, latency: float | None = None) -> dict:
    return {"type": "response.done", "response_id": rid, "latency_ms": latency, "audio_ms": 900}


def test_a_normal_turn_becomes_one_record() -> None:
    t = TurnTracker(session=3, turns=2)
    assert t.feed({"type": "session.created", "session_code": "VIVA-1"}, 0.0) is None
    assert t.feed(_created("resp_1", "greeting"), 0.1) is None
    t.audio(0.2)  # greeting audio is not a reply
    assert t.feed(_done("resp_1"), 1.0) is None
    assert t.feed({"type": "exam.question", "number": 1, "total": 12, "text": "Q"}, 1.0) is None
    assert t.feed(_created("resp_2", "question"), 1.0) is None
    assert t.feed(_done("resp_2"), 4.0) == "answer"
    assert t.phase == "answering"
    t.voiced_end_sent(9.0)
    t.voiced_end_sent(9.5)  # only the first counts
    t.feed({"type": "input_audio_buffer.speech_stopped", "item_id": "i", "audio_end_ms": 1}, 9.6)
    t.feed(_created("resp_3", "acknowledge"), 9.7)
    t.audio(9.75)
    t.audio(9.9)
    stages = {"endpoint_wait": 500, "asr": 20.5, "critical_path_models": 200, "note": "x"}
    done = {**_done("resp_3", 250.0), "stages_ms": stages}
    assert t.feed(done, 11.0) is None
    assert t.phase == "listening"
    (record,) = t.records
    assert (record.session, record.turn, record.reply_kind) == (3, 1, "acknowledge")
    assert record.latency_ms == 250.0
    assert record.v2v_ms == pytest.approx(750.0)
    assert record.stages_ms == {"endpoint_wait": 500.0, "asr": 20.5, "critical_path_models": 200.0}
    assert record.overhead_ms == 50.0
    assert not t.errors


def test_a_followup_is_answered_and_the_last_turn_ends_the_session() -> None:
    t = TurnTracker(session=0, turns=2)
    t.feed(_created("r1", "question"), 0.0)
    assert t.feed(_done("r1"), 1.0) == "answer"
    t.voiced_end_sent(5.0)
    t.feed(_created("r2", "followup"), 5.5)
    t.audio(5.6)
    assert t.feed(_done("r2", 300.0), 7.0) == "answer"  # a follow-up is a question too
    assert [r.reply_kind for r in t.records] == ["followup"]
    assert t.records[0].stages_ms == {}  # no stages_ms: an empty breakdown, not a failure
    t.voiced_end_sent(12.0)
    t.feed(_created("r3", "acknowledge"), 12.3)
    t.audio(12.4)
    assert t.feed(_done("r3", 280.0), 13.0) == "end"
    assert t.phase == "done"
    t.feed(_created("r4", "question"), 13.0)  # the next question, before session.end lands
    t.audio(13.1)
    assert t.feed(_done("r4"), 13.5) is None
    t.feed({"type": "session.ended", "reason": "terminated"}, 14.0)
    assert [r.v2v_ms for r in t.records] == [pytest.approx(600.0), pytest.approx(400.0)]
    assert not t.errors


def test_a_reply_taken_back_in_a_pause_is_not_the_answers_reply() -> None:
    t = TurnTracker(session=0, turns=1)
    t.feed(_created("r1", "question"), 0.0)
    assert t.feed(_done("r1"), 1.0) == "answer"
    t.playing(15.2)
    t.feed(_created("r2", "acknowledge"), 3.0)  # the student paused; the examiner began
    t.audio(3.1)
    t.feed({"type": "response.cancelled", "response_id": "r2", "reason": "resumed"}, 3.4)
    t.voiced_end_sent(16.0)
    t.feed(_created("r3", "acknowledge"), 16.3)
    t.audio(16.5)
    assert t.feed(_done("r3", 240.0), 17.0) == "end"
    (record,) = t.records
    assert record.v2v_ms == pytest.approx(500.0) and record.answer_s == 15.2
    assert t.errors == Counter({"cancelled:resumed": 1})


def test_a_reply_before_the_answer_ended_has_no_v2v() -> None:
    t = TurnTracker(session=0, turns=3)
    t.feed(_created("r1", "question"), 0.0)
    t.feed(_done("r1"), 1.0)
    t.feed(_created("r2", "acknowledge"), 2.0)  # cut short in a pause of the clip
    t.audio(2.1)
    t.voiced_end_sent(4.0)
    t.feed(_done("r2", 200.0), 4.5)
    assert t.records[0].v2v_ms is None and t.records[0].latency_ms == 200.0
    assert t.errors == Counter({"reply_before_end_of_speech": 1})


def test_errors_and_an_early_end_are_counted() -> None:
    t = TurnTracker(session=0, turns=3)
    t.feed({"type": "error", "code": "rate_limited", "message": "slow down"}, 0.0)
    t.feed({"type": "error", "code": "rate_limited", "message": "slow down"}, 0.1)
    t.feed({"type": "some.future_event", "x": 1}, 0.2)  # unknown events are ignored
    t.feed({"type": "session.ended", "reason": "timeout"}, 1.0)
    assert t.phase == "done"
    assert t.errors == Counter({"error:rate_limited": 2, "ended_early:timeout": 1})


# --- the summary -----------------------------------------------------------------------------


def _student(index: int, latencies: list[float], finished: bool = True) -> StudentResult:
    records = [
        TurnRecord(
            index,
            n + 1,
            "acknowledge",
            lat,
            lat + 500,
            {"tts_first_audio": 30.0, "asr": 10.0, "zeta": 1.0, "critical_path_models": lat - 5},
            answer_s=4.0,
        )
        for n, lat in enumerate(latencies)
    ]
    return StudentResult(index, records, Counter(), finished, max_late_ms=1.5)


def test_summary_has_the_figures_the_json_promises() -> None:
    results = [_student(0, [100.0, 200.0]), _student(1, [300.0], finished=False)]
    results[1].errors["timeout:answering"] += 1
    server = {"loop_lag_ms": {"p50": 0.4, "p99": 3.2, "max": 9.0}}
    meta = {"profile": "fake", "url": "http://x", "duration_s": 12.0}
    out = summarize(results, Counter({"run_timeout": 1}), [0.1, 0.2, 5.0], server, meta)
    assert out["sessions"] == 2 and out["sessions_completed"] == 1 and out["turns"] == 3
    assert out["turn_latency_ms"] == {"p50": 200.0, "p95": 290.0, "p99": 298.0}
    assert out["v2v_ms"]["p50"] == 700.0
    assert out["turn_latency_ms_by_length"]["<5s"] == {"p50": 200.0, "p95": 290.0, "n": 3}
    assert out["turn_latency_ms_by_length"]["10-20s"]["n"] == 0
    assert out["v2v_ms_by_length"]["<5s"]["p50"] == 700.0
    assert str(out["turn_latency_ms_by_length"]).startswith("<5s p50 200.0  p95 290.0  n 3 | ")
    assert list(out["stages_ms"]) == ["asr", "tts_first_audio", "critical_path_models", "zeta"]
    assert out["overhead_ms"] == {"p50": 5.0, "p95": 5.0}
    assert out["loop_lag_ms"]["p99"] == 3.2
    assert set(out["client_loop_lag_ms"]) == {"p50", "p99", "max"}
    assert out["errors"] == {"run_timeout": 1, "timeout:answering": 1}
    assert json.loads(json.dumps(out))["turn_latency_ms"]["p95"] == 290.0
    assert str(out["overhead_ms"]) == "p50 5.0  p95 5.0"


def test_summary_without_server_figures() -> None:
    meta = {"profile": "cpu", "url": "http://x", "duration_s": 1.0}
    results = [StudentResult(0)]
    out = summarize(results, Counter(), [], {}, meta)
    assert out["turns"] == 0 and out["overhead_ms"] is None and out["loop_lag_ms"] is None
    assert out["turn_latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert str(Row({"p50": None})) == "p50 -"
    assert stage_p50s([]) == {}


def test_worker_env_names_every_override(tmp_path: Path) -> None:
    env = worker_env("fake", tmp_path, 8123, "k" * 12, sessions=100)
    assert env["VIVA_PROFILE"] == "fake" and env["PORT"] == "8123"
    assert env["DATABASE_URL"] == f"sqlite+aiosqlite:///{tmp_path}/bench.db"
    assert env["VIVA__SERVER__MAX_SESSIONS"] == "110"
    assert env["VIVA__WRITER__JOURNAL_DIR"] == str(tmp_path / "journal")
