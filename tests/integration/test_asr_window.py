"""Whisper on a short window (audio + `pad_s` of silence) hears what the whole window hears,
and a decode that looks degenerate is transcribed again the standard way."""

from __future__ import annotations

import asyncio

import pytest

import models.whisper as whisper
from core.config import load_config
from models.whisper import WhisperASR, tiny_en_path
from tests.integration.conftest import CLIPS, ROOT, clips, read_wav
from tests.integration.wer import wer


@pytest.fixture(scope="module")
def pad_s() -> float:
    """The cpu profile's window, as the worker runs it."""
    pad = load_config(ROOT / "config.yaml", {}).models.asr.pad_seconds
    assert 0 < pad < 30
    return pad


@pytest.fixture(scope="module")
def speech() -> list[tuple]:
    return [(read_wav(CLIPS / c["file"]), c["text"]) for c in clips("speech")]


async def test_short_window_words_match_the_whole_window(speech: list[tuple], pad_s: float) -> None:
    whole, short = WhisperASR(tiny_en_path()), WhisperASR(tiny_en_path(), pad_s=pad_s)
    frames: list[int] = []  # what the short one's encoder was given, call by call
    encode = short._model.encode
    short._model.encode = lambda features: frames.append(features.shape[-1]) or encode(features)  # type: ignore[method-assign]
    try:
        refs = [text for _a, text in speech]
        by_whole = [(await whole.transcribe(a)).text for a, _t in speech]
        by_short = [(await short.transcribe(a)).text for a, _t in speech]
        expected = [whisper.window_frames(len(a) / 16000, pad_s) for a, _t in speech]
        assert frames == expected and min(frames) < whisper.BATCH_FRAMES
        assert wer(refs, by_short) <= wer(refs, by_whole) + 0.01
        assert wer(by_whole, by_short) <= 0.02
        batched = await short.transcribe_batch([a for a, _t in speech[:4]])
        assert wer(refs[:4], [t.text for t in batched]) <= 0.05
        # Noise holds no words: whatever comes back, it is short and nothing breaks.
        noise = await short.transcribe(read_wav(CLIPS / "noise_2s.wav"))
        assert len(noise.text.split()) <= 3
    finally:
        whole.close()
        short.close()


async def test_a_degenerate_decode_is_redone_whole(
    speech: list[tuple], pad_s: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, short = WhisperASR(tiny_en_path()), WhisperASR(tiny_en_path(), pad_s=pad_s)
    try:
        audio, _text = speech[1]
        expected = (await whole.transcribe(audio)).text
        monkeypatch.setattr(whisper, "degenerate", lambda *_args: True)
        redone = await short.transcribe(audio)
        assert redone.text == expected and short.redone == 1
        several = await short.transcribe_batch([audio, speech[2][0]])
        assert several[0].text == expected and short.redone == 3
    finally:
        whole.close()
        short.close()


async def test_two_replicas_transcribe_at_once_as_one_does(
    speech: list[tuple], pad_s: float
) -> None:
    """`models.asr.workers` 2: two executor threads share the model object (CTranslate2 keeps
    a replica each); what they say at once is what one says in turn."""
    one, two = (
        WhisperASR(tiny_en_path(), pad_s=pad_s),
        WhisperASR(tiny_en_path(), pad_s=pad_s, workers=2),
    )
    try:
        audios = [a for a, _t in speech[:4]]
        alone = [(await one.transcribe(a)).text for a in audios]
        together = await asyncio.gather(*(two.transcribe(a) for a in audios))
        assert [t.text for t in together] == alone
    finally:
        one.close()
        two.close()
