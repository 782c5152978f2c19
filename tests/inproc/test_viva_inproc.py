"""The realtime core in process: a `VivaSession` on a fake socket, an in-memory writer and the
fake models, with short timings. No server, no database; each test takes a few seconds.

Barge-in, client cancel and repeat, reconnects within and past the grace period, nudges, the
time limit, a reply taken back and a backchannel over the examiner. Their end-to-end twins over
a real server and database (tests/db/test_viva_live.py) stay, to prove the wiring.

The clock is the real one (the outbox paces examiner audio against it and the listener counts
the student's audio): the timings are made short instead. The fake VAD hears a tone as speech
and zeros as silence; the fake TTS makes silence as long as the text would take to say.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from core.config import Config, load_config, replace_settings
from models.base import Audio
from models.fakes import FakeASR, FakeEOT, FakeLLM, FakeTTS, FakeVAD, rubric_mark
from models.hub import Hub
from tests.db.student import tone
from tests.inproc.fakes import FakeSocket, Microphone, RecordingWriter
from worker.exam.flow import NUDGE, TIME_UP, Question
from worker.session.viva import SessionRecord, VivaSession
from worker.voice.metrics import BARGE_INS, TAKEN_BACK
from worker.voice.speaker import PromptCache

ROOT = Path(__file__).resolve().parents[2]
TTS_CHARS_PER_S = 300.0  # the greeting (~100 characters) takes a third of a second to say
# The fake ASR's constant transcript gives the viva policy nothing to judge (see
# tests/db/helpers.py): answers end on a fixed 500 ms silence.
SETTINGS: dict[str, Any] = {
    "turn.policy": "silence",
    "exam.max_followups": 0,  # an answer is acknowledged and the next question asked
    "exam.min_answer_duration_seconds": 0.5,
    "exam.reconnect_grace_seconds": 2.0,
    "turn.nudge_after_seconds": 30.0,
    "exam.max_question_duration_seconds": 60.0,
}
LONG = (
    "Explain, with an example from a contract you have seen, how an offer differs from an "
    "invitation to treat, why the difference matters when a shop displays goods with prices, "
    "what happens when a counter offer is made, and when an acceptance sent by post takes "
    "effect under the postal rule."
)  # about a second and a half of examiner audio: long enough to talk over
QUESTIONS = (
    Question(101, 1, "What makes a contract binding?", ("offer", "acceptance"), "Offer..."),
    Question(102, 2, "What is the postal rule?", ("postal", "rule"), "The postal rule."),
    Question(103, 3, "What is consideration?", ("value",), "Something of value."),
)
TALKED_OVER = Question(104, 0, LONG, ("invitation", "treat"), "Invitation to treat.")
FIRST_LONG = (TALKED_OVER, *QUESTIONS[1:])
SECOND_LONG = (QUESTIONS[0], TALKED_OVER, QUESTIONS[2])


def _numbered(questions: tuple[Question, ...]) -> tuple[Question, ...]:
    return tuple(
        Question(q.id, n, q.text, q.expected_keywords, q.answer_guidelines, q.max_score)
        for n, q in enumerate(questions, 1)
    )


@dataclass
class Viva:
    session: VivaSession
    writer: RecordingWriter
    run: asyncio.Task[None]
    serving: list[asyncio.Task[None]]

    def connect(self) -> FakeSocket:
        """A student's connection, handed to the session as the stream route does."""
        ws = FakeSocket()
        serve = self.session.serve(cast(web.WebSocketResponse, ws), None)
        self.serving.append(asyncio.ensure_future(serve))
        return ws


Start = Callable[..., Viva]


def scripted(*texts: str) -> Callable[[Audio], str]:
    """A fake ASR transcript per call, in order (what each utterance "said")."""
    said = iter(texts)
    return lambda _audio: next(said, "something else entirely")


@pytest.fixture
async def viva() -> AsyncIterator[Start]:
    """`viva(questions=..., asr=..., **dotted settings)`: a live session, already running."""
    started: list[Viva] = []

    def start(
        questions: tuple[Question, ...] = QUESTIONS,
        asr: str | Callable[[Audio], str] = "The offer was accepted in writing",
        **settings: Any,
    ) -> Viva:
        cfg: Config = replace_settings(
            load_config(ROOT / "config.yaml", {}), {**SETTINGS, **settings}
        )
        hub = Hub(
            vad=FakeVAD(),
            asr=FakeASR(asr),
            llm=FakeLLM(json_result=rubric_mark),
            tts=FakeTTS(chars_per_s=TTS_CHARS_PER_S),
            eot=FakeEOT(),
        )
        record = SessionRecord(1, "INPROC1", 7, _numbered(questions), "student", "law")
        writer = RecordingWriter()
        session = VivaSession(record, hub, writer, cfg, PromptCache(hub.tts))
        v = Viva(session, writer, asyncio.ensure_future(session.run()), [])
        started.append(v)
        return v

    yield start
    for v in started:
        v.session.stop("server_shutdown")
        done, _ = await asyncio.wait({v.run}, timeout=10)
        for task in [*v.serving, *([] if done else [v.run])]:
            task.cancel()
        await asyncio.gather(v.run, *v.serving, return_exceptions=True)


async def until_heard(ws: FakeSocket, number: int, count: int = 1) -> str:
    """The `count`-th asking of question `number` has been said in full: the examiner now
    listens. Returns that response's id (its `response.created` follows the `exam.question`)."""
    asked = await ws.until("exam.question", count=count, number=number)
    at = next(i for i, e in enumerate(ws.events) if e is asked)
    opened = len([e for e in ws.events[:at] if e["type"] == "response.created"])
    created = await ws.until("response.created", count=opened + 1)
    await ws.until("response.done", response_id=created["response_id"])
    rid: str = created["response_id"]
    return rid


async def until_audio(ws: FakeSocket, response_id: str, nbytes: int = 4800) -> None:
    """Some of `response_id`'s audio (0.1 s at 24 kHz) has gone out."""
    for _ in range(500):
        if ws.audio_bytes(response_id) >= nbytes:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no audio of {response_id}: {ws.types()}")


def full_audio_bytes(text: str) -> int:
    return 2 * int(24_000 * len(text) / TTS_CHARS_PER_S)


async def test_barge_in_cuts_the_question_and_its_audio(viva: Start) -> None:
    v = viva(questions=FIRST_LONG)
    ws = v.connect()
    barge_ins = BARGE_INS._value.get()
    with Microphone(ws) as mic:
        q = await ws.until("response.created", kind="question")
        await until_audio(ws, q["response_id"])
        mic.say(tone(1.0))
        cancelled = await ws.until("response.cancelled")
        assert cancelled["response_id"] == q["response_id"]
        assert cancelled["reason"] == "barge_in" and cancelled["audio_ms"] > 0
        heard = await ws.until("conversation.item.input_audio_transcription.completed")
        assert heard["question_number"] == 1  # the interruption was the answer
        reply = await ws.until("response.created", kind="acknowledge")
        done = await ws.until("response.done", response_id=reply["response_id"])
    assert ws.audio_after("response.cancelled") == 0  # nothing more of the cut question
    said = ws.audio_bytes(q["response_id"])
    assert 0 < said < full_audio_bytes(f"Question 1. {LONG}") / 2
    assert done["latency_ms"] is not None
    assert {"endpoint_wait", "asr"} <= set(done["stages_ms"])
    assert BARGE_INS._value.get() == barge_ins + 1
    [answer] = await v.writer.until(v.writer.answers)
    assert answer["question_number"] == 1
    assert answer["transcribed_text"] == "The offer was accepted in writing"


async def test_client_cancel_then_repeat(viva: Start) -> None:
    v = viva(questions=FIRST_LONG)
    ws = v.connect()
    with Microphone(ws):
        q = await ws.until("response.created", kind="question")
        await until_audio(ws, q["response_id"])
        ws.send_event({"type": "response.cancel"})
        cancelled = await ws.until("response.cancelled")
        assert cancelled["reason"] == "client_cancel"
        assert cancelled["response_id"] == q["response_id"]
        ws.send_event({"type": "exam.repeat"})
        again = await ws.until("response.created", kind="repeat")
        await ws.until("response.done", response_id=again["response_id"])
    assert ws.audio_after("response.cancelled") == 0
    assert ws.audio_bytes(q["response_id"]) < full_audio_bytes(f"Question 1. {LONG}") / 2
    assert [e["number"] for e in ws.of("exam.question")] == [1, 1]
    assert f"Of course. Question 1. {LONG}" in ws.said()
    assert ws.audio_bytes(again["response_id"]) > 0
    assert v.writer.answers() == []  # asking for a repeat is not an answer


async def test_reconnect_within_grace_resumes_the_question(viva: Start) -> None:
    v = viva(**{"exam.reconnect_grace_seconds": 2.0})
    first = v.connect()
    with Microphone(first) as mic:
        await until_heard(first, 1)
        mic.say(tone(1.0))
        await first.until("conversation.item.input_audio_transcription.completed")
        await first.until("exam.question", number=2)
        first.hang_up()  # the connection drops while question 2 is asked
    await asyncio.wait_for(v.serving[0], 5)
    await asyncio.sleep(0.2)
    assert not v.session.connected and not v.run.done()  # waiting for the student
    back = v.connect()
    with Microphone(back):
        hello = await back.until("session.created")
        assert hello["resumed"] is True
        assert (await back.until("exam.question"))["number"] == 2  # asked again
        repeat = await back.until("response.created", kind="repeat")
        await back.until("response.done", response_id=repeat["response_id"])
        assert f"Welcome back. Question 2. {QUESTIONS[1].text}" in back.said()
        back.send_event({"type": "session.end"})
        result = await back.until("exam.completed")
        assert result["status"] == "terminated"
        assert (await back.until("session.ended"))["reason"] == "terminated"
        assert await back.until_closed() == 1000
    await asyncio.wait_for(v.run, 5)
    w = v.writer
    assert {"session.started", "session.resumed", "session.terminated"} <= set(w.audits())
    assert [a["question_number"] for a in w.answers()] == [1]  # the answer before the drop
    assert [u["status"] for u in w.session_updates() if "status" in u][-1] == "terminated"
    assert len(w.results()) == 1


async def test_past_the_grace_period_the_session_is_terminated(viva: Start) -> None:
    v = viva(**{"exam.reconnect_grace_seconds": 0.3})
    ws = v.connect()
    with Microphone(ws) as mic:
        await until_heard(ws, 1)
        mic.say(tone(1.0))
        await ws.until("conversation.item.input_audio_transcription.completed")
        ws.hang_up()
    await asyncio.wait_for(v.run, 5)  # nobody came back: the session ended by itself
    w = v.writer
    [answer] = w.answers()
    [evaluation] = w.evaluations()
    assert answer["question_number"] == 1 and evaluation["answer_id"] == answer["id"]
    ended = [u for u in w.session_updates() if u.get("status") == "terminated"]
    assert len(ended) == 1 and ended[0]["end_time"] is not None
    assert {"questions_answered": 1} in w.session_updates()
    [result] = w.results()
    assert result.extra["end_reason"] == "no connection within 0.3 s"
    assert result.extra["usage"]["audio_in_seconds"] > 1.0
    # The result is computed from the evaluations committed before it.
    assert w.index("upsert", "evaluations") < w.index("compute_result")
    assert "session.terminated" in w.audits()


async def test_nudge_after_silence_then_time_limit(viva: Start) -> None:
    v = viva(**{"turn.nudge_after_seconds": 0.5, "exam.max_question_duration_seconds": 2.0})
    ws = v.connect()
    with Microphone(ws):  # silence throughout
        await until_heard(ws, 1)
        nudge = await ws.until("response.created", kind="nudge")
        await ws.until("response.done", response_id=nudge["response_id"])
        await ws.until("exam.question", number=2)  # time ran out on question 1
        await ws.until("response.created", kind="question", count=2)
    kinds = [e["kind"] for e in ws.of("response.created")]
    assert kinds == ["greeting", "question", "nudge", "acknowledge", "question"]
    assert NUDGE in ws.said() and TIME_UP in ws.said()
    assert v.writer.answers() == []  # nothing was said: nothing is stored
    assert 2 in [u.get("current_question") for u in v.writer.session_updates()]


async def test_time_limit_cuts_a_long_answer_and_keeps_it(viva: Start) -> None:
    v = viva(**{"exam.max_question_duration_seconds": 2.0})
    ws = v.connect()
    with Microphone(ws) as mic:
        await until_heard(ws, 1)
        speaking = mic.say(tone(8.0))  # speech with no pause in it
        started = await ws.until("input_audio_buffer.speech_started")
        stopped = await ws.until("input_audio_buffer.speech_stopped")
        assert not speaking.done()  # cut while the student was still talking
        mic.stop_saying()
        heard = await ws.until("conversation.item.input_audio_transcription.completed")
        assert heard["question_number"] == 1
        await ws.until("exam.question", number=2)
        [answer] = await v.writer.until(v.writer.answers)  # once question 2 is heard
    spoken_ms = stopped["audio_end_ms"] - started["audio_start_ms"]
    assert 500 < spoken_ms < 2000
    assert answer["question_number"] == 1
    assert answer["audio_duration_seconds"] == pytest.approx(spoken_ms / 1000, abs=0.05)
    assert TIME_UP not in ws.said()  # the answer was taken, not timed out


async def test_a_reply_taken_back_joins_the_answer(viva: Start) -> None:
    """The answer seemed over (500 ms of silence), the examiner acknowledged it and began
    question 2, and the student went on: the examiner stops, question 1 is asked again and
    the continuation joins the answer: one row, both utterances."""
    first, second = "The offer was made in writing", "and the acceptance came by post"
    v = viva(questions=SECOND_LONG, asr=scripted(first, second))
    ws = v.connect()
    taken_back = TAKEN_BACK._value.get()
    with Microphone(ws) as mic:
        await until_heard(ws, 1)
        mic.say(tone(1.0))
        await ws.until("conversation.item.input_audio_transcription.completed")
        q2 = await ws.until("response.created", kind="question", count=2)
        mic.say(tone(1.0))  # before question 2 has been heard for commit_after_ms
        cancelled = await ws.until("response.cancelled")
        assert cancelled == {**cancelled, "reason": "barge_in", "response_id": q2["response_id"]}
        await ws.until("exam.question", count=2, number=1)  # back to question 1
        heard = await ws.until("conversation.item.input_audio_transcription.completed", count=2)
        assert heard["question_number"] == 1
        assert heard["transcript"] == f"{first} {second}"
        await until_heard(ws, 2, count=2)  # heard out: the reply stands, the answer is scored
        await v.writer.until(v.writer.evaluations)  # every answer row is written before
    assert [e["number"] for e in ws.of("exam.question")] == [1, 2, 1, 2]
    answers = v.writer.answers()
    assert len(answers) == 1
    assert answers[0]["question_number"] == 1
    assert answers[0]["transcribed_text"] == f"{first} {second}"
    assert len(v.writer.evaluations()) == 1
    assert TAKEN_BACK._value.get() == taken_back + 1


@pytest.mark.parametrize("noise", ["Mm-hmm.", ""], ids=["backchannel", "wordless"])
async def test_a_backchannel_over_the_examiner_resumes_it(viva: Start, noise: str) -> None:
    """A backchannel ("mm-hmm") or a cough (no words at all) over the question cuts it, as any
    speech does; then the question is said again, and the exam goes on as if nothing had been
    said."""
    answer = "The offer was accepted in writing"
    v = viva(questions=FIRST_LONG, asr=scripted(noise, answer))
    ws = v.connect()
    with Microphone(ws) as mic:
        q = await ws.until("response.created", kind="question")
        await until_audio(ws, q["response_id"])
        mic.say(tone(0.6))
        cancelled = await ws.until("response.cancelled")
        assert cancelled["response_id"] == q["response_id"]
        again = await until_heard(ws, 1, count=2)  # the question, from the start
        assert again != q["response_id"]
        assert not ws.of("conversation.item.input_audio_transcription.completed")
        mic.say(tone(1.0))
        heard = await ws.until("conversation.item.input_audio_transcription.completed")
        assert heard["question_number"] == 1 and heard["transcript"] == answer
        await until_heard(ws, 2)
    kinds = [e["kind"] for e in ws.of("response.created")]
    assert kinds == ["greeting", "question", "question", "acknowledge", "question"]
    [row] = await v.writer.until(v.writer.answers)
    assert row["question_number"] == 1 and row["transcribed_text"] == answer
