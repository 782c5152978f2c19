"""Batched Whisper (several answers, one CTranslate2 `generate`) says what one-by-one says."""

from __future__ import annotations

import numpy as np

from models.whisper import WhisperASR, tiny_en_path
from tests.integration.conftest import CLIPS, clips, read_wav


async def test_batched_transcripts_equal_unbatched_on_the_clips() -> None:
    asr = WhisperASR(tiny_en_path())
    try:
        audios = [read_wav(CLIPS / c["file"]) for c in clips("speech")]
        assert len(audios) >= 8
        one_by_one = [await asr.transcribe(a) for a in audios]
        batched = await asr.transcribe_batch(audios)
        assert [t.text for t in batched] == [t.text for t in one_by_one]
        for b, u in zip(batched, one_by_one, strict=True):
            assert b.duration_s == u.duration_s and abs(b.confidence - u.confidence) < 0.05
        # With a carried prompt, as the listener sends the windows after the first.
        prompt = "The answer so far mentions an offer."
        prompted = await asr.transcribe_batch(audios[:3], prompts=[prompt, None, prompt])
        expected = [
            (await asr.transcribe(audios[0], prompt=prompt)).text,
            one_by_one[1].text,
            (await asr.transcribe(audios[2], prompt=prompt)).text,
        ]
        assert [t.text for t in prompted] == expected
        # Longer than one Whisper window: transcribed on its own, in its place.
        long = np.concatenate([audios[0], np.zeros(16000 * 31, dtype=np.float32)])
        mixed = await asr.transcribe_batch([audios[1], long])
        assert mixed[0].text == one_by_one[1].text and mixed[1].duration_s > 30
    finally:
        asr.close()
