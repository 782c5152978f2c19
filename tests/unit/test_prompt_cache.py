"""The process-wide cache of synthesized prompts: one synthesis per text however many sessions
ask at once, least recently used out first, and a repeat built on a cached question; and the
access log, which must not record the student tokens those sessions connect with."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from models.fakes import FakeTTS
from worker.http.server import AccessLogger
from worker.voice.speaker import PromptCache


class CountingTTS(FakeTTS):
    def __init__(self) -> None:
        super().__init__(sample_rate=1000, chars_per_s=100.0, first_chunk_ms=20.0)
        self.calls: list[str] = []

    async def stream(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        self.calls.append(text)
        async for chunk in super().stream(text, voice):
            yield chunk


async def test_concurrent_requests_share_one_synthesis() -> None:
    tts = CountingTTS()
    cache = PromptCache(tts)
    results = await asyncio.gather(*(cache.make("Question 1. What is a tort?") for _ in range(20)))
    assert tts.calls == ["Question 1. What is a tort?"]
    assert len({len(r) for r in results}) == 1 and results[0]


async def test_least_recently_used_goes_first_past_the_byte_budget() -> None:
    tts = CountingTTS()
    one = 2 * int(1000 * len("aaaaaaaaaa") / 100.0)  # bytes of a 10-character text
    cache = PromptCache(tts, max_bytes=2 * one)
    await cache.make("aaaaaaaaaa")
    await cache.make("bbbbbbbbbb")
    assert cache.get("aaaaaaaaaa") is not None  # a is now the most recent
    await cache.make("cccccccccc")
    assert cache.get("bbbbbbbbbb") is None
    assert cache.get("aaaaaaaaaa") is not None and cache.get("cccccccccc") is not None


async def test_a_repeat_reuses_the_cached_question() -> None:
    cache = PromptCache(CountingTTS())
    question = await cache.make("Question 2. Define consideration.")
    lead, pcm = cache.ending("Of course. Question 2. Define consideration.") or ("", b"")
    assert lead == "Of course." and pcm == question
    assert cache.ending("Question 2. Define consideration.") is None  # the text itself


def test_access_log_leaves_query_strings_out(caplog) -> None:  # type: ignore[no-untyped-def]
    request = make_mocked_request("GET", "/v1/sessions/VIVA-ABC/stream?token=secret.sig")
    with caplog.at_level(logging.INFO, logger="test.access"):
        AccessLogger(logging.getLogger("test.access"), "").log(request, web.Response(), 0.01)
    assert "/v1/sessions/VIVA-ABC/stream" in caplog.text
    assert "secret" not in caplog.text and "token" not in caplog.text
