"""The typed error of RunPod jobs."""

from __future__ import annotations

from core.errors import CodedError
from core.vocabulary import ErrorCode


class JobError(CodedError):
    """A job that cannot run; yielded as `{"error": {"code", "message"}}` (`as_item`). Its codes
    are `core.vocabulary`'s (docs/deployment.md lists those a job can meet)."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(code, message)
