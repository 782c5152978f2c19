"""Live settings: the keys of the `configuration` table and the config paths they override.

The table's keys are SPEC.md's names; each maps to one dotted path of `core.config.Config`.
`apply_settings` is pure (the rows are read by `db.live_settings`); a value that does not
validate fails start-up with the key and the reason, like config.yaml.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from core.config import Config, ConfigError, replace_settings

log = logging.getLogger(__name__)

# configuration key -> (Config path, value type, seeded default or None, description)
LIVE_SETTINGS: dict[str, tuple[str, str, Any, str]] = {
    "voice_threshold": (
        "turn.voice_threshold",
        "float",
        45,
        "Input level (dBFS + 90) to count as voice",
    ),
    "vad_sensitivity": ("turn.vad_threshold", "float", 0.5, "Silero speech probability threshold"),
    "latency_target_ms": ("turn.latency_target_ms", "integer", 400, "Turn latency budget"),
    "max_question_duration_seconds": (
        "exam.max_question_duration_seconds",
        "integer",
        120,
        "Time limit per question",
    ),
    "min_answer_duration_seconds": (
        "exam.min_answer_duration_seconds",
        "integer",
        3,
        "Shorter answers are ignored",
    ),
    "keyword_matching_threshold": (
        "exam.keyword_matching_threshold",
        "float",
        0.6,
        "Keyword share for full marks",
    ),
    "tts_max_buffer_size": (
        "models.tts.max_buffer_samples",
        "integer",
        16000,
        "TTS buffer (samples)",
    ),
    "asr_language": ("models.asr.language", "string", "en", "Transcription language"),
    "llm_temperature": ("models.llm.temperature", "float", 0.7, "Examiner sampling temperature"),
    # The turn policy (config.yaml `turn`). Not seeded (default None): a row overrides the file
    # only when an operator adds one, so each profile keeps its own policy until then.
    "turn_policy": ("turn.policy", "string", None, "End of answer: viva or silence"),
    "turn_fast_ms": ("turn.fast_ms", "integer", None, "Pause when every signal says done"),
    "turn_unsure_ms": (
        "turn.unsure_ms",
        "integer",
        None,
        "Pause after a whole answer, model unsure",
    ),
    "turn_sounds_done_ms": (
        "turn.sounds_done_ms",
        "integer",
        None,
        "Pause when the model hears an end but the answer is short of its keywords",
    ),
    "turn_short_answer_ms": (
        "turn.short_answer_ms",
        "integer",
        None,
        "Pause after a complete-sounding but short answer",
    ),
    "turn_thinking_ms": ("turn.thinking_ms", "integer", None, "Pause after a hanging thought"),
    "turn_sure_ms": (
        "turn.sure_ms",
        "integer",
        None,
        "Pause when the end-of-turn model is sure (0: off)",
    ),
    "turn_relisten_ms": (
        "turn.relisten_ms",
        "integer",
        None,
        "Ask the end-of-turn model again this far into a pause (0: off)",
    ),
    "turn_max_wait_ms": ("turn.max_wait_ms", "integer", None, "Longest pause inside an answer"),
    "turn_commit_after_ms": (
        "turn.commit_after_ms",
        "integer",
        None,
        "How long a reply can be taken back by a student who goes on",
    ),
    "short_answer_wait_seconds": (
        "exam.short_answer_wait_seconds",
        "float",
        None,
        "Silence after short speech before it is taken as the answer",
    ),
}


def apply_settings(config: Config, settings: Mapping[str, Any]) -> Config:
    """A new Config with the known live settings applied; unknown keys are logged and kept out."""
    updates: dict[str, Any] = {}
    for key, value in settings.items():
        spec = LIVE_SETTINGS.get(key)
        if spec is None:
            log.info("configuration.%s is not a live setting of this worker; ignored", key)
            continue
        updates[spec[0]] = value
    try:
        return replace_settings(config, updates)
    except ConfigError as exc:
        names = {v[0]: k for k, v in LIVE_SETTINGS.items()}
        msg = str(exc)
        for path, key in names.items():
            msg = msg.replace(path, f"configuration.{key} ({path})")
        raise ConfigError(msg) from None
