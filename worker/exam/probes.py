"""Follow-ups that probe without giving the answer away, and the check that they do not.

A follow-up that names a missing expected keyword ("Could you say more about circulation?") hands
the student the marks it then awards. Here:
- `probe(question, n)`: a generic probe chosen by what the question asks for (an order, a reason,
  an example, or a further point), never naming anything of the expected answer;
- `leaks(text, keywords, synonyms)`: whether a text (an LLM-written follow-up or clarification)
  names any of `keywords` (or a synonym of one, or a word sharing its stem), so it can be
  replaced by a probe before it is spoken;
- `rephrase(question)`: what an examiner says when asked what the question means, without an
  LLM: the question again, framed as a rephrase, adding nothing of the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from worker.exam.evaluators import Question, stem, words

ProbeKind = Literal["order", "reason", "example", "further"]

PROBES: dict[ProbeKind, tuple[str, ...]] = {
    "order": (
        "Can you take me through it step by step, in order?",
        "What comes after that, and in what order?",
    ),
    "reason": (
        "Why is that?",
        "Can you explain the reasoning behind that?",
    ),
    "example": (
        "Can you give an example?",
        "How would that look in practice?",
    ),
    "further": (
        "What else matters here?",
        "Is there anything else you would add?",
    ),
}
SAFE_PROBES = tuple(p for group in PROBES.values() for p in group)

_ORDER = re.compile(r"\b(in order|order of|sequence|steps?|stages?|sequential|priorit)", re.I)
_REASON = re.compile(r"\b(why|explain|reason|purpose|justify|what is the point)", re.I)
_EXAMPLE = re.compile(r"\b(example|describe|give an instance|how would you|what would you)", re.I)


def probe_kind(question: Question) -> ProbeKind:
    """What the question asks for, from its wording (the guidelines may name the answer)."""
    text = question.text
    if _ORDER.search(text):
        return "order"
    if _REASON.search(text):
        return "reason"
    if _EXAMPLE.search(text):
        return "example"
    return "further"


LAST_RESORT = "Please go on."


def probe(
    question: Question,
    n: int = 0,
    avoid: Iterable[str] = (),
    synonyms: Mapping[str, Sequence[str]] = {},
) -> str:
    """The `n`-th generic probe for what `question` asks (a second follow-up gets another
    wording), skipping any that would name one of `avoid` (a question whose expected answer
    is itself "an order" gets another kind of probe)."""
    avoid = tuple(avoid)
    kind = probe_kind(question)
    group = PROBES[kind]
    preferred = [group[(n + i) % len(group)] for i in range(len(group))]
    others = [p for k, g in PROBES.items() if k != kind for p in g]
    for text in (*preferred, *others):
        if not leaks(text, avoid, synonyms):
            return text
    return LAST_RESORT


def _stems(text: str) -> set[str]:
    return {stem(w) for w in words(text)}


def _roots(term: str) -> set[str]:
    """Stems of a keyword's content words, and their first five letters (so "prioritise"
    and "priority" share "prior"): a leak check errs on the side of saying too little."""
    out: set[str] = set()
    for w in words(term):
        if len(w) <= 3:
            continue
        s = stem(w)
        out.add(s)
        if len(s) >= 6:
            out.add(s[:5])
    return out


def leaks(text: str, keywords: Iterable[str], synonyms: Mapping[str, Sequence[str]] = {}) -> bool:
    """True when `text` names one of `keywords`, a listed synonym of one, or a word that shares
    a keyword's stem or first five letters."""
    said = _stems(text)
    prefixes = {s[:5] for s in said if len(s) >= 6}
    for keyword in keywords:
        for term in (keyword, *synonyms.get(keyword, ())):
            for root in _roots(term):
                if root in said or root in prefixes:
                    return True
    return False


def rephrase(question: Question) -> str:
    """The question put another way, without an LLM and without any of its answer."""
    text = question.text.strip()
    body = text[0].lower() + text[1:] if text[:2] != "I " else text
    return f"Let me put it another way. I am asking you: {body} Answer in your own words."
