"""A scripted student over the real WebSocket: reads every frame in the background, so tests can
wait for events, count examiner audio per response, and stream PCM at real-time pace."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import ClientWebSocketResponse, WSMsgType

CLIPS = Path(__file__).resolve().parents[1] / "data" / "clips"
FRAME = 1024  # 32 ms of 16 kHz PCM16


def clip_pcm(name: str = "law_contract.wav") -> bytes:
    with wave.open(str(CLIPS / name)) as w:
        return w.readframes(w.getnframes())


def silence(seconds: float) -> bytes:
    return bytes(int(16000 * seconds) * 2)


def tone(seconds: float, dbfs: float = -20.0) -> bytes:
    """A steady 220 Hz tone: speech to the fake VAD (loudness), with no pause in it."""
    t = np.arange(int(16000 * seconds)) / 16000
    amplitude = 32767 * 10 ** (dbfs / 20) * np.sqrt(2)
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


@dataclass
class Student:
    ws: ClientWebSocketResponse
    events: list[dict[str, Any]] = field(default_factory=list)
    # ("event", dict) and ("audio", bytes) in arrival order, to check what came after what
    log: list[tuple[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    _new: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    def start(self) -> Student:
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                event = json.loads(msg.data)
                self.events.append(event)
                self.log.append(("event", event))
            elif msg.type == WSMsgType.BINARY:
                self.log.append(("audio", msg.data))
            self._new.set()
        self.close_code = self.ws.close_code
        self._new.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def until(
        self, kind: str, /, count: int = 1, within: float = 60, **match: Any
    ) -> dict[str, Any]:
        """The `count`-th event of type `kind` (with the fields in `match`), waiting for it."""
        deadline = time.monotonic() + within
        while True:
            hits = [e for e in self.of(kind) if all(e.get(k) == v for k, v in match.items())]
            if len(hits) >= count:
                return hits[count - 1]
            if self._reader is not None and self._reader.done():
                raise AssertionError(f"closed before {kind}; saw {self.types()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} x{count} in {within} s; saw {self.types()}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    async def closed(self, within: float = 30) -> int | None:
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), within)
        return self.close_code

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def send(self, pcm: bytes, realtime: bool = True) -> None:
        """Stream `pcm` in 32 ms frames, paced at real time against absolute deadlines."""
        start = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), FRAME)):
            if realtime:
                await asyncio.sleep(max(0.0, start + n * 0.032 - time.monotonic()))
            await self.ws.send_bytes(pcm[i : i + FRAME])

    async def event(self, payload: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(payload))

    def audio_after(self, event_type: str) -> int:
        """Bytes of examiner audio received after the last `event_type` event and before the
        next `response.created`."""
        log = self.log
        idx = max(i for i, (k, v) in enumerate(log) if k == "event" and v["type"] == event_type)
        total = 0
        for kind, value in self.log[idx + 1 :]:
            if kind == "event" and value["type"] == "response.created":
                break
            if kind == "audio":
                total += len(value)
        return total

    async def stop(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=10)
