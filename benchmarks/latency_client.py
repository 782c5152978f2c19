"""The simulated student of benchmarks/latency.py, and the pure parts its figures come from.

Pure: percentiles, the overhead of a turn, the voiced span of a clip, answer-length buckets, the
clip order (lengths interleaved), and `TurnTracker`, which turns the server's events (with the
client's receive times) into one `TurnRecord` per answer.
I/O: `Mic` streams 32 ms frames at real-time pace against absolute deadlines on the loop clock,
`run_student` creates a session over HTTP and holds one viva over the WebSocket, and `LoopLag`
samples this process's own event-loop lag so a saturated client shows in the results.
"""

from __future__ import annotations

import asyncio
import json
import math
import wave
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import numpy as np

SAMPLE_RATE = 16_000  # the protocol's input format: PCM16LE mono 16 kHz
FRAME_SAMPLES = 512  # 32 ms per frame, the server's VAD chunk
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
SILENCE = bytes(2 * FRAME_SAMPLES)
VOICE_WINDOW = 160  # 10 ms windows for finding the last voiced sample
VOICE_DBFS = -40.0  # RMS above this is voice (the fake VAD's own threshold)
# Responses the student answers once they finish; a follow-up or a repeat is a question too.
ASKS = frozenset({"question", "followup", "repeat"})
CLIPS_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "clips"
# Answer-length buckets (voiced seconds): turn latency must not grow with the answer.
LENGTH_BUCKETS = ((5.0, "<5s"), (10.0, "5-10s"), (20.0, "10-20s"))


# --- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation between ranks (numpy's default)."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def quantiles(values: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, Any]:
    """{"p50": .., "p95": .., "p99": ..} rounded to 0.1 ms; None where there are no values."""
    out: dict[str, Any] = {}
    for q in qs:
        value = percentile(values, q)
        out[f"p{q}"] = None if value is None else round(value, 1)
    return out


def overhead_ms(latency_ms: float | None, stages_ms: Mapping[str, float]) -> float | None:
    """Turn latency less the model time the student waited for (`critical_path_models`): what
    the server itself added. None when either figure is missing."""
    models = stages_ms.get("critical_path_models")
    if latency_ms is None or models is None:
        return None
    return latency_ms - models


def length_bucket(seconds: float) -> str:
    """The answer-length bucket of a voiced length: "<5s", "5-10s", "10-20s" or ">=20s"."""
    for upper, name in LENGTH_BUCKETS:
        if seconds < upper:
            return name
    return ">=20s"


def by_length(pairs: Sequence[tuple[float, float]]) -> dict[str, dict[str, Any]]:
    """{bucket: {"p50", "p95", "n"}} of (answer seconds, value) pairs; the three main buckets
    always (p50/p95 None when empty), ">=20s" only when an answer was that long."""
    groups: dict[str, list[float]] = {name: [] for _upper, name in LENGTH_BUCKETS}
    for seconds, value in pairs:
        groups.setdefault(length_bucket(seconds), []).append(value)
    return {name: {**quantiles(v, (50, 95)), "n": len(v)} for name, v in groups.items()}


# --- clips -----------------------------------------------------------------------------------


def voiced_span(samples: np.ndarray, window: int = VOICE_WINDOW) -> tuple[int, int] | None:
    """(first voiced sample, one past the last voiced sample) of PCM16 audio, from the RMS of
    `window`-sample windows against VOICE_DBFS; None when nothing is voiced."""
    n = len(samples) // window
    if n == 0:
        return None
    frames = samples[: n * window].astype(np.float64).reshape(n, window) / 32768.0
    rms = np.sqrt(np.mean(np.square(frames), axis=1)) + 1e-12
    voiced = np.nonzero(20 * np.log10(rms) > VOICE_DBFS)[0]
    if len(voiced) == 0:
        return None
    return int(voiced[0]) * window, (int(voiced[-1]) + 1) * window


@dataclass(frozen=True)
class Clip:
    name: str
    pcm: bytes  # PCM16LE 16 kHz, padded with silence to whole frames
    voiced_start: int  # first voiced sample
    voiced_end: int  # one past the last voiced sample

    @property
    def frames(self) -> int:
        return len(self.pcm) // len(SILENCE)

    @property
    def last_voiced_frame(self) -> int:
        """Index of the frame that carries the last voiced sample."""
        return (self.voiced_end - 1) // FRAME_SAMPLES

    @property
    def voiced_s(self) -> float:
        return (self.voiced_end - self.voiced_start) / SAMPLE_RATE


def load_clips(directory: Path = CLIPS_DIR) -> list[Clip]:
    """The speech clips of clips.json, with their voiced spans computed once."""
    out = []
    for entry in json.loads((directory / "clips.json").read_text()):
        if entry["kind"] != "speech":
            continue
        with wave.open(str(directory / entry["file"])) as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (SAMPLE_RATE, 1, 2):
                raise ValueError(f"{entry['file']}: not PCM16 mono {SAMPLE_RATE} Hz")
            pcm = w.readframes(w.getnframes())
        span = voiced_span(np.frombuffer(pcm, dtype="<i2"))
        if span is None:
            continue
        pcm += bytes(-len(pcm) % len(SILENCE))
        out.append(Clip(entry["name"], pcm, *span))
    return out


def interleave_by_length(clips: Sequence[Clip]) -> list[Clip]:
    """The clips with their length buckets taken in turn (short, medium, long, short, ...), so a
    run of a few turns already has answers of every length."""
    groups: dict[str, list[Clip]] = {}
    for clip in clips:
        groups.setdefault(length_bucket(clip.voiced_s), []).append(clip)
    queues = [groups[name] for _u, name in (*LENGTH_BUCKETS, (0, ">=20s")) if name in groups]
    out: list[Clip] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


# --- turns from events -----------------------------------------------------------------------


@dataclass
class TurnRecord:
    session: int
    turn: int  # 1-based within the session
    reply_kind: str  # kind of the first response after the answer
    latency_ms: float | None  # the server's turn latency (response.done.latency_ms)
    v2v_ms: float | None  # last voiced sample sent -> first reply audio received
    stages_ms: dict[str, float] = field(default_factory=dict)
    answer_s: float | None = None  # voiced length of the clip answered

    @property
    def overhead_ms(self) -> float | None:
        return overhead_ms(self.latency_ms, self.stages_ms)


Action = Literal["answer", "end"]


class TurnTracker:
    """One student's view of the viva: when to answer, and what each answer's reply measured.

    `feed` takes each server event (a parsed JSON dict) with its receive time and says when to
    start an answer ("answer") or when every turn is done ("end"); `audio` marks examiner audio
    frames, `voiced_end_sent` the moment the answer's last voiced sample went out.
    """

    def __init__(self, session: int, turns: int):
        self.session = session
        self.turns = turns
        self.phase: Literal["listening", "answering", "done"] = "listening"
        self.kinds: dict[str, str] = {}  # response_id -> kind, from response.created
        self.records: list[TurnRecord] = []
        self.errors: Counter[str] = Counter()
        self.ended: str | None = None  # session.ended's reason, once it came
        self._voiced_end_at: float | None = None
        self._reply: str | None = None
        self._first_audio_at: float | None = None
        self._answer_s: float | None = None

    def feed(self, event: Mapping[str, Any], now: float) -> Action | None:
        kind = event.get("type")
        if kind == "response.created":
            rid = str(event.get("response_id"))
            self.kinds[rid] = str(event.get("kind"))
            if self.phase == "answering" and self._reply is None:
                self._reply = rid
        elif kind == "response.done":
            return self._done(event)
        elif kind == "response.cancelled":
            if event.get("response_id") == self._reply or self.phase == "listening":
                self.errors[f"cancelled:{event.get('reason')}"] += 1
            if self.phase == "answering" and event.get("response_id") == self._reply:
                # A reply begun in a pause and taken back when the student went on: the answer's
                # reply is the next one.
                self._reply = self._first_audio_at = None
        elif kind == "error":
            self.errors[f"error:{event.get('code')}"] += 1
        elif kind == "session.ended":
            self.ended = str(event.get("reason"))
            if self.phase != "done":
                self.errors[f"ended_early:{self.ended}"] += 1
                self.phase = "done"
        return None

    def _done(self, event: Mapping[str, Any]) -> Action | None:
        rid = str(event.get("response_id"))
        if self.phase == "answering" and rid == self._reply:
            self._record(rid, event)
            if len(self.records) >= self.turns:
                self.phase = "done"
                return "end"
            self.phase = "listening"
        if self.phase == "listening" and self.kinds.get(rid) in ASKS:
            self.phase = "answering"
            self._voiced_end_at = self._reply = self._first_audio_at = self._answer_s = None
            return "answer"
        return None

    def _record(self, rid: str, event: Mapping[str, Any]) -> None:
        v2v = None
        start, first = self._voiced_end_at, self._first_audio_at
        if first is None:
            self.errors["silent_reply"] += 1
        elif start is None or first < start:  # the server cut the answer short
            self.errors["reply_before_end_of_speech"] += 1
        else:
            v2v = (first - start) * 1000
        latency = event.get("latency_ms")
        raw_stages = event.get("stages_ms")
        stages = {
            str(k): float(v)
            for k, v in (raw_stages.items() if isinstance(raw_stages, Mapping) else ())
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.records.append(
            TurnRecord(
                self.session,
                len(self.records) + 1,
                self.kinds.get(rid, "?"),
                float(latency) if isinstance(latency, int | float) else None,
                v2v,
                stages,
                self._answer_s,
            )
        )

    def audio(self, now: float) -> None:
        if self.phase == "answering" and self._reply is not None and self._first_audio_at is None:
            self._first_audio_at = now

    def playing(self, voiced_s: float) -> None:
        """The answer being streamed is this long (voiced seconds)."""
        self._answer_s = voiced_s

    def voiced_end_sent(self, at: float) -> None:
        if self.phase == "answering" and self._voiced_end_at is None:
            self._voiced_end_at = at


# --- I/O -------------------------------------------------------------------------------------


class LoopLag:
    """Event-loop lag of this process: how late a 10 ms sleep wakes up, in ms."""

    def __init__(self, interval_s: float = 0.01):
        self.interval_s = interval_s
        self.samples: list[float] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval_s)
            self.samples.append(max(0.0, (loop.time() - start - self.interval_s) * 1000))


class Mic:
    """Streams silence, or a clip when told to, in 32 ms frames paced against absolute
    deadlines (so a late wake-up does not shift every later frame)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, tracker: TurnTracker):
        self.ws = ws
        self.tracker = tracker
        self.max_late_ms = 0.0
        self._clip: Clip | None = None
        self._pos = 0

    def play(self, clip: Clip) -> None:
        self._clip, self._pos = clip, 0

    @property
    def busy(self) -> bool:
        """A clip is still being streamed."""
        return self._clip is not None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start, k = loop.time(), 0
        try:
            while not self.ws.closed:
                late = loop.time() - (start + k * FRAME_S)
                if late < 0:
                    await asyncio.sleep(-late)
                else:
                    self.max_late_ms = max(self.max_late_ms, late * 1000)
                clip, pos = self._clip, self._pos
                if clip is None:
                    await self.ws.send_bytes(SILENCE)
                else:
                    await self.ws.send_bytes(
                        clip.pcm[pos * len(SILENCE) : (pos + 1) * len(SILENCE)]
                    )
                    if pos == clip.last_voiced_frame:
                        self.tracker.voiced_end_sent(loop.time())
                    self._pos += 1
                    if self._pos >= clip.frames:
                        self._clip = None
                k += 1
        except ConnectionError:
            return  # the server closed the socket; the receiving side reports why


@dataclass
class StudentConfig:
    http: aiohttp.ClientSession
    base_url: str
    api_key: str
    clips: list[Clip]
    turns: int
    turn_timeout_s: float
    college_type: str
    scenario_id: str
    run_tag: str


@dataclass
class StudentResult:
    index: int
    records: list[TurnRecord] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    finished: bool = False
    max_late_ms: float = 0.0


class StudentFailed(Exception):
    """The session could not go on; the message is the error type that is counted."""


async def run_student(cfg: StudentConfig, index: int, delay_s: float, out: StudentResult) -> None:
    """One student: create a session, hold the viva for `cfg.turns` answers, end it."""
    await asyncio.sleep(delay_s)
    try:
        url = await _create_session(cfg, index)
        async with cfg.http.ws_connect(url, autoping=True) as ws:
            await _converse(cfg, ws, index, out)
    except StudentFailed as exc:
        out.errors[str(exc)] += 1
    except (aiohttp.ClientError, ConnectionError, json.JSONDecodeError) as exc:
        out.errors[f"client:{type(exc).__name__}"] += 1


async def _create_session(cfg: StudentConfig, index: int) -> str:
    body = {
        "student_id": f"bench-{cfg.run_tag}-{index:04d}",
        "full_name": f"Bench Student {index}",
        "college_type": cfg.college_type,
        "scenario_id": cfg.scenario_id,
    }
    headers = {"Authorization": f"Bearer {cfg.api_key}"}
    async with cfg.http.post(f"{cfg.base_url}/v1/sessions", json=body, headers=headers) as resp:
        text = await resp.text()
    try:
        data = json.loads(text)
    except ValueError:
        data = None  # e.g. a bare 500 page
    if resp.status != 201 or not isinstance(data, dict) or "ws_url" not in data:
        error = data.get("error") if isinstance(data, dict) else None
        code = error.get("code", "?") if isinstance(error, dict) else "?"
        raise StudentFailed(f"http_{resp.status}:{code}")
    return str(data["ws_url"])


async def _converse(
    cfg: StudentConfig, ws: aiohttp.ClientWebSocketResponse, index: int, out: StudentResult
) -> None:
    tracker = TurnTracker(index, cfg.turns)
    out.records, out.errors = tracker.records, tracker.errors  # partial results survive a cancel
    hello = await ws.receive(timeout=cfg.turn_timeout_s)
    event = json.loads(hello.data) if hello.type == aiohttp.WSMsgType.TEXT else {}
    if event.get("type") != "session.created":
        tracker.feed(event, 0.0)
        raise StudentFailed(f"refused:{event.get('code', hello.type.name)}")
    min_answer_s = float(event.get("turn_detection", {}).get("min_answer_seconds", 0))
    clips = [c for c in cfg.clips if c.voiced_s >= min_answer_s + 0.3] or cfg.clips
    mic = Mic(ws, tracker)
    # A plain task, cancelled and awaited below: a TaskGroup would wrap StudentFailed in a group.
    mic_task = asyncio.create_task(mic.run(), name=f"mic-{index}")
    try:
        await _listen(cfg, ws, tracker, mic, clips, index)
        out.finished = tracker.phase == "done" and len(tracker.records) >= cfg.turns
    finally:
        mic_task.cancel()
        await asyncio.wait([mic_task])
        out.max_late_ms = mic.max_late_ms
        if not mic_task.cancelled() and (exc := mic_task.exception()) is not None:
            out.errors[f"mic:{type(exc).__name__}"] += 1


async def _listen(
    cfg: StudentConfig,
    ws: aiohttp.ClientWebSocketResponse,
    tracker: TurnTracker,
    mic: Mic,
    clips: list[Clip],
    index: int,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.turn_timeout_s
    while True:
        try:
            msg = await ws.receive(timeout=max(0.001, deadline - loop.time()))
        except TimeoutError:
            raise StudentFailed(f"timeout:{tracker.phase}") from None
        now = loop.time()
        if msg.type == aiohttp.WSMsgType.BINARY:
            tracker.audio(now)
        elif msg.type == aiohttp.WSMsgType.TEXT:
            action = tracker.feed(json.loads(msg.data), now)
            if action == "answer":
                clip = clips[(index + len(tracker.records)) % len(clips)]
                tracker.playing(clip.voiced_s)
                mic.play(clip)
                deadline = now + cfg.turn_timeout_s
            elif action == "end":
                await ws.send_str(json.dumps({"type": "session.end"}))
                deadline = now + cfg.turn_timeout_s
        else:  # closing or closed
            if tracker.phase != "done":
                raise StudentFailed(f"closed_early:{ws.close_code}")
            return
