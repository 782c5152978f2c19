"""In-memory stand-ins for what a live viva session touches outside itself: its WebSocket and
its write-behind writer. With the fake models (`models.fakes`) they run the realtime core
(`worker.session.viva.VivaSession`) in process: no server, no database.

- `FakeSocket` is the server side of one WebSocket as the session uses it (`async for msg in
  ws`, `send_str`, `send_bytes`, `close(code=...)`, `closed`, `close_code`), with the client's
  side on it: send PCM frames and JSON events in, read what the server sent (events parsed,
  audio counted), wait for an event, hang up.
- `Microphone` streams the client's audio at real-time pace, silence between what it is told
  to say, as the student page does.
- `RecordingWriter` keeps the ops it is given, in order, with look-ups for the rows tests check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import WSMessage, WSMsgType

from db import ops
from tests.db.student import silence

FRAME_BYTES = 1024  # 32 ms of 16 kHz PCM16: one VAD chunk
FRAME_S = 0.032


class FakeSocket:
    """One WebSocket, both ends: the session reads and writes the server's side, a test drives
    the client's."""

    def __init__(self) -> None:
        self._incoming: asyncio.Queue[WSMessage | None] = asyncio.Queue()
        self.closed = False
        self.close_code: int | None = None
        self.events: list[dict[str, Any]] = []
        # ("event", dict) and ("audio", byte count) in the order sent, to see what followed what
        self.log: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()

    # --- the server's side (what aiohttp's WebSocketResponse offers the session) ---------------

    def __aiter__(self) -> FakeSocket:
        return self

    async def __anext__(self) -> WSMessage:
        msg = await self._incoming.get()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def send_str(self, data: str) -> None:
        self._check_open()
        event = json.loads(data)
        self.events.append(event)
        self.log.append(("event", event))
        self._changed.set()

    async def send_bytes(self, data: bytes) -> None:
        self._check_open()
        self.log.append(("audio", len(data)))
        self._changed.set()

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        if self.closed:
            return False
        self.closed, self.close_code = True, code
        self._incoming.put_nowait(None)  # the receive loop ends, as aiohttp's does
        self._changed.set()
        return True

    def _check_open(self) -> None:
        if self.closed:  # what aiohttp raises for a write to a closed socket
            raise ConnectionResetError("Cannot write to closing transport")

    # --- the client's side ---------------------------------------------------------------------

    def send_audio(self, pcm: bytes) -> None:
        self._incoming.put_nowait(WSMessage(WSMsgType.BINARY, pcm, None))

    def send_event(self, event: dict[str, Any]) -> None:
        self._incoming.put_nowait(WSMessage(WSMsgType.TEXT, json.dumps(event), None))

    def hang_up(self) -> None:
        """The client goes away (closes, or the network drops it)."""
        if not self.closed:
            self.closed, self.close_code = True, 1006
            self._incoming.put_nowait(None)
            self._changed.set()

    def of(self, kind: str, /, **match: Any) -> list[dict[str, Any]]:
        """The events of type `kind` received so far (with the fields in `match`)."""
        return [
            e
            for e in self.events
            if e["type"] == kind and all(e.get(k) == v for k, v in match.items())
        ]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def until(
        self, kind: str, /, count: int = 1, within: float = 10.0, **match: Any
    ) -> dict[str, Any]:
        """The `count`-th event of type `kind` (with the fields in `match`), waiting for it."""
        deadline = time.monotonic() + within
        while True:
            hits = self.of(kind, **match)
            if len(hits) >= count:
                return hits[count - 1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} {match} x{count} in {within} s: {self.types()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def until_closed(self, within: float = 10.0) -> int | None:
        deadline = time.monotonic() + within
        while not self.closed:
            assert time.monotonic() < deadline, f"still open after {within} s: {self.types()}"
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())
        return self.close_code

    def audio_after(self, kind: str) -> int:
        """Bytes of examiner audio sent after the last `kind` event and before the next
        `response.created` (what a cancelled response still sent: should be none)."""
        last = max(i for i, (k, v) in enumerate(self.log) if k == "event" and v["type"] == kind)
        total = 0
        for k, v in self.log[last + 1 :]:
            if k == "event" and v["type"] == "response.created":
                break
            if k == "audio":
                total += v
        return total

    def audio_bytes(self, response_id: str) -> int:
        """Bytes of examiner audio sent while `response_id` was the open response."""
        total, current = 0, None
        for k, v in self.log:
            if k == "event" and v["type"] == "response.created":
                current = v["response_id"]
            elif k == "audio" and current == response_id:
                total += v
        return total

    def said(self) -> str:
        """Everything the examiner's transcript deltas said, joined."""
        return "".join(e["delta"] for e in self.of("response.audio_transcript.delta"))


class Microphone:
    """The client's microphone: 32 ms frames at real-time pace, silence unless `say()` gave it
    something to send."""

    def __init__(self, ws: FakeSocket):
        self.ws = ws
        self._queue: asyncio.Queue[tuple[bytes, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._interrupt = False

    def __enter__(self) -> Microphone:
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def say(self, pcm: bytes) -> asyncio.Future[None]:
        """Send `pcm` after what is queued; the future is done once its last frame is sent."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((pcm, done))
        return done

    def stop_saying(self) -> None:
        """Stop the utterance in progress now (silence follows)."""
        self._interrupt = True

    async def _run(self) -> None:
        start, n = time.monotonic(), 0
        pending, done = b"", None
        while not self.ws.closed:
            if self._interrupt:
                pending, self._interrupt = b"", False
            if not pending and done is not None:
                if not done.done():
                    done.set_result(None)
                done = None
            if not pending and not self._queue.empty():
                pending, done = self._queue.get_nowait()
            if pending:
                frame, pending = pending[:FRAME_BYTES], pending[FRAME_BYTES:]
            else:
                frame = silence(FRAME_S)
            self.ws.send_audio(frame)
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME_S - time.monotonic()))


class RecordingWriter:
    """The write-behind writer's `enqueue`, keeping every op in order (`db.ops.OpSink`)."""

    def __init__(self) -> None:
        self.ops: list[ops.Op] = []

    def enqueue(self, op: ops.Op) -> int:
        self.ops.append(op)
        return len(self.ops)

    def rows(self, table: str) -> list[dict[str, Any]]:
        return [op.row for op in self.ops if isinstance(op, ops.Upsert) and op.table == table]

    def answers(self) -> list[dict[str, Any]]:
        return self.rows("answers")

    def evaluations(self) -> list[dict[str, Any]]:
        return self.rows("evaluations")

    def audits(self) -> list[str]:
        return [row["action"] for row in self.rows("audit_logs")]

    def session_updates(self) -> list[dict[str, Any]]:
        return [op.values for op in self.ops if isinstance(op, ops.SessionUpdate)]

    def results(self) -> list[ops.ComputeResult]:
        return [op for op in self.ops if isinstance(op, ops.ComputeResult)]

    def index(self, op_kind: str, table: str | None = None) -> int:
        """Where the first op of `op_kind` (an Upsert of `table`) is in the order given."""
        for i, op in enumerate(self.ops):
            if op.kind == op_kind and (table is None or getattr(op, "table", None) == table):
                return i
        raise AssertionError(f"no {op_kind} {table or ''} op among {len(self.ops)}")

    async def until(self, check: Any, within: float = 10.0) -> Any:
        """Poll `check()` (a look-up on this writer) until it is truthy."""
        deadline = time.monotonic() + within
        while not (value := check()):
            assert time.monotonic() < deadline, f"not true in {within} s: {value!r}"
            await asyncio.sleep(0.02)
        return value
