"""What one viva cost: audio seconds in and out and LLM tokens, kept in the result's
`result_json["usage"]` so an operator can price a session.

`MeteredLLM` wraps the process's LLM for one session so every call (acknowledgements and
scoring alike) adds to that session's totals without the callers knowing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.base import LLM, Message, ModelInfo, Sampling, Usage


@dataclass
class SessionUsage:
    audio_in_seconds: float = 0.0
    audio_out_seconds: float = 0.0
    llm: Usage = field(default_factory=Usage)
    llm_requests: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "audio_in_seconds": round(self.audio_in_seconds, 2),
            "audio_out_seconds": round(self.audio_out_seconds, 2),
            "llm_requests": self.llm_requests,
            "llm_prompt_tokens": self.llm.prompt_tokens,
            "llm_completion_tokens": self.llm.completion_tokens,
        }


class MeteredLLM:
    def __init__(self, inner: LLM, usage: SessionUsage):
        self.inner = inner
        self.usage = usage
        self.info: ModelInfo = inner.info

    def stream(
        self, messages: Sequence[Message], sampling: Sampling, usage: Usage | None = None
    ) -> AsyncIterator[str]:
        self.usage.llm_requests += 1
        return self.inner.stream(messages, sampling, self.usage.llm)

    async def generate_json(
        self,
        messages: Sequence[Message],
        schema: dict[str, Any],
        sampling: Sampling,
        usage: Usage | None = None,
    ) -> dict[str, Any]:
        self.usage.llm_requests += 1
        return await self.inner.generate_json(messages, schema, sampling, self.usage.llm)
