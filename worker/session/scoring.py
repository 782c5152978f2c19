"""Scoring one answer off the voice path: write the answer, evaluate it, wait (boundedly) for the
turn's latency so the evaluation row carries it, write the evaluation.

A question has one answer row and one evaluation row (`RowIds`), whoever writes them: a
follow-up's answer rewrites the row with everything said to the question, and its evaluation
replaces the earlier one unless it scores lower (a follow-up never costs marks).

A failure here is logged and leaves the answer without an evaluation; it never ends the session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from core.config import ExamConfig
from core.grading import ScoredAnswer
from db import ops
from models.base import LLM, Transcript
from worker import protocol as p
from worker.exam.evaluators import Evaluation, evaluate
from worker.exam.flow import Evaluate, Question

log = logging.getLogger(__name__)
LATENCY_WAIT_S = 30.0  # a reply cut by a barge-in may never produce a first audio byte


@dataclass(frozen=True)
class RowIds:
    """The ids of a question's answer and evaluation rows."""

    answer: int
    evaluation: int


@dataclass(frozen=True)
class ScoringContext:
    session_id: int
    llm: LLM
    exam: ExamConfig
    enqueue: Callable[[ops.Op], None]
    emit: Callable[[p.WireEvent], None]
    answered: Callable[[], int]


async def score_answer(
    ctx: ScoringContext,
    d: Evaluate,
    transcript: Transcript | None,
    duration_s: float,
    latency_f: asyncio.Future[float] | None,
    rows: RowIds,
    keep: Callable[[ScoredAnswer], bool] = lambda _: True,
) -> ScoredAnswer | None:
    """Score `d`; None when it could not be scored or `keep` says an earlier evaluation of the
    question stands (then its evaluation row is left as it is)."""
    confidence = transcript.confidence if transcript else None
    answer = answer_row(
        ctx.session_id, d.question, d.transcript, confidence, duration_s, id=rows.answer
    )
    ctx.enqueue(answer)
    try:
        result = await evaluate(
            ctx.exam.evaluator,
            d.question,
            d.transcript,
            llm=ctx.llm,
            threshold=ctx.exam.keyword_matching_threshold,
        )
    except Exception:
        number, session = d.question.number, ctx.session_id
        log.exception("could not score question %d of session %d", number, session)
        return None
    latency = None
    if latency_f is not None:
        await asyncio.wait({latency_f}, timeout=LATENCY_WAIT_S)
        if latency_f.done() and not latency_f.cancelled():
            latency = latency_f.result()
    scored = ScoredAnswer(
        d.question.number,
        d.question.text,
        d.transcript,
        result.score_obtained,
        result.max_score,
        result.feedback_type,
        latency,
    )
    if not keep(scored):
        return None
    ctx.enqueue(evaluation_row(rows.answer, ctx.session_id, result, latency, id=rows.evaluation))
    ctx.enqueue(ops.session_update(ctx.session_id, questions_answered=ctx.answered()))
    if ctx.exam.show_scores:
        ctx.emit(
            p.ExamEvaluationEvent(
                question_number=d.question.number,
                score=result.score_obtained,
                max_score=result.max_score,
                feedback_type=result.feedback_type,
                feedback=result.feedback,
            )
        )
    return scored


def answer_row(
    session_id: int,
    question: Question,
    text: str,
    confidence: float | None,
    duration_s: float | None,
    **ident: int,
) -> ops.Upsert:
    """An `answers` row: what was said to `question` (every attempt so far, joined); `id=` to
    rewrite the question's existing row."""
    return ops.upsert(
        "answers",
        **ident,
        session_id=session_id,
        question_bank_id=question.id,
        question_number=question.number,
        transcribed_text=text,
        answer_text=text,
        confidence_score=confidence,
        audio_duration_seconds=duration_s,
    )


def evaluation_row(
    answer_id: int,
    session_id: int,
    result: Evaluation,
    latency_ms: float | None = None,
    **ident: int,
) -> ops.Upsert:
    """An `evaluations` row for `result`; `latency_ms` is the turn latency of that answer;
    `id=` to replace the answer's existing evaluation."""
    return ops.upsert(
        "evaluations",
        **ident,
        answer_id=answer_id,
        session_id=session_id,
        evaluator_type=result.evaluator_type,
        score_obtained=result.score_obtained,
        max_score=result.max_score,
        percentage_correct=result.percentage_correct,
        feedback=result.feedback,
        feedback_type=result.feedback_type,
        matched_keywords=list(result.matched_keywords),
        missing_keywords=list(result.missing_keywords),
        justification=result.justification,
        latency_ms=latency_ms,
        processing_time_ms=result.processing_time_ms,
    )
