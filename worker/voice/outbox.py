"""Server -> client for one connection: JSON events jump ahead of queued audio (a cancel must
not wait behind a second of speech), and examiner audio is paced against a clock with a small
lead, so a barge-in leaves little queued audio for the client to flush.

A response's own events (`exam.question`, `response.created`) travel in band with its audio, so
the client sees one response open at a time: the next one is announced when the previous one's
last audio has gone out. `open_response` is the response the client is hearing now.

Both queues are bounded. Audio producers wait when the audio queue is full (that is the pacing);
control events are small and rare, so a full control queue, or a socket that accepts nothing for
`send_timeout_s`, means the client stopped reading: `SlowConsumer` ends the connection (dropped,
see Conversation.run), and the student may reconnect within the grace period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from worker import protocol as p

CONTROL_EVENTS = 512
AUDIO_ITEMS = 64  # TTS chunks (~0.1-1 s each), ahead of the pacing
PLAYBACK_LEAD_S = 0.25  # examiner audio is sent this far ahead of real time, no further
FRAME_S = 0.1  # audio goes out in frames this long, so pacing and cancels act within one


class SlowConsumer(Exception):
    """The client is not reading what the server sends."""


class Outbox:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        sample_rate: int,
        clock: Callable[[], float],
        send_timeout_s: float,
        on_first_audio: Callable[[str], None],
        on_response_end: Callable[[str, int], None],
    ):
        self.ws = ws
        self.sample_rate = sample_rate
        self.clock = clock
        self.send_timeout_s = send_timeout_s
        self._on_first_audio = on_first_audio
        self._on_response_end = on_response_end
        self.control: asyncio.Queue[str] = asyncio.Queue(CONTROL_EVENTS)
        # (response id, transcript text, pcm), or (response id, event JSON, START) to open one
        self.audio: asyncio.Queue[tuple[str, str, bytes | None]] = asyncio.Queue(AUDIO_ITEMS)
        self.open_response: str | None = None
        self.sent_ms = 0.0  # audio sent for the response in progress
        self.audio_seconds = 0.0  # all examiner audio sent on this connection
        self._play_until = 0.0
        self._cancelled: set[str] = set()

    @property
    def playing_until(self) -> float:
        """When the client will have played everything sent so far (clock time)."""
        return self._play_until

    def emit(self, event: p.WireEvent) -> None:
        try:
            self.control.put_nowait(p.dump(event))
        except asyncio.QueueFull:
            raise SlowConsumer(f"{CONTROL_EVENTS} events unread") from None

    async def start_response(self, response_id: str, events: list[p.WireEvent]) -> None:
        for event in events:
            await self.audio.put((response_id, p.dump(event), None))

    async def put_audio(self, response_id: str, text: str, pcm: bytes) -> None:
        await self.audio.put((response_id, text, pcm))

    async def end_response(self, response_id: str) -> None:
        await self.audio.put((response_id, "", b""))

    def cancel(self) -> tuple[str | None, int]:
        """Send nothing more of anything queued (barge-in): returns the response the client was
        hearing, if any, and the ms of its audio already sent."""
        cut: set[str] = set()
        while not self.audio.empty():
            cut.add(self.audio.get_nowait()[0])
            self.audio.task_done()
        heard, self.open_response = self.open_response, None
        self._cancelled = {*cut, *([heard] if heard else []), *list(self._cancelled)[:16]}
        sent, self.sent_ms = self.sent_ms, 0.0
        self._play_until = self.clock()  # the client drops what it had buffered
        return heard, int(sent)

    @property
    def busy(self) -> bool:
        """A response is being heard or is queued."""
        return self.open_response is not None or not self.audio.empty()

    async def drained(self) -> None:
        await self.audio.join()
        await self.control.join()

    async def run(self) -> None:
        while True:
            await self._drain_control()
            try:
                async with asyncio.timeout(0.02):
                    rid, text, pcm = await self.audio.get()
            except TimeoutError:
                continue
            try:
                await self._send_audio(rid, text, pcm)
            finally:
                self.audio.task_done()

    async def _send(self, data: str | bytes) -> None:
        try:
            async with asyncio.timeout(self.send_timeout_s):
                if isinstance(data, str):
                    await self.ws.send_str(data)
                else:
                    await self.ws.send_bytes(data)
        except TimeoutError:
            raise SlowConsumer(f"nothing accepted for {self.send_timeout_s:g} s") from None

    async def _drain_control(self) -> None:
        while not self.control.empty():
            await self._send(self.control.get_nowait())
            self.control.task_done()

    async def _send_audio(self, rid: str, text: str, pcm: bytes | None) -> None:
        if rid in self._cancelled:
            return
        if pcm is None:  # a response opens
            self.open_response = rid
            await self._drain_control()
            await self._send(text)
            return
        if not pcm:
            if not text:
                self.open_response = None
                self._on_response_end(rid, int(self.sent_ms))
                self.sent_ms = 0.0
                return
            self.emit(p.ResponseTranscriptDeltaEvent(response_id=rid, delta=text))
            return
        if text:
            self.emit(p.ResponseTranscriptDeltaEvent(response_id=rid, delta=text))
        step = 2 * max(1, int(self.sample_rate * FRAME_S))
        for start in range(0, len(pcm), step):
            await self._drain_control()
            ahead = self._play_until - self.clock() - PLAYBACK_LEAD_S
            if ahead > 0:
                await asyncio.sleep(ahead)
                await self._drain_control()  # a cancel that came up while waiting goes first
            if rid in self._cancelled:
                return
            if self.sent_ms == 0:
                self._on_first_audio(rid)
            frame = pcm[start : start + step]
            await self._send(frame)
            if rid in self._cancelled:  # cancelled while this frame was going out
                return
            seconds = len(frame) / 2 / self.sample_rate
            self._play_until = max(self._play_until, self.clock()) + seconds
            self.sent_ms += seconds * 1000
            self.audio_seconds += seconds
