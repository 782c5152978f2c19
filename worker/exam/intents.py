"""What a student means when they are not answering: repeat the question, explain what it
means ("what do you mean by disability here?"), or "I don't know".

Recognised in natural sentences of any reasonable length ("I'm sorry, I don't know the answer to
that one", "could you say the question again please"), not from a word list with a word limit:
an utterance is an intent when it contains the intent's phrase and, once politeness, fillers and
the words people wrap such requests in are set aside, says almost nothing else. So "the bill must
pass both houses" stays an answer (bill, houses), and so does "I don't know exactly, but the
pancreas makes insulin". A backchannel ("mm-hmm", "okay") is recognised too: over the examiner
it is a listener's noise, not an interruption.
"""

from __future__ import annotations

import re
from typing import Literal


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


Intent = Literal["repeat", "clarify", "dont_know", "backchannel"]

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")

# Matched on the normalised text (lower case, apostrophes dropped, single spaces).
_REPEAT = re.compile(
    r"\b(repeat|say (that|it|this|the question|the last part) (again|once more)"
    r"|(ask|read) (that|it|the question) again|pardon|come again"
    r"|(didnt|did not|couldnt|could not) (quite )?(catch|hear|understand|get) (that|it|you|the)"
    r"|one more time|what was the question|whats the question|what is the question"
    r"|(i )?missed (that|the question)|sorry what)\b"
)
# A question about the question: it names the term it asks about, so it may carry a few more
# content words than the other intents.
_CLARIFY = re.compile(
    r"\b(what (do|did) you mean|do you mean|(what|which) (does|do|did) .{1,40} mean"
    r"|what is meant|whats meant|what (exactly )?(are|were) you asking|(are|were) you asking"
    r"|is (the question|it|that) asking|(could|can|would) you (please )?(clarify|rephrase"
    r"|explain the question|explain what you mean|be more specific|put (it|that) another way)"
    r"|rephrase|in what sense|clarify)\b"
)
MAX_CLARIFY_OTHER_WORDS = 4
_DONT_KNOW = re.compile(
    r"\b((i )?(dont|do not|really dont|honestly dont) (really )?know"
    r"|no idea|not sure|no clue|not a clue|i give up|(cant|cannot|can not) (answer|remember|recall)"
    r"|(dont|do not) remember|(dont|do not) recall|(havent|have not) (studied|learned|covered)"
    r"|(im|i am) (blank|stuck)|draw(ing)? a blank|(ill|i will|i have to|i must|let me) pass"
    r"|^pass$|^skip$|skip (this|that|it)|next question|move on)\b"
)
_BACKCHANNEL = _wordset(
    "mm mhm mmhmm hmm uh uhhuh huh ok okay yeah yes yep right sure alright aha ah oh "
    "i see got it thanks thank you go on"
)
# Words that wrap a request or an admission without adding content.
_WRAPPING = _wordset(
    """i im ive id ill me my you your youd could can would will please sorry afraid really
    honestly actually just so well um uh er erm oh ah hmm okay ok yes no not dont do does did
    know idea sure clue remember recall answer answers question questions that this one it the
    a an to of for on at again once more time say said repeat pardon come rephrase catch hear
    heard understand get missed what whats was is be am are think quite very much at all right
    now exactly unfortunately teacher sir madam miss examiner studied learned covered have
    havent cant cannot give up pass skip next move let blank stuck drawing draw there any
    anything idea bit little part last read ask mean meant by here clarify explain asking
    specific sense which about term word another way put in"""
)
MAX_OTHER_WORDS = 2  # content words an intent may carry beside its phrase ("the formula")


def normalise(text: str) -> tuple[str, list[str]]:
    words = [w.replace("'", "") for w in _WORD.findall(text.lower().replace("’", "'"))]
    return " ".join(words), words


def intent_of(text: str) -> Intent | None:
    """The intent of a whole utterance, or None when it is (or may be) an answer."""
    joined, words = normalise(text)
    if not words:
        return None
    if all(w in _BACKCHANNEL for w in words) and len(words) <= 3:
        return "backchannel"
    others = [w for w in words if w not in _WRAPPING]
    if len(others) <= MAX_CLARIFY_OTHER_WORDS and _CLARIFY.search(joined):
        return "clarify"
    if len(others) > MAX_OTHER_WORDS:
        return None
    if _REPEAT.search(joined):
        return "repeat"
    if _DONT_KNOW.search(joined):
        return "dont_know"
    return None
