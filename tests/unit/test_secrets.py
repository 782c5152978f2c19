"""The worker's secrets: a public worker refuses the shipped key and needs its own token
secret; a loopback worker starts (warned) with a process-local token secret."""

from __future__ import annotations

import logging

import pytest

from core.config import ConfigError, load_config, replace_settings
from worker.service.secrets import DEFAULT_API_KEY, with_secrets


def _config(**settings: object):  # type: ignore[no-untyped-def]
    return replace_settings(load_config("config.yaml", {}), settings)


def test_public_worker_with_the_default_key_is_refused() -> None:
    cfg = _config(**{"server.host": "0.0.0.0", "server.token_secret": "t" * 32})
    with pytest.raises(ConfigError, match="VIVA_API_KEY"):
        with_secrets(cfg)


@pytest.mark.parametrize("secret", [None, "short"])
def test_public_worker_needs_a_token_secret(secret: str | None) -> None:
    cfg = _config(**{"server.host": "0.0.0.0", "server.api_key": "k" * 32})
    cfg = replace_settings(cfg, {"server.token_secret": secret})
    with pytest.raises(ConfigError, match="VIVA_TOKEN_SECRET"):
        with_secrets(cfg)


def test_token_secret_must_not_be_the_api_key() -> None:
    key = "k" * 32
    cfg = _config(**{"server.host": "10.0.0.5", "server.api_key": key, "server.token_secret": key})
    with pytest.raises(ConfigError, match="must differ"):
        with_secrets(cfg)


def test_public_worker_with_its_own_secrets_starts() -> None:
    cfg = _config(
        **{"server.host": "0.0.0.0", "server.api_key": "k" * 32, "server.token_secret": "t" * 32}
    )
    assert with_secrets(cfg) is cfg


def test_loopback_worker_warns_and_makes_a_token_secret(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _config()
    assert cfg.server.api_key == DEFAULT_API_KEY and cfg.server.token_secret is None
    with caplog.at_level(logging.WARNING):
        ready = with_secrets(cfg)
    assert "DEFAULT API KEY" in caplog.text
    secret = ready.server.token_secret
    assert secret and len(secret) >= 32 and secret != cfg.server.api_key
    assert with_secrets(cfg).server.token_secret != secret  # random, per process


def test_environment_names_the_secrets() -> None:
    env = {
        "VIVA_TOKEN_SECRET": "t" * 20,
        "VIVA_PREVIOUS_TOKEN_SECRETS": "old-one-aaaaaaaaaa, old-two-bbbbbbbbbb",
    }
    cfg = load_config("config.yaml", env)
    assert cfg.server.token_secret == "t" * 20
    assert cfg.server.previous_token_secrets == ("old-one-aaaaaaaaaa", "old-two-bbbbbbbbbb")
