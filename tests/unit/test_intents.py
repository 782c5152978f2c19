"""Intents in natural sentences, not a word list with a word limit."""

from __future__ import annotations

import pytest

from worker.exam.intents import intent_of


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, I don't know the answer to that one.",
        "Honestly I really don't know.",
        "I have no idea, sorry.",
        "I'm afraid I can't remember that at all.",
        "Sorry, I'm not sure about this one, I think I'll pass.",
        "Pass.",
        "Can we skip this question please?",
        "I haven't studied this part yet, sorry.",
        "I don't know the formula.",
    ],
)
def test_dont_know(text: str) -> None:
    assert intent_of(text) == "dont_know"


@pytest.mark.parametrize(
    "text",
    [
        "Could you say the question again please?",
        "Sorry, can you repeat that?",
        "Pardon?",
        "I didn't catch that, could you read it again?",
        "What was the question again?",
        "Sorry, I missed the question, could you say it once more?",
    ],
)
def test_repeat(text: str) -> None:
    assert intent_of(text) == "repeat"


@pytest.mark.parametrize(
    "text",
    [
        "The bill must pass both houses of parliament.",
        "I don't know exactly, but the pancreas makes insulin.",
        "I'm not sure, but I think negligence needs a duty of care and a breach.",
        "You repeat the test until the results agree with the calculation.",
        "Every contract needs an offer, acceptance and consideration.",
        "",
    ],
)
def test_answers_stay_answers(text: str) -> None:
    assert intent_of(text) is None


@pytest.mark.parametrize("text", ["Mm-hmm.", "Okay.", "Yeah, right.", "Uh-huh", "I see."])
def test_backchannels(text: str) -> None:
    assert intent_of(text) == "backchannel"
