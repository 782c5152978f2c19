"""The worker's two secrets, checked before it serves anyone.

- `server.api_key` (`VIVA_API_KEY`) lets the platform manage sessions (create, read, list, the
  monitor). A worker that listens beyond loopback refuses to start with the shipped default;
  on loopback (`make run` on a laptop) it starts and warns.
- `server.token_secret` (`VIVA_TOKEN_SECRET`) signs the students' session tokens, and
  `server.previous_token_secrets` (`VIVA_PREVIOUS_TOKEN_SECRETS`, comma-separated) still verify
  tokens signed before a rotation. They are separate from the API key, so a leaked management key
  cannot forge a student's token and a leaked token secret cannot manage sessions. A public
  worker must be given one (workers behind one endpoint share it); on loopback a random one is
  made per process (tokens then do not outlive the process).
"""

from __future__ import annotations

import hmac
import logging
import secrets

from core.config import Config, ConfigError, ServerConfig, replace_settings

log = logging.getLogger(__name__)
DEFAULT_API_KEY = "dev-api-key-change-me"
MIN_SECRET_CHARS = 16
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def secret_problems(server: ServerConfig) -> list[str]:
    """Why a worker listening on `server.host` must not start with these secrets."""
    if is_loopback(server.host):
        return []
    problems = []
    if not server.api_key.strip() or server.api_key == DEFAULT_API_KEY:
        problems.append(
            f"server.api_key is the shipped default and the worker listens on {server.host}: "
            "set VIVA_API_KEY to a secret of your own"
        )
    secret = server.token_secret
    if not secret or len(secret) < MIN_SECRET_CHARS:
        problems.append(
            f"server.token_secret is not set (or shorter than {MIN_SECRET_CHARS} characters) and"
            f" the worker listens on {server.host}: set VIVA_TOKEN_SECRET (shared by every worker"
            " of an endpoint)"
        )
    elif hmac.compare_digest(secret, server.api_key):
        problems.append("VIVA_TOKEN_SECRET must differ from VIVA_API_KEY")
    return problems


def with_secrets(config: Config) -> Config:
    """`config` ready to serve: raises ConfigError (naming the variable to set) for a public
    worker without its own secrets; on loopback warns about the default key and makes a
    process-local token secret when none is given."""
    problems = secret_problems(config.server)
    if problems:
        raise ConfigError("; ".join(problems))
    server = config.server
    if server.api_key == DEFAULT_API_KEY:
        log.warning(
            "serving on %s with the DEFAULT API KEY: fine on this machine only; set VIVA_API_KEY"
            " before listening anywhere else",
            server.host,
        )
    if server.token_secret:
        return config
    # Not derived from the API key: that would make the key a token oracle.
    return replace_settings(config, {"server.token_secret": secrets.token_urlsafe(32)})
