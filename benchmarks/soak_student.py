"""One simulated student of benchmarks/soak.py: holds viva after viva on one slot, answering every
question at real-time pace with the committed clips, and misbehaves when the fault scheduler
tells it to (drop the link mid-answer and come back, stop reading, send bad frames, talk over
the examiner, leave for good). Everything it is told lands in its `SessionLog`s.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlparse

import aiohttp

from benchmarks.latency_client import (
    ASKS,
    Clip,
    Mic,
    StudentConfig,
    StudentFailed,
    TurnTracker,
    _create_session,
)
from benchmarks.soak_accounting import SessionLog

CLIENT_FAULTS = ("disconnect", "stop_reading", "malformed", "barge_in", "abandon")
# Error codes the faults provoke on purpose: counted apart from the unexpected ones.
PROVOKED = frozenset({"invalid_json", "unknown_event", "audio_format", "frame_too_large"})
IDLE_LIMIT_S = 60.0  # no message for this long is a stalled session
# Responses a student answers once they finish: questions, and a nudge to say something.
ANSWER_AFTER = ASKS | {"nudge"}
# Too many to keep in a session's trail.
QUIET = frozenset({"response.audio_transcript.delta"})


@dataclass
class Shared:
    """What every student of one run shares: the connection, the clock and the tallies."""

    cfg: StudentConfig
    t0: float
    send_timeout_s: float
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    sessions: list[SessionLog] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (s since t0, ms)
    errors: Counter[str] = field(default_factory=Counter)  # unexpected
    provoked: Counter[str] = field(default_factory=Counter)  # what the faults were meant to cause
    faults: Counter[str] = field(default_factory=Counter)
    restarts_s: list[float] = field(default_factory=list)  # when PostgreSQL went down
    resumed: int = 0
    workers: list[str] = field(default_factory=list)  # base URLs; more than one: pick at random

    def at_random_worker(self, url: str) -> str:
        """`url` (http(s) or ws(s)) on a random worker, when there are several."""
        if len(self.workers) < 2:
            return url
        parts = urlparse(url)
        host = urlparse(random.choice(self.workers)).netloc
        return parts._replace(netloc=host).geturl()


class Student:
    def __init__(self, shared: Shared, slot: int):
        self.sh, self.slot = shared, slot
        self.pending: str | None = None  # a fault the scheduler asked for
        self._n = 0
        self._answers = 0  # clips played, so a lost or ignored answer moves on to the next clip
        self._clips = shared.cfg.clips

    async def run(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        while not self.sh.stop.is_set():
            try:
                cfg = self.sh.cfg
                if len(self.sh.workers) > 1:
                    cfg = replace(cfg, base_url=random.choice(self.sh.workers))
                url = await _create_session(cfg, self.slot * 10_000 + self._n)
            except StudentFailed as exc:
                self.sh.errors[f"create:{exc}"] += 1
                await asyncio.sleep(2)
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.sh.errors[f"create:{type(exc).__name__}"] += 1
                await asyncio.sleep(2)
                continue
            self._n += 1
            log = SessionLog(urlparse(url).path.split("/")[3])
            self.sh.sessions.append(log)
            await self._session(url, log)

    async def _session(self, url: str, log: SessionLog) -> None:
        """Connect, and reconnect with the same token after every drop, until the viva ends
        (with several workers, each attempt at a random one: more attempts, as a worker that is
        not the session's owner refuses it)."""
        for attempt in range(8 if len(self.sh.workers) < 2 else 40):
            try:
                outcome = await self._connect(url, log, attempt > 0)
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                self._problem(log, f"client:{type(exc).__name__}")
                outcome = "dropped"
            if outcome != "dropped":
                return
            # Several workers: soon, at another one (the owner keeps it only for the grace period).
            pause = (0.5, 2.0) if len(self.sh.workers) < 2 else (0.1, 0.4)
            await asyncio.sleep(random.uniform(*pause))
        self._problem(log, "gave_up_reconnecting")

    async def _connect(self, url: str, log: SessionLog, again: bool) -> str:
        if again:
            url = self.sh.at_random_worker(url)
        async with self.sh.cfg.http.ws_connect(url, autoping=True) as ws:
            hello = await ws.receive(timeout=30)
            event = json.loads(hello.data) if hello.type == aiohttp.WSMsgType.TEXT else {}
            if event.get("type") != "session.created":
                code = event.get("code", hello.type.name)
                if code == "session_busy" and again:  # the old link is not seen gone yet
                    self.sh.provoked["session_busy_on_reconnect"] += 1
                    return "dropped"
                if code == "session_elsewhere" and again:  # another worker owns it: try again
                    self.sh.provoked["session_elsewhere_on_reconnect"] += 1
                    return "dropped"
                if code == "session_closed" and again:
                    # Dropped after the last answer (the exam completes without the student) or
                    # away past the grace period: the end-of-run check still wants its result.
                    self.sh.provoked["ended_while_away"] += 1
                    self._mark(log, "refused: ended while away")
                    log.ended_reason = "closed_while_away"  # so its result is checked
                    return "refused"
                self._problem(log, f"refused:{code}")
                return "refused"
            log.connected = True
            # Only clips the examiner takes as answers: a shorter one is ignored as a stray word,
            # and a student who then waits in silence only hears a nudge 15 s later.
            min_s = float(event.get("turn_detection", {}).get("min_answer_seconds", 0))
            self._clips = [c for c in self.sh.cfg.clips if c.voiced_s >= min_s + 0.3]
            self._clips = self._clips or self.sh.cfg.clips
            if again:
                if event.get("resumed") is True:
                    self.sh.resumed += 1
                else:
                    self._problem(log, "reconnect_not_resumed")
            mic = Mic(ws, TurnTracker(self.slot, 1))
            mic_task = asyncio.create_task(mic.run(), name=f"mic-{self.slot}")
            try:
                return await self._listen(ws, mic, log)
            finally:
                mic_task.cancel()
                await asyncio.wait([mic_task])

    async def _listen(self, ws: aiohttp.ClientWebSocketResponse, mic: Mic, log: SessionLog) -> str:
        loop = asyncio.get_running_loop()
        kinds: dict[str, str] = {}
        speaking: str | None = None  # kind of the examiner's open response
        ending = False
        drop_at: float | None = None
        owed = False  # asked while the mic was still busy: answer as soon as it is free
        last_msg = loop.time()
        while True:
            if self.sh.stop.is_set() and not ending and not ws.closed:
                self._mark(log, "send session.end")
                ending = True  # the run is over: end the viva the polite way
                await ws.send_str(json.dumps({"type": "session.end"}))
            try:
                msg = await ws.receive(timeout=0.25)
            except TimeoutError:
                if loop.time() - last_msg > IDLE_LIMIT_S:
                    self._problem(log, "stalled")
                    return "dropped"
                if owed and not mic.busy and not ending:
                    owed = False
                    mic.play(self._clip(log))
                continue
            now = loop.time()
            last_msg = now
            if msg.type == aiohttp.WSMsgType.TEXT:
                ev = json.loads(msg.data)
                kind = ev.get("type")
                if kind == "response.created":
                    kinds[str(ev.get("response_id"))] = speaking = str(ev.get("kind"))
                elif kind in ("response.done", "response.cancelled"):
                    speaking = None
                    if isinstance(lat := ev.get("latency_ms"), int | float):
                        self.sh.latencies.append((time.monotonic() - self.sh.t0, float(lat)))
                    rid = str(ev.get("response_id"))
                    if kind == "response.done" and kinds.get(rid) in ANSWER_AFTER:
                        owed = True
                self._note(ev, log)
            if owed and not mic.busy and not ending:
                owed = False
                mic.play(self._clip(log))
                if self.pending == "disconnect":
                    drop_at = now + random.uniform(0.8, 1.5)
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):  # closed
                if log.ended_reason is not None:
                    return "ended"
                self._problem(log, f"closed:{ws.close_code}")
                return "dropped"
            if (
                msg.type == aiohttp.WSMsgType.BINARY
                and self.pending == "barge_in"
                and speaking == "question"
                and not mic.busy
            ):
                self.pending = None
                self._fault(log, "barge_in")
                mic.play(self._clip(log))
            if ending or self.pending is None:
                continue
            if drop_at is not None and now >= drop_at and mic.busy:
                self.pending = drop_at = None
                self._fault(log, "disconnect")
                await self._abort(ws)
                return "dropped"
            if self.pending == "abandon":
                self.pending = None
                self._fault(log, "abandon")
                log.abandoned = True
                await self._abort(ws)
                return "abandoned"
            if self.pending == "malformed":
                self.pending = None
                await self._malformed(ws, log)
            if self.pending == "stop_reading":
                self.pending = None
                outcome = await self._stop_reading(ws, log)
                if outcome is not None:
                    return outcome

    def _clip(self, log: SessionLog) -> Clip:
        self._answers += 1
        clip = self._clips[(self.slot + self._answers) % len(self._clips)]
        self._mark(log, f"answer {clip.name}")
        return clip

    def _mark(self, log: SessionLog, what: str) -> None:
        log.trail.append(f"{time.monotonic() - self.sh.t0:.1f} {what}")

    def _fault(self, log: SessionLog, kind: str) -> None:
        self.sh.faults[kind] += 1
        self._mark(log, f"* {kind}")

    def _problem(self, log: SessionLog, error: str) -> None:
        self.sh.errors[error] += 1
        log.problem = log.problem or error
        self._mark(log, f"! {error}")

    def _note(self, ev: dict[str, Any], log: SessionLog) -> None:
        kind = ev.get("type")
        if kind not in QUIET:
            detail = ev.get("kind") or ev.get("code") or ev.get("reason") or ev.get("number") or ""
            self._mark(log, f"{kind} {detail}".rstrip())
        if kind == "conversation.item.input_audio_transcription.completed":
            log.transcripts.append((int(ev["question_number"]), str(ev["transcript"])))
        elif kind == "exam.completed":
            log.completed_status = str(ev.get("status"))
        elif kind == "session.ended":
            log.ended_reason = str(ev.get("reason"))
        elif kind == "error":
            code = str(ev.get("code"))
            if code in PROVOKED:
                self.sh.provoked[code] += 1
            else:
                self._problem(log, f"error:{code}")

    @staticmethod
    async def _abort(ws: aiohttp.ClientWebSocketResponse) -> None:
        """Drop the link without a close frame, as a lost network would."""
        transport = ws._conn.transport if ws._conn is not None else None
        if transport is not None:
            transport.abort()
        await asyncio.sleep(0)

    async def _malformed(self, ws: aiohttp.ClientWebSocketResponse, log: SessionLog) -> None:
        self._fault(log, "malformed")
        await ws.send_str("{not json")
        await ws.send_str(json.dumps({"type": "response.create", "event_id": "soak"}))
        await ws.send_bytes(b"\x01\x02\x03")  # odd length
        await ws.send_bytes(bytes(40_000))  # over MAX_AUDIO_FRAME_BYTES

    async def _stop_reading(
        self, ws: aiohttp.ClientWebSocketResponse, log: SessionLog
    ) -> str | None:
        """Stop reading for longer than the send timeout while asking for audio, then read again:
        the server should have dropped the connection (1006: no close frame can get through to
        a client that is not reading); reconnect after it."""
        transport = ws._conn.transport if ws._conn is not None else None
        if transport is None:
            return None
        self._fault(log, "stop_reading")
        transport.pause_reading()
        try:
            for _ in range(int(self.sh.send_timeout_s * 3) + 20):
                await ws.send_str(json.dumps({"type": "exam.repeat"}))
                await asyncio.sleep(1.0)
        except ConnectionError:
            pass
        finally:
            transport.resume_reading()
        while True:
            try:
                msg = await ws.receive(timeout=10)
            except TimeoutError:
                self._problem(log, "stop_reading_not_disconnected")
                return None
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._note(json.loads(msg.data), log)
            elif msg.type != aiohttp.WSMsgType.BINARY:
                if log.ended_reason is not None:
                    return "ended"
                if ws.close_code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE:
                    self.sh.provoked["dropped_slow_consumer"] += 1
                else:
                    self._problem(log, f"stop_reading_closed:{ws.close_code}")
                return "dropped"
