"""The viva flow of SPEC.md as a pure state machine with an injected clock.

The session's async shell feeds `ExamFlow` events (start, an answer's transcript, a stretch of
silence, a periodic tick, termination) and carries out the decisions it returns, in order: say a
text (`Say`), score an answer off the voice path (`Evaluate`), end the session (`Finish`), or
nothing (`Ignored`, with the reason). The flow never waits for a model: whether an answer deserves
a follow-up is decided from the synchronous keyword estimate, so the examiner replies at once
while the configured evaluator scores the answer in the background.

Rules, per question:
- a request to repeat ("pardon?", "could you say the question again please") repeats the last
  prompt; "I'm sorry, I don't know the answer to that one", "pass" and the like are scored
  (zero, naturally) and the exam moves on; both are recognised in natural sentences
  (`worker/exam/intents.py`) and whatever their length;
- nothing the student says is dropped: speech shorter than `min_answer_duration_seconds` is
  held and joined with what follows, and when nothing follows for `short_answer_wait_seconds`
  it is taken as the answer;
- a reply to an answer is tentative until `commit()`: if the student was not finished after all
  (they go on speaking over the reply), `take_back()` restores the flow as it was before that
  answer (no question skipped, nothing scored against the wrong question) and holds the answer,
  so the continuation joins it;
- an answer the keyword estimate would not grade `correct` gets a follow-up that probes for more
  (an order, a reason, an example, a further point: `worker/exam/probes.py`) without naming
  anything of the expected answer, at most `max_followups` per question and only while time is
  left;
- a question about the question ("what do you mean by disability here?") gets the question put
  another way; it is not an answer, and the time limit and what was said so far stand;
- `max_question_duration_seconds` after a question was asked, the exam moves on (the limit
  covers its follow-ups and repeats too, so nobody can stall a question forever);
- one nudge per question after `nudge_after_seconds` of silence.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from core.config import ExamConfig
from core.grading import feedback_type
from worker.exam.evaluators import Question, keyword_score, words
from worker.exam.intents import intent_of
from worker.exam.probes import SAFE_PROBES, leaks, probe, rephrase

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
SayKind = Literal[
    "greeting", "question", "acknowledge", "followup", "clarify", "repeat", "nudge", "closing"
]


@dataclass(frozen=True)
class Say:
    """Say `text`. A follow-up or clarification may be rewritten by the LLM on LLM profiles;
    whatever is spoken must not name any of `avoid` (the expected keywords not yet said)."""

    text: str
    kind: SayKind
    avoid: tuple[str, ...] = ()


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
    # held: shorter than the minimum, kept to be joined with what follows
    reason: Literal["held", "empty", "not_listening"]


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
MOVE_ON = "That's alright, let's move on."
TIME_UP = "We have run out of time for this question."
NUDGE = "Take your time. If you would like me to repeat the question, just ask."
CLOSING = "That was the last question. Your viva is now complete. Thank you, and goodbye."


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
        # Outage time given back to the current question on resume, at most the grace period
        # per question: reconnecting cannot hold a question (and a slot) open forever.
        self._outage_credit = cfg.reconnect_grace_seconds
        self._paused_at: float | None = None
        self.answered = 0  # questions with at least one answer sent for scoring
        self._nudged = False
        self._attempts: list[str] = []  # what was said to the current question
        self._last_prompt = ""  # the question or follow-up a repeat request repeats
        self._held: list[tuple[str, float]] = []  # short speech waiting for what follows
        # Before the last answer, that answer (joined), its duration: what take_back() needs.
        self._undo: tuple[dict[str, Any], str, float] | None = None

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

    def continue_at(
        self, index: int, answered: int, progress: dict[str, Any] | None = None
    ) -> None:
        """Pick up an exam another worker was running, at question `index` (0-based) with
        `answered` questions scored: the next connection resumes it (`resume()`), never from
        the greeting. `progress` is that worker's last `checkpoint()`: when it is about the
        same question, what was said to it, the follow-ups used and the time used carry over."""
        if self.phase != "greeting":
            raise RuntimeError("the exam has already started")
        self.index = min(max(index, 0), len(self.questions) - 1)
        self._ask()
        self.answered = answered
        if not progress or progress.get("index") != self.index:
            return
        self._attempts = [str(t) for t in progress.get("said", [])]
        self._held = [(str(t), float(d)) for t, d in progress.get("held", [])]
        self.followups_used = int(progress.get("followups", 0))
        self._last_prompt = str(progress.get("prompt") or self._last_prompt)
        self._outage_credit = float(progress.get("credit", self._outage_credit))
        assert self.question_started_at is not None
        self.question_started_at -= float(progress.get("elapsed_s", 0.0))
        self.answered = max(answered, int(progress.get("answered", 0)))

    def checkpoint(self) -> dict[str, Any]:
        """Where the exam stands, as another worker would resume it (`continue_at`): JSON-ready.
        A reply that can still be taken back is not part of it: the answer it replied to is
        held, so a move never skips a question nor loses what was said."""
        if self._undo is not None:
            before, text, duration = self._undo
            state, held = before, [(text, duration)]
        else:
            state, held = self._snapshot(), list(self._held)
        started = state["question_started_at"]
        elapsed = 0.0 if started is None else max(0.0, self._clock() - started)
        return {
            "index": state["index"],
            "said": list(state["_attempts"]),
            "held": [[t, round(d, 3)] for t, d in held],
            "followups": state["followups_used"],
            "prompt": state["_last_prompt"],
            "credit": round(state["_outage_credit"], 3),
            "elapsed_s": round(elapsed, 3),
            "answered": state["answered"],
        }

    def prompts(self) -> list[str]:
        """The fixed texts that can start a reply (and the opening), in the order they are
        likely needed: worth synthesizing at session start so no TTS sits on the turn's
        critical path. Later questions always follow an acknowledgement, so they are made
        while it plays instead of competing with the student's first answers for the CPU."""
        fixed = [*ACKNOWLEDGEMENTS, MOVE_ON, TIME_UP, NUDGE, CLOSING, *SAFE_PROBES]
        return [_greeting(len(self.questions)), _prompt(0, self.questions[0]), *fixed]

    def pause(self) -> None:
        """The connection dropped: the outage may be given back to the question on resume."""
        self._paused_at = self._clock()

    def resume(self) -> list[Decision]:
        """The student came back after a dropped connection: ask the current prompt again. The
        outage was not their thinking time, so it is given back to the question's time limit,
        up to `reconnect_grace_seconds` per question in all."""
        self._undo = None
        paused_at, self._paused_at = self._paused_at, None
        if self.phase != "listening":
            return []
        if paused_at is not None and self.question_started_at is not None:
            credit = min(max(0.0, self._clock() - paused_at), self._outage_credit)
            self.question_started_at += credit
            self._outage_credit -= credit
        self._nudged = False
        return [Say(f"Welcome back. {self._last_prompt}", "repeat")]

    def answer(self, transcript: str, duration_s: float) -> list[Decision]:
        """The student's answer has ended: `transcript` of `duration_s` seconds of speech."""
        self._undo = None  # a new answer: the reply to the previous one stands
        if self.phase != "listening":
            return [Ignored("not_listening")]
        if not words(transcript):
            return [Ignored("empty")]
        question = self.questions[self.index]
        intent = intent_of(transcript)
        if intent == "clarify":  # not an answer: nothing is scored, held or joined
            # Words the question itself uses are not a hint; the rest of the answer is.
            hidden = tuple(k for k in question.expected_keywords if not leaks(question.text, (k,)))
            return [Say(rephrase(question), "clarify", avoid=hidden)]
        if intent is not None and self._mentions_keyword(question, transcript):
            intent = None  # naming an expected keyword makes it an answer, whatever else was said
        if intent == "repeat":
            return [Say(f"Of course. {self._last_prompt}", "repeat")]
        before = self._snapshot()
        text, duration = self._join(transcript.strip(), duration_s)
        if intent == "dont_know":
            decisions = self._give_up(question, text, joined=text != transcript.strip())
        elif duration < self.cfg.min_answer_duration_seconds:
            self._held = [(text, duration)]
            return [Ignored("held")]
        else:
            decisions = self._accept(question, text)
        self._undo = (before, text, duration)
        return decisions

    def silence(self, seconds: float) -> list[Decision]:
        """The student has been silent for `seconds` since they or the examiner last spoke."""
        if self.phase != "listening":
            return []
        if self._held and seconds >= self.cfg.short_answer_wait_seconds:
            # Nothing followed a short answer: it is the answer.
            self._undo = None
            before = self._snapshot()
            text, duration = self._join("", 0.0)
            decisions = self._accept(self.questions[self.index], text)
            self._undo = (before, text, duration)
            return decisions
        if self._nudged or seconds < self._nudge_after:
            return []
        self._nudged = True
        return [Say(NUDGE, "nudge")]

    @property
    def pending_text(self) -> str:
        """What the student's next words would continue: speech held for joining, or the
        answer whose reply can still be taken back."""
        if self._held:
            return " ".join(t for t, _ in self._held if t)
        return self._undo[1] if self._undo is not None else ""

    @property
    def said_so_far(self) -> str:
        """Everything said to the current question that counts as its answer."""
        return " ".join([*self._attempts, *(t for t, _ in self._held if t)])

    @property
    def tentative(self) -> bool:
        """The last answer's reply can still be taken back."""
        return self._undo is not None

    def commit(self) -> None:
        """The reply to the last answer has been heard: it can no longer be taken back."""
        self._undo = None

    def take_back(self) -> bool:
        """The student was not finished: undo the reply to their last answer and hold the answer
        to be joined with what they say next. False when there is nothing to take back."""
        if self._undo is None:
            return False
        before, text, duration = self._undo
        self._undo = None
        self._restore(before)
        self._held = [(text, duration)]
        return True

    def tick(self) -> list[Decision]:
        """Call periodically: moves on once the current question's time limit has passed (what
        was held is the answer then)."""
        if self.phase != "listening" or self.time_left() > 0:
            return []
        self._undo = None
        lead: list[Decision] = [Say(TIME_UP, "acknowledge")]
        if self._held:
            text, _ = self._join("", 0.0)
            self._attempts.append(text)
            lead.insert(0, self._evaluate(self.questions[self.index]))
        return self._advance(lead)

    def terminate(self, reason: str) -> list[Decision]:
        """End early (disconnect past the grace period, operator action); idempotent."""
        self._undo = None
        if self.phase == "finished":
            return []
        self.phase = "finished"
        self.question_started_at = None
        return [Finish("terminated", reason)]

    def _mentions_keyword(self, question: Question, transcript: str) -> bool:
        if not question.expected_keywords:
            return False
        estimate = keyword_score(
            transcript,
            question.expected_keywords,
            question.max_score,
            self._threshold,
            question.synonyms,
        )
        return bool(estimate.matched)

    @property
    def _threshold(self) -> float:
        return self.cfg.keyword_matching_threshold

    def _evaluate(self, question: Question) -> Evaluate:
        if len(self._attempts) == 1:
            self.answered += 1
        return Evaluate(question, " ".join(self._attempts), len(self._attempts))

    def _give_up(self, question: Question, text: str, *, joined: bool) -> list[Decision]:
        if self._attempts and not joined:
            # A "don't know" to a follow-up adds nothing: the earlier answer is already scored.
            return self._advance([Say(MOVE_ON, "acknowledge")])
        self._attempts.append(text)
        return self._advance([self._evaluate(question), Say(MOVE_ON, "acknowledge")])

    def _accept(self, question: Question, text: str) -> list[Decision]:
        self._attempts.append(text)
        decisions: list[Decision] = [self._evaluate(question)]
        followup = self._followup(question)
        if followup is not None:
            self.followups_used += 1
            self._last_prompt = followup.text
            return [*decisions, followup]
        ack = ACKNOWLEDGEMENTS[self.index % len(ACKNOWLEDGEMENTS)]
        return self._advance([*decisions, Say(ack, "acknowledge")])

    def _join(self, text: str, duration_s: float) -> tuple[str, float]:
        """What was held, then `text`: one answer."""
        parts = [t for t, _ in self._held if t] + ([text] if text else [])
        total = sum(d for _, d in self._held) + duration_s
        self._held = []
        return " ".join(parts), total

    _STATE = (
        "phase",
        "index",
        "followups_used",
        "question_started_at",
        "_outage_credit",
        "answered",
        "_nudged",
        "_attempts",
        "_last_prompt",
        "_held",
    )

    def _snapshot(self) -> dict[str, Any]:
        return {k: copy.copy(getattr(self, k)) for k in self._STATE}

    def _restore(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

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
            question.synonyms,
        )
        if not estimate.missing or feedback_type(estimate.score, question.max_score) == "correct":
            return None
        text = probe(question, self.followups_used, estimate.missing, question.synonyms)
        return Say(text, "followup", avoid=estimate.missing)

    def _ask(self) -> Say:
        self.phase = "listening"
        self.question_started_at = self._clock()
        self._outage_credit = self.cfg.reconnect_grace_seconds
        self.followups_used = 0
        self._nudged = False
        self._attempts = []
        self._held = []
        self._last_prompt = _prompt(self.index, self.questions[self.index])
        return Say(self._last_prompt, "question")

    def _advance(self, lead: list[Decision]) -> list[Decision]:
        self.index += 1
        if self.index < len(self.questions):
            return [*lead, self._ask()]
        self.phase = "finished"
        self.question_started_at = None
        return [*lead, Say(CLOSING, "closing"), Finish("completed", "all questions asked")]
