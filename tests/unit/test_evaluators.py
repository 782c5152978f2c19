"""Scoring: keyword matching at its boundaries, the LLM rubric with a fake, and hybrid fallback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from models.base import Message, ModelError, Sampling
from models.fakes import FakeLLM
from worker.exam.evaluators import (
    FALLBACK_NOTE,
    NO_ANSWER_FEEDBACK,
    EvaluationFailed,
    Question,
    evaluate,
    keyword_score,
    llm_score,
    stem,
    words,
)

FIVE = ("offer", "acceptance", "consideration", "intention", "capacity")
CONTRACT_Q = Question(
    id=101,
    number=1,
    text="What are the essential elements of a valid contract?",
    expected_keywords=FIVE,
    answer_guidelines="Full marks: offer, acceptance, consideration, intention, capacity.",
)


class RecordingLLM(FakeLLM):
    """FakeLLM that also keeps the messages, schema and sampling of each JSON request."""

    def __init__(self, json_result: Any) -> None:
        super().__init__(json_result=json_result)
        self.requests: list[tuple[Sequence[Message], dict[str, Any], Sampling]] = []

    async def generate_json(
        self, messages: Sequence[Message], schema: dict[str, Any], sampling: Sampling
    ) -> dict[str, Any]:
        self.requests.append((messages, schema, sampling))
        return await super().generate_json(messages, schema, sampling)


class FailingLLM(FakeLLM):
    async def generate_json(
        self, messages: Sequence[Message], schema: dict[str, Any], sampling: Sampling
    ) -> dict[str, Any]:
        raise ModelError("engine died")


def ticking_clock(step: float) -> Any:
    now = [100.0]

    def clock() -> float:
        now[0] += step
        return now[0]

    return clock


# --- keyword matching -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "score"),
    [
        ("", 0.0),
        ("an offer", 3.3),  # 1/5 = 0.2 of the 0.6 needed
        ("an offer and acceptance", 6.7),  # 0.4 / 0.6
        ("offer, acceptance and consideration", 10.0),  # exactly the threshold: full marks
        (" ".join(FIVE), 10.0),  # above the threshold is capped
    ],
)
def test_threshold_math(said: str, score: float) -> None:
    assert keyword_score(said, FIVE, 10, 0.6).score == score


def test_threshold_one_is_proportional_and_max_score_scales() -> None:
    four = ("a1", "b2", "c3", "d4")
    assert keyword_score("a1", four, 10, 1.0).score == 2.5
    assert keyword_score("a1 b2", four, 5, 1.0).score == 2.5
    assert keyword_score("a1 b2 c3", four, 10, 1.0).score == 7.5


def test_matched_and_missing_keep_keyword_order_and_spelling() -> None:
    result = keyword_score("Capacity... and an OFFER!", FIVE, 10)
    assert result.matched == ("offer", "capacity")
    assert result.missing == ("acceptance", "consideration", "intention")


@pytest.mark.parametrize(
    ("keyword", "said"),
    [
        ("contract", "both contracts were void"),
        ("contracts", "the contract was void"),
        ("injury", "multiple injuries"),
        ("process", "two processes ran"),
        ("box", "the boxes"),
        ("court", "the court's decision"),
        ("don't", "I dont"),
    ],
)
def test_plural_and_punctuation_tolerance(keyword: str, said: str) -> None:
    assert keyword_score(said, (keyword,), 10).matched == (keyword,)


def test_whole_words_only() -> None:
    assert keyword_score("a contract", ("act",), 10).matched == ()
    assert keyword_score("priceless", ("price",), 10).matched == ()


def test_multi_word_keywords_match_as_phrases() -> None:
    kw = ("purchasing power",)
    assert keyword_score("backed by purchasing power", kw, 10).matched == kw
    assert keyword_score("Purchasing-power, they said", kw, 10).matched == kw
    assert keyword_score("the power of purchasing", kw, 10).matched == ()
    assert keyword_score("purchasing and power", kw, 10).matched == ()


def test_empty_transcript_scores_zero_with_everything_missing() -> None:
    result = keyword_score("  ...  ", FIVE, 10)
    assert (result.score, result.matched, result.missing) == (0.0, (), FIVE)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01])
def test_bad_threshold_is_rejected(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        keyword_score("offer", FIVE, 10, threshold)


def test_no_keywords_is_rejected() -> None:
    with pytest.raises(ValueError, match="keyword"):
        keyword_score("offer", (), 10)


def test_words_and_stem() -> None:
    assert words("I don’t KNOW, re-state it_now") == (
        "i",
        "dont",
        "know",
        "re",
        "state",
        "it",
        "now",
    )
    assert [stem(w) for w in ("status", "basis", "class", "bus", "gas")] == [
        "status",
        "basis",
        "class",
        "bus",
        "gas",
    ]


# --- LLM rubric -------------------------------------------------------------------------------


WHY = "The answer names offer and acceptance but misses consideration, intention and capacity."


def mark(score: Any, feedback: str = "Good on offer and acceptance.", why: str = WHY) -> Any:
    return {"score": score, "justification": why, "feedback": feedback}


async def test_llm_score_sends_rubric_and_schema() -> None:
    llm = RecordingLLM(mark(7))
    res = await llm_score(llm, CONTRACT_Q, "offer and acceptance", 10, Sampling(temperature=0.0))
    assert (res.score, res.feedback, res.justification) == (
        7.0,
        "Good on offer and acceptance.",
        WHY,
    )
    messages, schema, sampling = llm.requests[0]
    prompt = " ".join(m["content"] for m in messages)
    assert CONTRACT_Q.text in prompt and CONTRACT_Q.answer_guidelines in prompt
    assert "consideration" in prompt and '"""offer and acceptance"""' in prompt
    assert schema["properties"]["score"] == {"type": "integer", "minimum": 0, "maximum": 10}
    assert schema["properties"]["feedback"]["maxLength"] == 200
    assert schema["required"] == ["score", "justification", "feedback"]
    assert sampling.temperature == 0.0


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (mark(15), "not an integer in 0..10"),  # out of range: rejected, never clamped
        (mark(-3), "not an integer in 0..10"),
        (mark(4.5), "not an integer in 0..10"),
        (mark(10, feedback="10,"), "feedback is not a sentence"),  # what the monitor once showed
        (mark(7, feedback=""), "feedback is not a sentence"),
        (mark(7, why=""), "justification is missing"),
        (mark(7, why="7"), "justification is missing"),
        (mark(7, why="The weather in Paris is lovely this spring."), "does not refer"),
        ({"score": 7, "feedback": "Good on offer and acceptance."}, "justification is missing"),
        ("7", "no JSON object"),
    ],
)
async def test_unusable_llm_marks_are_rejected(bad: Any, why: str) -> None:
    with pytest.raises(EvaluationFailed, match=why):
        await llm_score(FakeLLM(json_result=bad), CONTRACT_Q, "offer", 10)


async def test_llm_feedback_is_trimmed_to_200_chars() -> None:
    llm = FakeLLM(json_result=mark(3, feedback="word\n  " * 100))
    res = await llm_score(llm, CONTRACT_Q, "answer", 10)
    assert len(res.feedback) == 200 and "\n" not in res.feedback


@pytest.mark.parametrize("llm", [FakeLLM(json_result=None), FailingLLM()])
async def test_llm_failure_is_typed(llm: FakeLLM) -> None:
    with pytest.raises(EvaluationFailed, match="LLM scoring failed") as info:
        await llm_score(llm, CONTRACT_Q, "offer", 10)
    assert isinstance(info.value.__cause__, ModelError)


@pytest.mark.parametrize("bad", [{"feedback": "no score"}, {"score": True}, {"score": "7"}])
async def test_llm_result_without_a_usable_score_fails(bad: dict[str, Any]) -> None:
    with pytest.raises(EvaluationFailed, match="no usable score"):
        await llm_score(FakeLLM(json_result=bad), CONTRACT_Q, "offer", 10)


# --- evaluate ---------------------------------------------------------------------------------


async def test_keyword_match_evaluation_fields() -> None:
    ev = await evaluate(
        "keyword_match", CONTRACT_Q, "Offer and acceptance.", clock=ticking_clock(0.012)
    )
    assert ev.evaluator_type == "keyword_match"
    assert (ev.score_obtained, ev.max_score, ev.percentage_correct) == (6.7, 10.0, 67.0)
    assert ev.feedback_type == "partial"
    assert ev.matched_keywords == ("offer", "acceptance")
    assert ev.missing_keywords == ("consideration", "intention", "capacity")
    assert (
        ev.feedback
        == "Covered: offer, acceptance. Not mentioned: consideration, intention, capacity."
    )
    assert ev.processing_time_ms == pytest.approx(12.0)


async def test_keyword_threshold_is_passed_through() -> None:
    ev = await evaluate("keyword_match", CONTRACT_Q, "offer acceptance", threshold=1.0)
    assert ev.score_obtained == 4.0 and ev.feedback_type == "incorrect"


async def test_llm_based_evaluation() -> None:
    llm = FakeLLM(json_result=mark(9, feedback="A thorough answer."))
    ev = await evaluate("llm_based", CONTRACT_Q, "offer", llm=llm)
    assert (ev.evaluator_type, ev.score_obtained, ev.feedback_type) == ("llm_based", 9.0, "correct")
    assert ev.feedback == "A thorough answer." and ev.matched_keywords == ("offer",)
    assert ev.justification == WHY


@pytest.mark.parametrize("llm", [FakeLLM(json_result=None), FakeLLM(json_result=mark(10, "10,"))])
async def test_llm_based_falls_back_visibly_to_keywords(llm: FakeLLM) -> None:
    ev = await evaluate("llm_based", CONTRACT_Q, "offer and acceptance", llm=llm)
    assert (ev.evaluator_type, ev.score_obtained) == ("keyword_match", 6.7)
    assert ev.feedback.startswith(FALLBACK_NOTE) and "10," not in ev.feedback
    assert ev.justification is None


async def test_hybrid_averages_keyword_and_llm() -> None:
    llm = FakeLLM(json_result=mark(4, feedback="Misses intention and capacity."))
    ev = await evaluate("hybrid", CONTRACT_Q, "offer, acceptance and consideration", llm=llm)
    assert ev.evaluator_type == "hybrid"
    assert ev.score_obtained == 7.0  # 0.5 * 10 (keywords) + 0.5 * 4 (LLM)
    assert ev.feedback == "Misses intention and capacity." and ev.feedback_type == "partial"


async def test_hybrid_falls_back_to_keywords_when_the_llm_fails() -> None:
    ev = await evaluate("hybrid", CONTRACT_Q, "offer and acceptance", llm=FakeLLM(json_result=None))
    assert ev.evaluator_type == "keyword_match"
    assert ev.score_obtained == 6.7
    assert ev.feedback.startswith(FALLBACK_NOTE)
    assert "Not mentioned: consideration" in ev.feedback


async def test_hybrid_without_keywords_uses_the_llm_alone() -> None:
    q = Question(2, 2, "Discuss.", (), "Anything sensible.")
    why = "A sensible view is discussed, as anything sensible earns marks here."
    llm = FakeLLM(json_result=mark(6, feedback="A sensible view.", why=why))
    ev = await evaluate("hybrid", q, "a view", llm=llm)
    assert (ev.evaluator_type, ev.score_obtained, ev.matched_keywords) == ("llm_based", 6.0, ())
    with pytest.raises(EvaluationFailed, match="not a sentence"):  # nothing to fall back on
        await evaluate("hybrid", q, "a view", llm=FakeLLM(json_result=mark(6, feedback="")))
    with pytest.raises(EvaluationFailed, match="no expected keywords"):
        await evaluate("keyword_match", q, "a view")


@pytest.mark.parametrize("kind", ["keyword_match", "llm_based", "hybrid"])
async def test_empty_answer_scores_zero_without_asking_the_llm(kind: Any) -> None:
    llm = RecordingLLM({"score": 10, "feedback": "Invented credit."})
    ev = await evaluate(kind, CONTRACT_Q, " ... ", llm=llm)
    assert (ev.score_obtained, ev.feedback, ev.feedback_type) == (
        0.0,
        NO_ANSWER_FEEDBACK,
        "incorrect",
    )
    assert llm.requests == []


@pytest.mark.parametrize("kind", ["keyword_match", "llm_based", "hybrid"])
async def test_i_dont_know_scores_zero_without_asking_the_llm(kind: Any) -> None:
    llm = RecordingLLM(mark(7))
    ev = await evaluate(
        kind, CONTRACT_Q, "I'm sorry, I don't know the answer to that one.", llm=llm
    )
    assert (ev.score_obtained, ev.feedback_type) == (0.0, "incorrect") and llm.requests == []
    # An answer that only begins with a hedge is still an answer.
    hedged = await evaluate(
        kind, CONTRACT_Q, "I don't know exactly, but an offer and acceptance.", llm=llm
    )
    assert hedged.score_obtained > 0


async def test_llm_kinds_need_an_llm() -> None:
    with pytest.raises(ValueError, match="needs an LLM"):
        await evaluate("hybrid", CONTRACT_Q, "offer")
