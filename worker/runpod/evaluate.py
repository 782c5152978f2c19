"""The `evaluate` job: one answer, spoken or written, to a bank question or one given inline ->
transcript, evaluation, the examiner's spoken reply (text and WAV audio) and stage timings. With
a `session_code`, the answer and its evaluation are written to that session."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from db.ids import new_id
from db.queries.questions import get_question
from db.queries.sessions import answer_row_ids, get_by_code
from worker.exam.evaluators import Evaluation, Question
from worker.runpod.audio import decode_audio, wav_bytes
from worker.runpod.errors import JobError
from worker.runpod.jobs import EvaluateJob, examiner_reply
from worker.runpod.shared import JobServices, evaluation_json, ms_since
from worker.service.records import question_from_row
from worker.session.scoring import RowIds


async def evaluate_job(s: JobServices, job: EvaluateJob) -> dict[str, Any]:
    started = time.perf_counter()
    hub, prompts = s.models()
    exam = s.config.exam
    timings: dict[str, float] = {}
    clip = None
    if job.audio_b64 is not None:  # checked before anything else is looked up
        clip = decode_audio(job.audio_b64, job.sample_rate)
        timings["decode"] = ms_since(started)
    session_id = await _open_for_answers(s, job.session_code)
    if job.question_id is not None:
        async with s.db.sessions() as db:
            row = await get_question(db, job.question_id)
        if row is None:
            raise JobError("unknown_question", f"no question with id {job.question_id}")
        question = question_from_row(row, exam.max_score)
    else:
        assert job.question_text is not None
        text, keywords = job.question_text, job.expected_keywords
        question = Question(0, 1, text, keywords, job.answer_guidelines, exam.max_score)
    transcript, source = await s.hear(job, question, hub, timings, clip)
    reply = examiner_reply(question, transcript.text, exam)

    async def timed_score() -> Evaluation:
        t = time.perf_counter()
        result = await s.score(hub, question, transcript.text)
        timings["evaluate"] = ms_since(t)
        return result

    async def timed_speech() -> bytes:
        t = time.perf_counter()
        pcm = await prompts.make(reply.text)
        timings["tts"] = ms_since(t)
        return pcm

    # Scoring and the spoken reply both need only the transcript: run them side by side.
    async with asyncio.TaskGroup() as tg:
        scoring, speech = tg.create_task(timed_score()), tg.create_task(timed_speech())
    result, pcm = scoring.result(), speech.result()
    persisted = None
    if session_id is not None:
        async with s.db.sessions() as db:  # a question's answer is one row: an earlier one is
            found = await answer_row_ids(db, session_id, question.number)  # rewritten
        rows = None if found is None else RowIds(found[0], found[1] or new_id())
        answer_id, evaluation_id, seq = s.store_answer(
            session_id, question, transcript, result, rows
        )
        await s.db.writer.wait_accepted(seq)  # durable in the journal
        persisted = {"answer_id": answer_id, "evaluation_id": evaluation_id}
    timings["total"] = ms_since(started)
    rate = hub.tts.sample_rate
    return {
        "type": "evaluation",
        "question": {"id": job.question_id, "number": question.number, "text": question.text},
        "transcript": {
            "text": transcript.text,
            "source": source,
            "confidence": round(transcript.confidence, 3),
            "duration_s": round(transcript.duration_s, 3),
        },
        "evaluation": evaluation_json(result),
        "reply": {
            "kind": reply.kind,
            "text": reply.text,
            "audio_b64": base64.b64encode(wav_bytes(pcm, rate)).decode(),
            "sample_rate": rate,
            "audio_s": round(len(pcm) / 2 / rate, 3),
        },
        "timings_ms": timings,
        "persisted": persisted,
    }


async def _open_for_answers(s: JobServices, code: str | None) -> int | None:
    if code is None:
        return None
    async with s.db.sessions() as db:
        sess = await get_by_code(db, code)
    if sess is None:
        raise JobError("unknown_session", f"no session {code}")
    if sess.status in ("completed", "terminated"):
        raise JobError("session_closed", f"session {sess.session_code} is {sess.status}")
    return sess.id
