"""Sentence and clause splitting for speech: TTS speaks a sentence at a time, and the LLM's
stream is cut at the first clause so the examiner starts talking before the reply is written."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_CLAUSE_END = re.compile(r"[,;:—]\s")
ABBREVIATIONS = ("e.g.", "i.e.", "Dr.", "Mr.", "Mrs.", "Ms.", "vs.", "etc.")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, keeping their punctuation; never returns empty strings."""
    protected = text
    for i, abbr in enumerate(ABBREVIATIONS):
        protected = protected.replace(abbr, f"\x00{i}\x00")
    parts = _SENTENCE_END.split(protected.strip())
    out = []
    for part in parts:
        for i, abbr in enumerate(ABBREVIATIONS):
            part = part.replace(f"\x00{i}\x00", abbr)
        if part.strip():
            out.append(part.strip())
    return out


class SentenceBuffer:
    """Accumulates streamed text; releases whole sentences, and the first clause early.

    The first release may be a clause of at least `min_first_chars` ending in a comma-like
    mark: speaking it early hides the LLM's generation time behind the examiner's voice.
    """

    def __init__(self, min_first_chars: int = 24):
        self._buf = ""
        self._released_any = False
        self._min_first = min_first_chars

    def push(self, delta: str) -> list[str]:
        self._buf += delta
        out: list[str] = []
        while True:
            sentences = _SENTENCE_END.split(self._buf, maxsplit=1)
            if len(sentences) == 2:
                out.append(sentences[0].strip())
                self._buf = sentences[1]
                self._released_any = True
                continue
            if not self._released_any and len(self._buf) >= self._min_first:
                match = _CLAUSE_END.search(self._buf, self._min_first - 1)
                if match:
                    out.append(self._buf[: match.start() + 1].strip())
                    self._buf = self._buf[match.end() :]
                    self._released_any = True
                    continue
            break
        return [s for s in out if s]

    def flush(self) -> list[str]:
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []
