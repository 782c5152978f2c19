"""Follow-ups never give the answer away: over every question of the seeded banks and random
partial answers, the flow's follow-up names no expected keyword the student has not said (nor
its stem, nor a listed synonym); LLM-written follow-ups that do are replaced before they are
spoken; a question about the question is answered, not scored."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from core.config import ExamConfig
from db.seed import load_banks
from models.fakes import FakeLLM, FakeTTS
from worker.exam.evaluators import Question, stem, words
from worker.exam.flow import Evaluate, ExamFlow, Say
from worker.exam.probes import SAFE_PROBES, leaks, probe
from worker.service.records import question_from_seed
from worker.voice.speaker import PromptCache, Speaker, usable_probe

FILLER = [
    "well",
    "I",
    "think",
    "that",
    "it",
    "is",
    "mainly",
    "about",
    "the",
    "way",
    "this",
    "works",
    "in",
    "practice",
]


def bank_questions() -> list[Question]:
    return [question_from_seed(row, i, 10) for i, row in enumerate(load_banks())]


def names(text: str, keyword: str) -> bool:
    """Independent of `leaks`: a content word of `keyword` (or its stem, or its first five
    letters) appears in `text`."""
    said = [stem(w) for w in words(text)]
    for w in words(keyword):
        if len(w) <= 3:
            continue
        root = stem(w)
        if root in said or (len(root) >= 6 and any(s.startswith(root[:5]) for s in said)):
            return True
    return False


def test_no_followup_over_the_banks_names_what_is_missing() -> None:
    rng = random.Random(18)
    questions = bank_questions()
    assert len(questions) >= 100
    checked = 0
    for q in questions:
        for _ in range(6):
            k = rng.randrange(0, len(q.expected_keywords))  # some said, never all
            said = rng.sample(list(q.expected_keywords), k)
            answer = " ".join(rng.sample(FILLER, 6) + said + rng.sample(FILLER, 4))
            flow = ExamFlow([q], ExamConfig(max_followups=2), lambda: 0.0)
            flow.start()
            for attempt in range(2):
                out = flow.answer(answer if attempt == 0 else "and that is all", 8.0)
                follow = [d for d in out if isinstance(d, Say) and d.kind == "followup"]
                if not follow:
                    break
                missing = set(q.expected_keywords) - set(said)
                assert set(follow[0].avoid) <= set(q.expected_keywords)
                for keyword in missing & set(follow[0].avoid):
                    assert not names(follow[0].text, keyword), (q.text, follow[0].text)
                    for synonym in q.synonyms.get(keyword, ()):
                        assert not names(follow[0].text, synonym), (q.text, follow[0].text)
                checked += 1
    assert checked > 300


def test_probes_fit_what_the_question_asks() -> None:
    def q(text: str, keywords: Sequence[str] = ("airway",)) -> Question:
        return Question(1, 1, text, tuple(keywords), "")

    assert "order" in probe(q("Describe, in order, the primary survey."))
    assert probe(q("Why is consideration needed?")).startswith(("Why", "Can you explain"))
    assert "example" in probe(q("Give an example of a tort."))
    assert probe(q("What is triage?")) in SAFE_PROBES
    # A question whose expected answer is itself an order gets another kind of probe.
    ordered = q("List the steps in order.", ("order", "sequence"))
    assert not leaks(probe(ordered, avoid=("order", "sequence")), ("order", "sequence"))


@pytest.mark.parametrize(
    ("text", "avoid", "leaked"),
    [
        ("Could you say more about circulation?", ("circulation",), True),
        ("What about circulating blood?", ("circulation",), True),  # same first letters
        ("What about the disabilities?", ("disability",), True),  # plural
        ("How would you prioritise them?", ("priority",), True),
        ("What else matters here?", ("circulation", "breathing"), False),
        ("Can you give an example?", ("airway",), False),
    ],
)
def test_leaks(text: str, avoid: tuple[str, ...], leaked: bool) -> None:
    assert leaks(text, avoid) is leaked


def test_synonyms_count_as_naming_the_keyword() -> None:
    assert leaks("Who is seen first?", ("priority",), {"priority": ("seen first",)})
    assert not usable_probe("Who is seen first?", ("priority",), {"priority": ("seen first",)})


class ScriptedLLM(FakeLLM):
    def __init__(self, text: str):
        super().__init__(tokens=[w + " " for w in text.split()])


async def _spoken(speaker: Speaker, say: Say, q: Question) -> str:
    out: list[str] = []
    async for text, _pcm in speaker.probe(say, q, "airway and breathing"):
        out.append(text)
    return "".join(out).strip()


SURVEY = Question(
    7,
    3,
    "Describe, in order, the primary survey of an injured patient.",
    ("airway", "breathing", "circulation", "disability", "exposure"),
    "Full marks: airway, breathing, circulation, disability, exposure, in that order.",
)


@pytest.mark.parametrize(
    ("llm_text", "spoken_is_llm"),
    [
        ("What would you check after that, and why?", True),
        ("Could you say more about circulation?", False),  # leaks: replaced
        ("And the patient's disabilities?", False),
        ("", False),  # nothing usable
        ("word " * 40, False),  # far too long for a follow-up
        ("The student's answer is incomplete.", False),  # the prompt echoed, about the student
        ("Your answer is incomplete.", False),  # asks nothing
        ("Tell me why that comes first.", True),  # a request is a follow-up too
    ],
)
async def test_llm_followups_are_checked_before_they_are_spoken(
    llm_text: str, spoken_is_llm: bool
) -> None:
    tts = FakeTTS()
    speaker = Speaker(ScriptedLLM(llm_text or "."), tts, PromptCache(tts), _sampling())
    fallback = probe(SURVEY, 0, ("circulation", "disability", "exposure"))
    say = Say(fallback, "followup", avoid=("circulation", "disability", "exposure"))
    spoken = await _spoken(speaker, say, SURVEY)
    assert spoken == (" ".join(llm_text.split()) if spoken_is_llm else fallback)
    assert not leaks(spoken, say.avoid)


def test_a_question_about_the_question_is_not_an_answer() -> None:
    clock = [0.0]
    flow = ExamFlow([SURVEY], ExamConfig(max_followups=1), lambda: clock[0])
    flow.start()
    flow.answer("Airway and breathing first.", 4.0)  # a partial answer: a follow-up
    flow.commit()
    before = flow.checkpoint()
    clock[0] = 12.0
    out = flow.answer("Sorry, what do you mean by disability here?", 2.0)
    assert [type(d).__name__ for d in out] == ["Say"] and isinstance(out[0], Say)
    assert out[0].kind == "clarify" and not any(isinstance(d, Evaluate) for d in out)
    assert out[0].avoid == SURVEY.expected_keywords
    assert not leaks(out[0].text, SURVEY.expected_keywords)
    after = flow.checkpoint()
    assert after["said"] == before["said"] and after["followups"] == before["followups"]
    assert flow.time_left() == pytest.approx(120 - 12)  # the clock runs as it did
    # Naming a keyword inside the question about the question does not make it an answer.
    out = flow.answer("By circulation do you mean the pulse?", 2.0)
    assert out[0].kind == "clarify" if isinstance(out[0], Say) else False


def _sampling() -> Any:
    from models.base import Sampling

    return Sampling(temperature=0.0, max_tokens=32)
