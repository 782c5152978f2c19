"""Student tokens: valid for their session until expiry, and nothing else."""

from __future__ import annotations

import pytest

from worker.service.tokens import TokenError, issue_token, verify_token


def test_token_lifecycle() -> None:
    token = issue_token("VIVA-ABCDEF", "k" * 16, ttl_s=60, now=1000)
    verify_token(token, "VIVA-ABCDEF", "k" * 16, now=1059)
    with pytest.raises(TokenError, match="expired"):
        verify_token(token, "VIVA-ABCDEF", "k" * 16, now=1061)
    with pytest.raises(TokenError, match="does not open"):
        verify_token(token, "VIVA-ZZZZZZ", "k" * 16, now=1000)
    with pytest.raises(TokenError, match="does not open"):
        verify_token(token, "VIVA-ABCDEF", "other-key-123", now=1000)
    for bad in ("", "nodot", "abc.def", f"{token}x"):
        with pytest.raises(TokenError):
            verify_token(bad, "VIVA-ABCDEF", "k" * 16, now=1000)


def test_previous_secrets_still_verify_after_a_rotation() -> None:
    old = issue_token("VIVA-ABCDEF", "old-secret-1234567", ttl_s=60, now=1000)
    new = issue_token("VIVA-ABCDEF", "new-secret-1234567", ttl_s=60, now=1000)
    for token in (old, new):
        verify_token(
            token, "VIVA-ABCDEF", "new-secret-1234567", now=1010, previous=["old-secret-1234567"]
        )
    with pytest.raises(TokenError, match="does not open"):  # once the old one is retired
        verify_token(old, "VIVA-ABCDEF", "new-secret-1234567", now=1010)
