"""The viva flow of SPEC.md as a pure state machine with an injected clock.

The session's async shell feeds `ExamFlow` events (start, an answer's transcript, a stretch of
silence, a periodic tick, termination) and carries out the decisions it returns, in order: say a
text (`Say`), score an answer off the voice path (`Evaluate`), end the session (`Finish`), or
nothing (`Ignored`, with the reason). The flow never waits for a model: whether an answer deserves
a follow-up is decided from the synchronous keyword estimate, so the examiner replies at once
while the configured evaluator scores the answer in the background.

Rules, per question:
- a request to repeat ("pardon?", "could you repeat the question") repeats the last prompt;
- "I don't know", "pass", "skip" and the like are scored (zero, naturally) and the exam moves on;
- these two are recognised even when shorter than `min_answer_duration_seconds`, which exists to
  drop coughs and stray words, not a clear "pass";
- any other answer shorter than that minimum is ignored;
- an answer the keyword estimate would not grade `correct` gets a follow-up naming a missing
  expected keyword, at most `max_followups` per question and only while time is left;
- `max_question_duration_seconds` after a question was asked, the exam moves on (the limit
  covers its follow-ups and repeats too, so nobody can stall a question forever);
- one nudge per question after `nudge_after_seconds` of silence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from core.config import ExamConfig
from core.grading import feedback_type
from worker.evaluators import Question, keyword_score, words

__all__ = [
    "Decision",
    "Evaluate",
    "ExamFlow",
    "Finish",
    "Ignored",
    "Phase",
    "Question",
    "Say",
    "SayKind",
]

Phase = Literal["greeting", "listening", "finished"]
SayKind = Literal["greeting", "question", "acknowledge", "followup", "repeat", "nudge", "closing"]


@dataclass(frozen=True)
class Say:
    text: str
    kind: SayKind


@dataclass(frozen=True)
class Evaluate:
    """Score this answer off the voice path.

    `transcript` is everything said to the question so far (the first answer and any follow-up
    answers, joined), so a later attempt is judged on the whole answer; `attempt` counts from 1.
    """

    question: Question
    transcript: str
    attempt: int


@dataclass(frozen=True)
class Finish:
    status: Literal["completed", "terminated"]
    reason: str


@dataclass(frozen=True)
class Ignored:
    reason: Literal["too_short", "empty", "not_listening"]


Decision = Say | Evaluate | Finish | Ignored

# No symbols and short sentences: every text here goes straight to TTS. The acknowledgements are
# neutral on purpose: the examiner must not hint whether an answer was right.
ACKNOWLEDGEMENTS = (
    "Thank you.",
    "Alright, thank you.",
    "Okay, noted.",
    "Thanks for that.",
    "Understood, thank you.",
)
FOLLOWUPS = (
    "Could you say more about {}?",
    "Can you tell me a little more about {}?",
    "And what about {}?",
)
MOVE_ON = "That's alright, let's move on."
TIME_UP = "We have run out of time for this question."
NUDGE = "Take your time. If you would like me to repeat the question, just ask."
CLOSING = "That was the last question. Your viva is now complete. Thank you, and goodbye."

# Intent phrases, matched on normalised words (apostrophes dropped) and only in short utterances,
# so "the bill must pass both houses" is an answer, not a pass.
_REPEAT_PHRASES = (
    "repeat",
    "say that again",
    "say it again",
    "pardon",
    "come again",
    "didnt catch",
    "didnt hear",
    "one more time",
)
_DONT_KNOW_PHRASES = (
    "dont know",
    "do not know",
    "no idea",
    "not sure",
    "no clue",
    "pass",
    "skip",
    "cant remember",
    "dont remember",
    "cant answer",
    "cannot answer",
)
_REPEAT_MAX_WORDS = 10
_DONT_KNOW_MAX_WORDS = 6


def _says_any(said: tuple[str, ...], phrases: Sequence[str]) -> bool:
    padded = f" {' '.join(said)} "
    return any(f" {p} " in padded for p in phrases)


def _prompt(index: int, question: Question) -> str:
    return f"Question {index + 1}. {question.text}"


def _greeting(n: int) -> str:
    count = "one question" if n == 1 else f"{n} questions"
    return (
        f"Hello, and welcome to your viva. I will ask you {count}. "
        "Please answer each one in your own words."
    )


class ExamFlow:
    """One session's exam flow. Not thread-safe; one connection's tasks drive it in turn."""

    def __init__(
        self,
        questions: Sequence[Question],
        cfg: ExamConfig,
        clock: Callable[[], float],
        *,
        nudge_after_seconds: float = 15.0,
    ):
        if not questions:
            raise ValueError("an exam needs at least one question")
        # ExamConfig admits 0, but the keyword estimate divides by it; fail at session start
        # rather than on the voice path.
        if cfg.keyword_matching_threshold <= 0:
            raise ValueError("exam.keyword_matching_threshold must be above 0")
        if nudge_after_seconds <= 0:
            raise ValueError("nudge_after_seconds must be positive")
        self.questions = tuple(questions)
        self.cfg = cfg
        self._clock = clock
        self._nudge_after = nudge_after_seconds
        self.phase: Phase = "greeting"
        self.index = 0
        self.followups_used = 0
        self.question_started_at: float | None = None
        self.answered = 0  # questions with at least one answer sent for scoring
        self._nudged = False
        self._attempts: list[str] = []  # what was said to the current question
        self._last_prompt = ""  # the question or follow-up a repeat request repeats

    @property
    def current(self) -> Question | None:
        return self.questions[self.index] if self.phase == "listening" else None

    def time_left(self) -> float:
        """Seconds left for the current question (0 when none is being asked)."""
        if self.phase != "listening" or self.question_started_at is None:
            return 0.0
        elapsed = self._clock() - self.question_started_at
        return max(0.0, self.cfg.max_question_duration_seconds - elapsed)

    def start(self) -> list[Decision]:
        if self.phase != "greeting":
            raise RuntimeError("the exam has already started")
        return [Say(_greeting(len(self.questions)), "greeting"), self._ask()]

    def prompts(self) -> list[str]:
        """The fixed texts that can start a reply (and the opening), in the order they are
        likely needed: worth synthesizing at session start so no TTS sits on the turn's
        critical path. Later questions always follow an acknowledgement, so they are made
        while it plays instead of competing with the student's first answers for the CPU."""
        fixed = [*ACKNOWLEDGEMENTS, MOVE_ON, TIME_UP, NUDGE, CLOSING]
        return [_greeting(len(self.questions)), _prompt(0, self.questions[0]), *fixed]

    def resume(self) -> list[Decision]:
        """The student came back after a dropped connection: ask the current prompt again, with
        the question's time limit restarted (the outage was not their thinking time)."""
        if self.phase != "listening":
            return []
        self.question_started_at = self._clock()
        self._nudged = False
        return [Say(f"Welcome back. {self._last_prompt}", "repeat")]

    def answer(self, transcript: str, duration_s: float) -> list[Decision]:
        """The student's answer has ended: `transcript` of `duration_s` seconds of speech."""
        if self.phase != "listening":
            return [Ignored("not_listening")]
        said = words(transcript)
        if not said:
            return [Ignored("empty")]
        question = self.questions[self.index]
        # Naming an expected keyword makes it an answer, whatever else was said.
        on_topic = self._mentions_keyword(question, transcript)
        if not on_topic and len(said) <= _REPEAT_MAX_WORDS and _says_any(said, _REPEAT_PHRASES):
            return [Say(f"Of course. {self._last_prompt}", "repeat")]
        if (
            not on_topic
            and len(said) <= _DONT_KNOW_MAX_WORDS
            and _says_any(said, _DONT_KNOW_PHRASES)
        ):
            return self._give_up(question, transcript)
        if duration_s < self.cfg.min_answer_duration_seconds:
            return [Ignored("too_short")]
        self._attempts.append(transcript.strip())
        decisions: list[Decision] = [self._evaluate(question)]
        followup = self._followup(question)
        if followup is not None:
            self.followups_used += 1
            self._last_prompt = followup.text
            return [*decisions, followup]
        ack = ACKNOWLEDGEMENTS[self.index % len(ACKNOWLEDGEMENTS)]
        return self._advance([*decisions, Say(ack, "acknowledge")])

    def silence(self, seconds: float) -> list[Decision]:
        """The student has been silent for `seconds` since the examiner last spoke."""
        if self.phase != "listening" or self._nudged or seconds < self._nudge_after:
            return []
        self._nudged = True
        return [Say(NUDGE, "nudge")]

    def tick(self) -> list[Decision]:
        """Call periodically: moves on once the current question's time limit has passed."""
        if self.phase != "listening" or self.time_left() > 0:
            return []
        return self._advance([Say(TIME_UP, "acknowledge")])

    def terminate(self, reason: str) -> list[Decision]:
        """End early (disconnect past the grace period, operator action); idempotent."""
        if self.phase == "finished":
            return []
        self.phase = "finished"
        self.question_started_at = None
        return [Finish("terminated", reason)]

    def _mentions_keyword(self, question: Question, transcript: str) -> bool:
        if not question.expected_keywords:
            return False
        estimate = keyword_score(
            transcript, question.expected_keywords, question.max_score, self._threshold
        )
        return bool(estimate.matched)

    @property
    def _threshold(self) -> float:
        return self.cfg.keyword_matching_threshold

    def _evaluate(self, question: Question) -> Evaluate:
        if len(self._attempts) == 1:
            self.answered += 1
        return Evaluate(question, " ".join(self._attempts), len(self._attempts))

    def _give_up(self, question: Question, transcript: str) -> list[Decision]:
        if self._attempts:
            # A "don't know" to a follow-up adds nothing: the earlier answer is already scored.
            return self._advance([Say(MOVE_ON, "acknowledge")])
        self._attempts.append(transcript.strip())
        return self._advance([self._evaluate(question), Say(MOVE_ON, "acknowledge")])

    def _followup(self, question: Question) -> Say | None:
        if self.followups_used >= self.cfg.max_followups or not question.expected_keywords:
            return None
        if self.time_left() <= 0:
            return None
        estimate = keyword_score(
            " ".join(self._attempts),
            question.expected_keywords,
            question.max_score,
            self._threshold,
        )
        if not estimate.missing or feedback_type(estimate.score, question.max_score) == "correct":
            return None
        template = FOLLOWUPS[(self.index + self.followups_used) % len(FOLLOWUPS)]
        return Say(template.format(estimate.missing[0]), "followup")

    def _ask(self) -> Say:
        self.phase = "listening"
        self.question_started_at = self._clock()
        self.followups_used = 0
        self._nudged = False
        self._attempts = []
        self._last_prompt = _prompt(self.index, self.questions[self.index])
        return Say(self._last_prompt, "question")

    def _advance(self, lead: list[Decision]) -> list[Decision]:
        self.index += 1
        if self.index < len(self.questions):
            return [*lead, self._ask()]
        self.phase = "finished"
        self.question_started_at = None
        return [*lead, Say(CLOSING, "closing"), Finish("completed", "all questions asked")]
