"""The model hub: builds what config selects once per process, warms each model with one real
inference, reports readiness and per-model info, and closes them in reverse order.

Blocking models run in their own executors (inside each backend); the hub itself only awaits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.config import ModelsConfig, SchedulingConfig
from models.base import (
    ASR,
    LLM,
    SAMPLE_RATE,
    TTS,
    VAD,
    VAD_CHUNK,
    EndOfTurn,
    ModelInfo,
    Sampling,
)
from models.scheduled import ScheduledASR, ScheduledLLM, ScheduledTTS, observe_wait
from models.scheduler import Scheduler

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    info: ModelInfo
    load_s: float
    warmup_s: float


@dataclass
class Hub:
    vad: VAD
    asr: ASR
    llm: LLM
    tts: TTS
    eot: EndOfTurn
    reports: dict[str, LoadReport] = field(default_factory=dict)
    ready: bool = False
    schedulers: dict[str, Scheduler] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "models": {
                stage: {
                    **asdict(r.info),
                    "load_s": round(r.load_s, 3),
                    "warmup_s": round(r.warmup_s, 3),
                }
                for stage, r in self.reports.items()
            },
        }

    async def close(self) -> None:
        self.ready = False
        _close_all([self.eot, self.tts, self.llm, self.asr, self.vad])


def _close_all(models: list[Any]) -> None:
    """Close in the order given; fakes and the VAD have nothing to close."""
    for model in models:
        close = getattr(model, "close", None)
        if close is not None:
            close()


def _build_vad(cfg: ModelsConfig) -> VAD:
    if cfg.vad.backend == "fake":
        from models.fakes import FakeVAD

        return FakeVAD()
    from models.silero import SileroVAD

    return SileroVAD(batch_ms=cfg.vad.batch_ms)


def _build_asr(cfg: ModelsConfig) -> ASR:
    if cfg.asr.backend == "fake":
        from models.fakes import FakeASR

        return FakeASR(delay_ms=cfg.asr.fake_delay_ms)
    if cfg.asr.backend == "gpu_sim":
        from models.gpu_sim import SimASR

        return SimASR(cfg.gpu_sim)
    from models.weights import asr_dir
    from models.whisper import WhisperASR

    return WhisperASR(
        asr_dir(cfg),
        cfg.asr.device,
        cfg.asr.compute_type,
        cfg.asr.beam_size,
        workers=cfg.asr.workers,
        pad_s=cfg.asr.pad_seconds,
    )


async def _build_llm(cfg: ModelsConfig) -> LLM:
    if cfg.llm.backend == "fake":
        from models.fakes import FakeLLM, rubric_mark

        return FakeLLM(json_result=rubric_mark, first_token_ms=cfg.llm.fake_delay_ms)
    if cfg.llm.backend == "gpu_sim":
        from models.gpu_sim import SimLLM

        return SimLLM(cfg.gpu_sim)
    from models.vllm_llm import VLLMExaminer
    from models.weights import llm_dir

    llm = VLLMExaminer(
        llm_dir(cfg),
        device=cfg.llm.device,
        dtype=cfg.llm.dtype,
        max_model_len=cfg.llm.max_model_len,
        gpu_memory_utilization=cfg.llm.gpu_memory_utilization,
        enforce_eager=cfg.llm.enforce_eager,
    )
    await llm.start()
    return llm


def _build_tts(cfg: ModelsConfig) -> TTS:
    if cfg.tts.backend == "fake":
        from models.fakes import FakeTTS

        return FakeTTS(chars_per_s=cfg.tts.fake_chars_per_s, first_chunk_ms=cfg.tts.fake_delay_ms)
    if cfg.tts.backend == "gpu_sim":
        from models.gpu_sim import SimTTS

        return SimTTS(cfg.gpu_sim)
    from models import weights
    from models.tts import KokoroTTS, PiperTTS

    if cfg.tts.backend == "kokoro":
        model, voices = weights.kokoro_files(cfg)
        return KokoroTTS(model, voices, cfg.tts.kokoro_voice, cfg.tts.device)
    model, config = weights.piper_files(cfg)
    return PiperTTS(model, config, use_cuda=cfg.tts.device == "cuda")


def _build_eot(cfg: ModelsConfig) -> EndOfTurn:
    if cfg.eot.backend == "fake":
        from models.fakes import FakeEOT

        return FakeEOT(delay_ms=cfg.eot.fake_delay_ms)
    from models.smart_turn import SmartTurn
    from models.weights import smart_turn_path

    return SmartTurn(smart_turn_path(), threads=cfg.eot.threads)


async def _warm(hub: Hub) -> dict[str, float]:
    out: dict[str, float] = {}
    t = time.perf_counter()
    hub.vad.stream().probability(np.zeros(VAD_CHUNK, dtype=np.float32))
    out["vad"] = time.perf_counter() - t
    t = time.perf_counter()
    tone = 0.1 * np.sin(np.linspace(0, 440 * 2 * np.pi, SAMPLE_RATE)).astype(np.float32)
    await hub.asr.transcribe(tone)
    out["asr"] = time.perf_counter() - t
    t = time.perf_counter()
    async for _ in hub.llm.stream(
        [{"role": "user", "content": "Say hello."}], Sampling(max_tokens=4)
    ):
        pass
    out["llm"] = time.perf_counter() - t
    t = time.perf_counter()
    async for _ in hub.tts.stream("Hello."):
        pass
    out["tts"] = time.perf_counter() - t
    t = time.perf_counter()
    await hub.eot.probability(tone)
    out["eot"] = time.perf_counter() - t
    return out


def _schedule(hub: Hub, cfg: SchedulingConfig) -> None:
    """Put ASR, TTS and the LLM behind their schedulers (after warm-up: nothing waits yet)."""

    def make(name: str, slots: int, reserved: int = 0) -> Scheduler:
        hub.schedulers[name] = Scheduler(
            name,
            slots,
            policy=cfg.policy,
            max_queue=cfg.max_queue,
            age_after_s=cfg.age_after_s,
            reserved=reserved,
            on_wait=observe_wait,
        )
        return hub.schedulers[name]

    asr = make("asr", cfg.asr_slots, cfg.asr_reserved)
    hub.asr = ScheduledASR(hub.asr, asr, cfg.asr_batch)
    hub.tts = ScheduledTTS(hub.tts, make("tts", cfg.tts_slots))
    hub.llm = ScheduledLLM(hub.llm, make("llm", cfg.llm_slots))


async def load_hub(cfg: ModelsConfig) -> Hub:
    """Build and warm every model; raises WeightsMissing/ModelError on failure, after
    closing whatever it had already built."""
    built: list[Any] = []
    loads: dict[str, float] = {}

    async def timed(stage: str, build: Any) -> Any:
        t = time.perf_counter()
        model = await build() if stage == "llm" else build()
        loads[stage] = time.perf_counter() - t
        built.append(model)
        return model

    try:
        vad = await timed("vad", lambda: _build_vad(cfg))
        asr = await timed("asr", lambda: _build_asr(cfg))
        tts = await timed("tts", lambda: _build_tts(cfg))
        eot = await timed("eot", lambda: _build_eot(cfg))
        llm = await timed("llm", lambda: _build_llm(cfg))
        hub = Hub(vad, asr, llm, tts, eot)
        warm = await _warm(hub)
    except BaseException:
        _close_all(list(reversed(built)))
        raise
    _schedule(hub, cfg.scheduling)
    stages = (("vad", vad), ("asr", asr), ("llm", llm), ("tts", tts), ("eot", eot))
    for stage, model in stages:
        hub.reports[stage] = LoadReport(model.info, loads[stage], warm[stage])
        log.info(
            "model %s %s on %s: load %.2fs, warm-up %.2fs",
            stage,
            model.info.name,
            model.info.device,
            loads[stage],
            warm[stage],
        )
    hub.ready = True
    return hub
