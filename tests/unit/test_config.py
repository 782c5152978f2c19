"""Config loading: profiles, environment overrides, live settings, and errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, load_config, replace_settings
from core.live_settings import LIVE_SETTINGS, apply_settings

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_profile_is_the_default() -> None:
    cfg = load_config(ROOT / "config.yaml", {})
    assert cfg.profile == "cpu"
    assert cfg.database.url.startswith("sqlite+aiosqlite")
    assert cfg.models.asr.device == "cpu" and cfg.models.tts.backend == "piper"


def test_gpu_profile_merges_over_base() -> None:
    cfg = load_config(ROOT / "config.yaml", {"VIVA_PROFILE": "gpu"})
    assert cfg.models.asr.device == "cuda" and cfg.models.asr.compute_type == "float16"
    assert cfg.models.tts.backend == "kokoro"
    assert cfg.exam.total_questions == 12  # untouched base settings survive the merge


def test_environment_overrides() -> None:
    env = {
        "DATABASE_URL": "postgresql+asyncpg://postgres@db:5432/viva",
        "PORT": "9001",
        "VIVA__WRITER__BATCH_MAX_OPS": "512",
        "VIVA__EXAM__SHOW_SCORES": "true",
    }
    cfg = load_config(ROOT / "config.yaml", env)
    assert cfg.database.url == env["DATABASE_URL"]
    assert cfg.server.port == 9001
    assert cfg.writer.batch_max_ops == 512
    assert cfg.exam.show_scores is True


def test_config_is_frozen() -> None:
    cfg = load_config(ROOT / "config.yaml", {})
    with pytest.raises(ValueError):
        cfg.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"DATABASE_URL": "mysql://x@y/z"}, "database.url"),
        ({"DATABASE_URL": "not a url at all"}, "database.url"),
        ({"VIVA__WRITER__BATCH_MAX_OPS": "0"}, "writer.batch_max_ops"),
        ({"VIVA__TURN__VAD_THRESHOLD": "1.5"}, "turn.vad_threshold"),
        ({"VIVA__EXAM__NO_SUCH_KEY": "1"}, "exam.no_such_key"),
        ({"VIVA_PROFILE": "tpu"}, "profile"),
    ],
)
def test_invalid_values_name_the_key(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(ROOT / "config.yaml", env)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, {})


def test_live_settings_override_and_validate() -> None:
    cfg = load_config(ROOT / "config.yaml", {})
    live = apply_settings(cfg, {"vad_sensitivity": 0.7, "llm_temperature": 0.2, "other": 1})
    assert live.turn.vad_threshold == 0.7 and live.models.llm.temperature == 0.2
    with pytest.raises(ConfigError, match=r"configuration\.vad_sensitivity"):
        apply_settings(cfg, {"vad_sensitivity": 3})
    assert set(LIVE_SETTINGS) >= {"voice_threshold", "tts_max_buffer_size", "asr_language"}


def test_the_turn_policy_is_a_live_setting() -> None:
    cfg = load_config(ROOT / "config.yaml", {})
    live = apply_settings(cfg, {"turn_thinking_ms": 2500, "turn_policy": "silence"})
    assert live.turn.thinking_ms == 2500 and live.turn.policy == "silence"
    with pytest.raises(ConfigError, match="turn waits must grow"):
        apply_settings(cfg, {"turn_fast_ms": 5000})  # waits must grow: fast <= ... <= max


def test_replace_settings_validates() -> None:
    cfg = load_config(ROOT / "config.yaml", {})
    assert replace_settings(cfg, {"exam.max_score": 5}).exam.max_score == 5
    with pytest.raises(ConfigError, match=r"exam\.max_score"):
        replace_settings(cfg, {"exam.max_score": -1})
