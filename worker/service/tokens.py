"""Short-lived student tokens: the session code and an expiry, signed with the token secret.

Stateless (HMAC-SHA256), so any worker sharing the secret can check a token; a token opens only
its own session's stream and only until it expires. Rotation: new tokens are signed with the
current secret, and a token signed with one of the previous secrets is still accepted until it
expires (`worker/service/secrets.py`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence

from core.config import ServerConfig


class TokenError(ValueError):
    """A token that is malformed, forged, for another session, or expired."""


def _sign(key: str, payload: bytes) -> str:
    digest = hmac.new(key.encode(), payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode().rstrip("=")


def issue_token(code: str, key: str, ttl_s: int, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + ttl_s)
    payload = f"{code}.{expires}"
    return f"{expires}.{_sign(key, payload.encode())}"


def verify_token(
    token: str, code: str, key: str, now: float | None = None, previous: Sequence[str] = ()
) -> None:
    """Raises TokenError unless `token` opens `code` now, signed with `key` or a `previous`."""
    try:
        expires_s, signature = token.split(".", 1)
        expires = int(expires_s)
    except ValueError:
        raise TokenError("malformed token") from None
    payload = f"{code}.{expires}".encode()
    # Every key is tried (no early exit), so timing does not tell which one matched.
    matches = [hmac.compare_digest(_sign(k, payload), signature) for k in (key, *previous) if k]
    if not any(matches):
        raise TokenError("token does not open this session")
    if (now if now is not None else time.time()) > expires:
        raise TokenError("token expired")


def signing_secret(server: ServerConfig) -> str:
    if not server.token_secret:  # with_secrets() sets one before the worker serves
        raise RuntimeError("server.token_secret is unset")
    return server.token_secret


def check_token(token: str, code: str, server: ServerConfig) -> None:
    """verify_token with the worker's current and previous token secrets."""
    verify_token(token, code, signing_secret(server), previous=server.previous_token_secrets)
