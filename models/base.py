"""The model protocols, their small data types and their typed errors.

Each stage is one tiny interface; real backends and fakes implement the same one, and the hub
picks which by config (`backend: fake`). Audio crossing these interfaces is 16 kHz mono float32
numpy arrays in [-1, 1] (input) and PCM16 little-endian bytes (TTS output).
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16_000
VAD_CHUNK = 512  # samples: 32 ms at 16 kHz, what Silero expects
Audio = npt.NDArray[np.float32]


class ModelError(RuntimeError):
    """Base of every model-layer error."""


class InvalidAudio(ModelError, ValueError):
    """Audio of the wrong type, shape, rate or length."""


class InvalidText(ModelError, ValueError):
    """Text a model cannot take (empty, too long)."""


class WeightsMissing(ModelError, FileNotFoundError):
    """A weight file is not where config says; the message names it and the fetch command."""

    def __init__(self, path: str, what: str):
        super().__init__(
            f"{what}: weight file {path} is missing; run `python scripts/fetch_models.py` "
            "(or `make venv`, which installs the packages that carry cpu-profile weights)"
        )
        self.path = path


class StructuredOutputFailed(ModelError):
    """The LLM could not produce JSON valid against the schema within its token budget."""


class ModelNotReady(ModelError):
    """A model was used before the hub loaded it, or after it closed."""


def package_dir(name: str) -> Path | None:
    """An installed package's directory, found without importing it: several weight packages
    import heavy or missing dependencies (torch, llama_cpp) at import time."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def check_audio(audio: Any, *, min_samples: int = 1, max_seconds: float = 600.0) -> Audio:
    """Validate 16 kHz mono float32 audio and return it as a contiguous float32 array."""
    if not isinstance(audio, np.ndarray):
        raise InvalidAudio(f"audio must be a numpy array, got {type(audio).__name__}")
    if audio.dtype != np.float32:
        raise InvalidAudio(f"audio must be float32 in [-1, 1], got {audio.dtype}")
    if audio.ndim != 1:
        raise InvalidAudio(f"audio must be mono (1-D), got shape {audio.shape}")
    if audio.size < min_samples:
        raise InvalidAudio(f"audio too short: {audio.size} samples, need {min_samples}")
    if audio.size > max_seconds * SAMPLE_RATE:
        raise InvalidAudio(f"audio too long: {audio.size / SAMPLE_RATE:.1f} s > {max_seconds} s")
    if not np.isfinite(audio).all():
        raise InvalidAudio("audio contains NaN or infinite samples")
    return np.ascontiguousarray(audio)


def pcm16_to_float(data: bytes) -> Audio:
    if len(data) % 2:
        raise InvalidAudio(f"PCM16 data has an odd number of bytes ({len(data)})")
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0).astype(np.float32)


def float_to_pcm16(audio: npt.NDArray[Any]) -> bytes:
    clipped = np.clip(audio, -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    segments: tuple[Segment, ...]
    confidence: float  # 0..1, mean of segment probabilities
    duration_s: float
    language: str


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    max_tokens: int = 96
    top_p: float = 0.95
    stop: tuple[str, ...] = ()


@dataclass
class Usage:
    """Tokens spent; backends add to it, so one Usage can total a whole session."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class ModelInfo:
    stage: Literal["vad", "asr", "llm", "tts", "eot"]
    name: str
    backend: str
    device: str
    weights: str
    extra: dict[str, Any] = field(default_factory=dict)


Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


class VADStream(Protocol):
    def probability(self, chunk: Audio) -> float:
        """Speech probability of one 512-sample chunk (cheap: called on the event loop)."""
        ...

    async def probabilities(self, chunks: list[Audio]) -> list[float]:
        """Each chunk's speech probability, in order; a backend may batch them with other
        sessions' chunks (one model call for all)."""
        ...

    def reset(self) -> None: ...


class VAD(Protocol):
    info: ModelInfo

    def stream(self) -> VADStream:
        """Fresh per-connection state."""
        ...


class ASR(Protocol):
    info: ModelInfo

    async def transcribe(
        self, audio: Audio, language: str = "en", prompt: str | None = None
    ) -> Transcript: ...


class LLM(Protocol):
    info: ModelInfo

    def stream(
        self, messages: Sequence[Message], sampling: Sampling, usage: Usage | None = None
    ) -> AsyncIterator[str]:
        """Text deltas; closing or cancelling the iterator aborts the request at once."""
        ...

    async def generate_json(
        self,
        messages: Sequence[Message],
        schema: dict[str, Any],
        sampling: Sampling,
        usage: Usage | None = None,
    ) -> dict[str, Any]:
        """A JSON object valid against `schema`, or StructuredOutputFailed."""
        ...


class EndOfTurn(Protocol):
    """How likely the student has finished their turn, judged from how the answer sounds."""

    info: ModelInfo

    async def probability(self, audio: Audio) -> float:
        """P(turn complete) given the answer so far (16 kHz float32, ending where speech
        paused); the model looks at the last few seconds only."""
        ...


class TTS(Protocol):
    info: ModelInfo
    sample_rate: int

    def stream(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        """PCM16LE mono chunks at `sample_rate`, the first as early as the model allows."""
        ...


MAX_TTS_CHARS = 2000


def check_text(text: str, what: str = "text", limit: int = MAX_TTS_CHARS) -> str:
    if not isinstance(text, str):
        raise InvalidText(f"{what} must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise InvalidText(f"{what} is empty")
    if len(stripped) > limit:
        raise InvalidText(f"{what} is {len(stripped)} characters; the limit is {limit}")
    return stripped
