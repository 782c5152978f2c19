"""When has a student finished answering? Pure policies over what is known at a pause.

The turn detector (`worker/voice/turns.py`) asks its policy, at every silent frame of a pause,
how long the pause must last before the answer is over, given what is known by then
(`PauseSignals`):
the pause so far, how much the student has said, the end-of-turn model's probability for this
pause and the transcript of the answer so far with its keyword coverage (each None until its
model has answered). The answer ends when the pause reaches that wait.

`VivaPolicy` is the examiner's: in a viva a premature end costs the student marks, a late one
costs a beat of silence, so it is quick only when every signal agrees the answer is complete and
patient when any says the student is still thinking:
- a trailing continuer ("and", "because", "so", "um", a dangling article or preposition) or an
  end-of-turn probability below `eot_low` means a thought is unfinished: `thinking_ms`;
- a complete-sounding pause (`eot_high`) after an answer that already covers the question's
  expected keywords (or is long) is an answer: `fast_ms`;
- a complete-sounding pause after an answer still short for the question (few words, few
  keywords) is often a student collecting the next sentence: `short_answer_ms`;
- a whole answer the model is unsure of: `unsure_ms`, near `fast_ms` by default: the model
  says much the same after a complete sentence inside an answer as at its end, so what the
  answer says decides;
- a finished-sounding answer of `min_words` or more that is short of the keywords:
  `sounds_done_ms` (the student may be building up to them);
- until the model and the transcript have answered, nothing ends before `max_ms`, the hard
  maximum that also bounds every other wait.
`FixedSilence` (VAD alone) and `SmartTurnOnly` (Pipecat's default pairing) are the baselines the
turn benchmark compares it with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from core.config import TurnConfig


@dataclass(frozen=True)
class PauseSignals:
    pause_ms: int  # silence so far in this pause
    speech_ms: int  # voiced time of the answer so far
    eot: float | None = None  # end-of-turn probability at this pause; None until known
    text: str | None = None  # the answer's transcript through this pause; None until known
    coverage: float | None = None  # share of expected keywords in `text`; None: none expected
    prior_text: str | None = None  # the transcript through an earlier pause of this answer
    prior_coverage: float | None = None


class Policy(Protocol):
    def wait_ms(self, s: PauseSignals) -> int:
        """How long this pause must last before the answer is over."""
        ...


@dataclass(frozen=True)
class FixedSilence:
    """VAD alone: a fixed silence ends the answer."""

    ms: int = 500

    def wait_ms(self, s: PauseSignals) -> int:
        return self.ms


@dataclass(frozen=True)
class SmartTurnOnly:
    """The end-of-turn model alone: end as soon as it says complete, else after a fallback."""

    threshold: float = 0.5
    fallback_ms: int = 3000

    def wait_ms(self, s: PauseSignals) -> int:
        if s.eot is not None and s.eot > self.threshold:
            return 0
        return self.fallback_ms


@dataclass(frozen=True)
class PolicySettings:
    fast_ms: int = 200
    unsure_ms: int = 400
    # A model sure of the end after an answer of `min_words` words or more that is short of
    # the keywords: it may be building up to them.
    sounds_done_ms: int = 1000
    short_answer_ms: int = 1500
    thinking_ms: int = 2200
    max_ms: int = 3000
    eot_high: float = 0.7
    eot_low: float = 0.15
    # Sure enough to answer before the pause's last words are transcribed, when what was said
    # before them already makes a whole answer (above 1: never).
    eot_sure: float = 1.01
    # A model that is this sure (eot_sure) of a finished turn, after an answer of at least
    # `sure_words` words that does not trail off, ends it after `sure_ms` whatever the keywords
    # (0: never; the answer must then be whole or wait `short_answer_ms`).
    sure_ms: int = 0
    sure_words: int = 6
    min_words: int = 14  # fewer words than this is short for a viva question...
    long_words: int = 40  # ...and this many is an answer whatever its keywords
    coverage_done: float = 0.6  # share of the expected keywords that makes an answer whole


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words a finished thought does not end on: conjunctions, fillers, articles, prepositions,
# auxiliaries. "so" and "then" can end a sentence, but a pause right after them rarely does.
CONTINUERS = _wordset(
    """and but or so because since as although though while whereas if unless until when where
    which who whom whose that than then also plus like um uh er erm eh hmm mm ah well the a an
    of to for with by from in on at into onto about over under between through without my your
    its their our his her is are was were be been being has have had will would can could should
    must may might do does did not very more most such this these those"""
)
_WORD = re.compile(r"[a-z']+")


def last_word(text: str) -> str:
    found = _WORD.findall(text.lower())
    return found[-1].replace("'", "") if found else ""


def trails_off(text: str) -> bool:
    """The transcript stops mid-thought: a continuer last, or a comma, dash or ellipsis."""
    stripped = text.rstrip()
    if stripped.endswith((",", "-", "...", "…", ";", ":")):
        return True
    return last_word(stripped) in CONTINUERS


@dataclass(frozen=True)
class VivaPolicy:
    settings: PolicySettings = PolicySettings()

    def wait_ms(self, s: PauseSignals) -> int:
        cfg = self.settings
        if s.eot is None:
            return cfg.max_ms
        if s.text is None:  # the pause's last segment is still being transcribed
            if s.eot < cfg.eot_low:
                return cfg.thinking_ms
            before = s.prior_text or ""
            if s.eot >= cfg.eot_sure and self.whole(before, s.prior_coverage):
                return cfg.fast_ms
            return cfg.max_ms  # the transcript comes within a few hundred ms: wait for it
        if not _WORD.search(s.text.lower()):
            return cfg.max_ms  # nothing said yet that a reply could answer
        if trails_off(s.text) or s.eot < cfg.eot_low:
            return cfg.thinking_ms
        whole = self.whole(s.text, s.coverage)
        words = len(_WORD.findall(s.text.lower()))
        if s.eot >= cfg.eot_high:
            if whole:
                return cfg.fast_ms
            if cfg.sure_ms and s.eot >= cfg.eot_sure and words >= cfg.sure_words:
                return cfg.sure_ms
            return cfg.sounds_done_ms if words >= cfg.min_words else cfg.short_answer_ms
        return cfg.unsure_ms if whole else cfg.short_answer_ms

    def whole(self, text: str, coverage: float | None) -> bool:
        """An answer that covers the question's keywords, or is long whatever they are."""
        if coverage is not None and coverage >= self.settings.coverage_done:
            return True
        return len(_WORD.findall(text.lower())) >= self.settings.long_words


def policy_for(cfg: TurnConfig) -> Policy:
    """The policy config.yaml (and the configuration table) asks for."""
    if cfg.policy == "silence":
        return FixedSilence(cfg.end_silence_ms)
    return VivaPolicy(
        PolicySettings(
            fast_ms=cfg.fast_ms,
            unsure_ms=cfg.unsure_ms,
            sounds_done_ms=cfg.sounds_done_ms,
            short_answer_ms=cfg.short_answer_ms,
            thinking_ms=cfg.thinking_ms,
            max_ms=cfg.max_wait_ms,
            eot_high=cfg.eot_high,
            eot_low=cfg.eot_low,
            eot_sure=cfg.eot_sure,
            sure_ms=cfg.sure_ms,
            sure_words=cfg.sure_words,
            min_words=cfg.min_answer_words,
            long_words=cfg.long_answer_words,
            coverage_done=cfg.coverage_done,
        )
    )
