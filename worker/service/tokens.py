"""Short-lived student tokens: the session code and an expiry, signed with the server's key.

Stateless (HMAC-SHA256), so any worker sharing the key can check a token; a token opens only
its own session's stream and only until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


class TokenError(ValueError):
    """A token that is malformed, forged, for another session, or expired."""


def _sign(key: str, payload: bytes) -> str:
    digest = hmac.new(key.encode(), payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode().rstrip("=")


def issue_token(code: str, key: str, ttl_s: int, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + ttl_s)
    payload = f"{code}.{expires}"
    return f"{expires}.{_sign(key, payload.encode())}"


def verify_token(token: str, code: str, key: str, now: float | None = None) -> None:
    try:
        expires_s, signature = token.split(".", 1)
        expires = int(expires_s)
    except ValueError:
        raise TokenError("malformed token") from None
    expected = _sign(key, f"{code}.{expires}".encode())
    if not hmac.compare_digest(expected, signature):
        raise TokenError("token does not open this session")
    if (now if now is not None else time.time()) > expires:
        raise TokenError("token expired")
