"""A question's answer and evaluation are one row each, whatever was said to it: a follow-up's
answer rewrites the answer row, and its evaluation replaces the earlier one unless it scores
lower (a follow-up never costs marks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import load_config, replace_settings
from models.fakes import FakeASR, FakeEOT, FakeLLM, FakeTTS, FakeVAD
from models.hub import Hub
from tests.inproc.fakes import RecordingWriter
from worker.exam.flow import Evaluate, Question
from worker.session.viva import SessionRecord, VivaSession
from worker.voice.speaker import PromptCache

ROOT = Path(__file__).resolve().parents[2]
Q = Question(
    101, 1, "What makes a contract binding?", ("offer", "acceptance"), "Offer, acceptance."
)
WHY = "It covers the offer and the acceptance the guidelines ask for."


async def test_attempts_rewrite_one_row_and_the_best_mark_counts() -> None:
    marks = iter([6, 3, 9])  # the LLM's mark of each attempt, in order

    def mark(_messages: Any) -> dict[str, Any]:
        return {"score": next(marks), "justification": WHY, "feedback": "Thank you for that."}

    cfg = replace_settings(load_config(ROOT / "config.yaml", {}), {"exam.evaluator": "llm_based"})
    hub = Hub(FakeVAD(), FakeASR(), FakeLLM(json_result=mark), FakeTTS(), FakeEOT())
    writer = RecordingWriter()
    record = SessionRecord(1, "ROWS1", 7, (Q,), "student", "law")
    session = VivaSession(record, hub, writer, cfg, PromptCache(hub.tts))
    said = ["An offer.", "An offer. Something else.", "An offer. Something else. And acceptance."]
    for attempt, text in enumerate(said, 1):
        await session._score(Evaluate(Q, text, attempt), None, None)
    answers, evaluations = writer.answers(), writer.evaluations()
    assert len({a["id"] for a in answers}) == 1 and [a["answer_text"] for a in answers] == said
    # The second attempt scored lower: its evaluation was not written.
    assert [e["score_obtained"] for e in evaluations] == [6.0, 9.0]
    assert len({e["id"] for e in evaluations}) == 1
    assert all(e["answer_id"] == answers[0]["id"] for e in evaluations)
    totals = await session.wrap_up("completed", "all questions asked")
    assert totals.total_score == 9.0
