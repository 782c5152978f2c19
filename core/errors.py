"""The one base of the worker's typed errors: a code from `core.vocabulary`, a message, and the
HTTP status it answers with where it surfaces as an HTTP response.

Session refusals, job errors and opening refusals all derive from it, so a caller that only
reports an error (the job runner, the HTTP API) catches `CodedError` once instead of translating
one error type into another.
"""

from __future__ import annotations

from typing import Any

from core.vocabulary import ErrorCode


class CodedError(Exception):
    def __init__(self, code: ErrorCode, message: str, status: int = 500):
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.status = status

    def as_item(self) -> dict[str, Any]:
        """The typed error body, `{"error": {"code", "message"}}` (a job's item, an HTTP body)."""
        return {"error": {"code": self.code, "message": self.message}}
