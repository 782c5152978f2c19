"""The question's keywords in the ASR prompt (`models.asr.prompt_terms`), on the real tiny.en:
they let Whisper spell the subject's words a student says, and another question's keywords are
not written into an answer that does not say them."""

from __future__ import annotations

import importlib.util
import random
import wave
from typing import Any

import numpy as np
import pytest
import yaml

from models.base import SAMPLE_RATE
from models.hub import Hub
from tests.integration.conftest import CLIPS, ROOT, clips
from tests.integration.wer import wer
from worker.voice.listener import asr_prompt, coverage

pytestmark = [pytest.mark.integration]

# Technical words tiny.en misspells without context ("namagram", "angiotinson"), each with its
# question's expected keywords from the bank (db/seed_data/question_banks/medical.yaml).
SAID = [
    (
        "Plot the paracetamol level on the nomogram and give acetylcysteine.",
        ("liver", "glutathione", "acetylcysteine", "nomogram", "charcoal"),
    ),
    (
        "ACE inhibitors block angiotensin, lower aldosterone and cause a cough through bradykinin.",
        ("angiotensin", "aldosterone", "bradykinin", "cough", "potassium"),
    ),
]


def _speak(text: str) -> np.ndarray:
    """`text` in Piper's joe voice, as scripts/make_test_clips.py speaks the committed clips."""
    spec = importlib.util.spec_from_file_location(
        "make_test_clips", ROOT / "scripts" / "make_test_clips.py"
    )
    assert spec is not None and spec.loader is not None
    clips_script: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(clips_script)
    audio, rate = clips_script.synthesize(clips_script.load_voice(), text, natural=False)
    return np.asarray(clips_script.resample(audio, rate, SAMPLE_RATE), dtype=np.float32)


def _bank_keywords() -> list[tuple[str, ...]]:
    out = []
    for path in sorted((ROOT / "db" / "seed_data").glob("**/*.yaml")):
        for scenario in yaml.safe_load(path.read_text(encoding="utf-8"))["scenarios"]:
            out += [tuple(q.get("expected_keywords") or ()) for q in scenario["questions"]]
    return [k for k in out if k]


async def test_the_questions_terms_spell_the_subjects_words_as_said(hub: Hub) -> None:
    for text, keywords in SAID:
        audio = _speak(text)
        plain = (await hub.asr.transcribe(audio, "en")).text
        primed = (await hub.asr.transcribe(audio, "en", prompt=asr_prompt(keywords, ""))).text
        said = coverage(text, keywords)
        assert coverage(plain, keywords) < said, plain  # without them tiny.en misspells them
        assert coverage(primed, keywords) == said, primed  # with them every one said is written
        assert wer([text], [primed]) < wer([text], [plain])


async def test_another_questions_terms_are_not_written_into_an_answer(hub: Hub) -> None:
    """Every committed answer clip, primed with ten other questions' keywords: no keyword is
    written that the clip does not say, and the words are as right as without a prompt (the
    mean word error rate within 3 points: 0.7 -> 1.8 % when measured)."""
    others = random.Random(11).sample(_bank_keywords(), 10)
    plain_wer, primed_wer = [], []
    for clip in clips("speech") + clips("pause") + clips("intent"):
        with wave.open(str(CLIPS / clip["file"])) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        audio = pcm.astype(np.float32) / 32768.0
        plain = (await hub.asr.transcribe(audio, "en")).text
        plain_wer.append(wer([clip["text"]], [plain]))
        for keywords in others:
            primed = (await hub.asr.transcribe(audio, "en", prompt=asr_prompt(keywords, ""))).text
            primed_wer.append(wer([clip["text"]], [primed]))
            assert (coverage(primed, keywords) or 0) <= (coverage(clip["text"], keywords) or 0), (
                keywords,
                primed,
            )
    assert float(np.mean(primed_wer)) <= float(np.mean(plain_wer)) + 0.03
