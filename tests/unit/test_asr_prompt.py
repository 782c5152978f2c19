"""The ASR's prompt for an answer: the question's keywords first, then the answer so far, so
Whisper spells the subject's words as the examiner wrote them (`models.asr.prompt_terms`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from core.config import load_config, replace_settings
from models.base import SAMPLE_RATE
from models.fakes import FakeASR, FakeEOT, FakeLLM, FakeTTS, FakeVAD
from models.hub import Hub
from worker.exam.evaluators import Question
from worker.voice.listener import PROMPT_WORDS, Listener, asr_prompt
from worker.voice.turns import SpeechStopped

ROOT = Path(__file__).resolve().parents[2]
QUESTION = Question(
    1,
    1,
    "How do you manage a paracetamol overdose?",
    ("nomogram", "acetylcysteine"),
    "Level against the nomogram; acetylcysteine.",
)


def test_the_terms_come_first_and_the_answer_so_far_after_them() -> None:
    assert asr_prompt(("nomogram", "acetylcysteine"), "") == "Terms: nomogram, acetylcysteine."
    assert asr_prompt(("nomogram",), " I would  check the level. ") == (
        "Terms: nomogram. I would check the level."
    )
    assert asr_prompt((), "I would check the level.") == "I would check the level."
    assert asr_prompt((), "  ") is None


def test_a_long_answer_keeps_its_last_words_so_the_terms_stay_in_whispers_prompt() -> None:
    """Whisper keeps only a prompt's last 223 tokens: the answer so far is cut to its last
    PROMPT_WORDS words, never the terms."""
    before = " ".join(f"w{i}" for i in range(PROMPT_WORDS + 50))
    prompt = asr_prompt(("nomogram",), before)
    assert prompt is not None and prompt.startswith("Terms: nomogram. w50 ")
    assert prompt.endswith(f"w{PROMPT_WORDS + 49}")
    assert len(prompt.split()) == PROMPT_WORDS + 2


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


async def _prompts(prompt_terms: bool, carried: str = "") -> list[str | None]:
    """Every ASR prompt of one answer: 1.5 s of speech, a pause, 1 s more and the end."""
    cfg = replace_settings(
        load_config(ROOT / "config.yaml", {}),
        {"turn.policy": "silence", "models.asr.prompt_terms": prompt_terms},
    )
    asr = FakeASR("we plot the level")
    hub = Hub(vad=FakeVAD(), asr=asr, llm=FakeLLM(), tts=FakeTTS(), eot=FakeEOT())
    listener = Listener(hub, cfg, lambda: QUESTION)
    listener.carry(carried)
    listener.feed(_tone(1.5))
    listener.feed(np.zeros(SAMPLE_RATE // 5, np.float32))
    await asyncio.sleep(0.01)
    listener.feed(_tone(1.0))
    events = listener.feed(np.zeros(SAMPLE_RATE, np.float32))
    await listener.answer(next(e for e in events if isinstance(e, SpeechStopped)))
    listener.close()
    return asr.prompts


async def test_every_transcription_of_an_answer_is_prompted_with_the_questions_terms() -> None:
    prompts = await _prompts(prompt_terms=True, carried="After the overdose")
    assert len(prompts) >= 2
    assert all(p == "Terms: nomogram, acetylcysteine. After the overdose" for p in prompts)


async def test_without_prompt_terms_only_the_answer_so_far_is_the_prompt() -> None:
    assert set(await _prompts(prompt_terms=False, carried="After the overdose")) == {
        "After the overdose"
    }
    assert set(await _prompts(prompt_terms=False)) == {None}
