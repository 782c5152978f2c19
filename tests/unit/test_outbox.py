"""The outbox on a stand-in socket: order, pacing, cancels and the slow-reader bound."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from worker import protocol as p
from worker.voice.outbox import Outbox, SlowConsumer


class Socket:
    """Records what was sent; `stalled` makes every send hang, like a client that stopped
    reading once the TCP buffers are full."""

    def __init__(self, stalled: bool = False):
        self.sent: list[Any] = []
        self.stalled = stalled

    async def send_str(self, data: str) -> None:
        await self._maybe_stall()
        self.sent.append(json.loads(data))

    async def send_bytes(self, data: bytes) -> None:
        await self._maybe_stall()
        self.sent.append(len(data))

    async def _maybe_stall(self) -> None:
        if self.stalled:
            await asyncio.Event().wait()


def outbox(ws: Socket, **kw: Any) -> tuple[Outbox, list[str], list[tuple[str, int]]]:
    starts: list[str] = []
    ends: list[tuple[str, int]] = []
    box = Outbox(
        ws,  # type: ignore[arg-type]
        1000,  # 1 kHz: 100 samples per 100 ms frame, easy to count
        asyncio.get_running_loop().time,
        kw.get("send_timeout_s", 5.0),
        starts.append,
        lambda rid, ms: ends.append((rid, ms)),
    )
    return box, starts, ends


async def test_responses_open_in_band_and_audio_goes_out_in_frames() -> None:
    ws = Socket()
    box, starts, ends = outbox(ws)
    runner = asyncio.ensure_future(box.run())
    await box.start_response("r1", [p.ResponseCreatedEvent(response_id="r1", kind="greeting")])
    await box.put_audio("r1", "Hello.", bytes(2 * 300))  # 300 ms -> three 100 ms frames
    await box.end_response("r1")
    await box.start_response("r2", [p.ResponseCreatedEvent(response_id="r2", kind="question")])
    await box.end_response("r2")
    await asyncio.wait_for(box.drained(), 5)
    runner.cancel()
    kinds = [s["type"] if isinstance(s, dict) else s for s in ws.sent]
    assert kinds == [
        "response.created",
        "response.audio_transcript.delta",
        200,
        200,
        200,
        "response.created",  # only after r1's audio: one response open at a time
    ]
    assert starts == ["r1"] and ends == [("r1", 300), ("r2", 0)]


async def test_cancel_drops_queued_audio_and_reports_what_was_heard() -> None:
    ws = Socket()
    box, _, ends = outbox(ws)
    runner = asyncio.ensure_future(box.run())
    await box.start_response("r1", [p.ResponseCreatedEvent(response_id="r1", kind="question")])
    await box.put_audio("r1", "", bytes(2 * 2000))  # 2 s: paced, most of it still to go
    await box.start_response("r2", [p.ResponseCreatedEvent(response_id="r2", kind="question")])
    await asyncio.sleep(0.5)
    heard, audio_ms = box.cancel()
    sent_at_cancel = len(ws.sent)
    await asyncio.sleep(0.3)
    runner.cancel()
    assert heard == "r1" and 100 <= audio_ms < 2000
    assert len(ws.sent) <= sent_at_cancel + 1  # at most the frame that was going out
    assert not any(isinstance(s, dict) and s.get("response_id") == "r2" for s in ws.sent)
    assert ends == [] and not box.busy


async def test_a_client_that_stops_reading_is_cut_off() -> None:
    box, _, _ = outbox(Socket(stalled=True), send_timeout_s=0.2)
    box.emit(p.PongEvent())
    with pytest.raises(SlowConsumer):
        await asyncio.wait_for(box.run(), 5)


async def test_too_many_unread_events_is_a_slow_consumer() -> None:
    box, _, _ = outbox(Socket(stalled=True))
    with pytest.raises(SlowConsumer):
        for _ in range(10_000):
            box.emit(p.PongEvent())
