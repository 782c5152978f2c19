"""What a connection needs of the session it serves, and the small types they share.

The session (`worker/session/viva.py`) creates a connection (`worker/voice/connection.py`) for
each WebSocket and hands itself over as a `SessionHost`: the connection reads the session's
record, models, config and exam flow, and calls back to audit, write and score. The session
imports the connection; the connection imports only this protocol, never the session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.config import Config
from core.grading import SessionTotals
from db import ops
from models.base import Transcript
from models.hub import Hub
from worker.exam.flow import Evaluate, ExamFlow, Question
from worker.voice.metrics import TurnStages
from worker.voice.speaker import Speaker


@dataclass
class Heard:
    question: str  # the text of the question (or follow-up) this answered
    transcript: Transcript
    duration_s: float
    stages: TurnStages


class Dropped(Exception):
    """This connection ended (the student left); the session lives on."""


class Over(Exception):
    """The session ended (completed, terminated, or stopped)."""


class Record(Protocol):
    @property
    def session_id(self) -> int: ...
    @property
    def code(self) -> str: ...
    @property
    def questions(self) -> Sequence[Question]: ...


class Usage(Protocol):
    audio_in_seconds: float
    audio_out_seconds: float


class SessionHost(Protocol):
    ending: bool  # the closing words, result and close are under way
    last_speech_at: float  # when the student last began to speak (or the session began)

    @property
    def r(self) -> Record: ...
    @property
    def hub(self) -> Hub: ...
    @property
    def cfg(self) -> Config: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def flow(self) -> ExamFlow: ...
    @property
    def speaker(self) -> Speaker: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def latencies(self) -> list[float]: ...
    @property
    def response_ids(self) -> Iterator[int]: ...
    @property
    def stop_reason(self) -> str | None: ...

    def audit(self, action: str, details: dict[str, Any] | None = None) -> None: ...
    def changed(self) -> None: ...
    def checkpoint(self) -> None: ...
    def client_info(self, details: dict[str, Any]) -> None: ...
    def enqueue(self, op: ops.Op) -> None: ...
    def score_later(
        self, d: Evaluate, heard: Heard | None, latency_f: asyncio.Future[float] | None
    ) -> None: ...
    async def wrap_up(self, status: str, reason: str) -> SessionTotals: ...
