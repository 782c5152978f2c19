"""Text from strangers, made safe to store and to log.

PostgreSQL refuses a NUL in text and JSON columns, and a CR or LF in a log argument forges a log
line, so user-supplied strings (names, headers, paths) go through one of these on the way in.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from pydantic import AfterValidator

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def has_control(text: str) -> bool:
    """True when `text` holds a control character (NUL, CR, LF, ESC, ...)."""
    return _CONTROL.search(text) is not None


def stripped(text: str | None, limit: int) -> str | None:
    """`text` without control characters, at most `limit` characters; None when nothing is left."""
    if text is None:
        return None
    return _CONTROL.sub("", text)[:limit] or None


def escaped(value: object) -> str:
    """`value` as text with control characters written as \\xNN (for log lines)."""
    text = str(value)
    if not has_control(text):
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _plain(text: str) -> str:
    if has_control(text):
        raise ValueError("control characters (NUL, CR, LF, ...) are not allowed")
    return text


# A str field of an API body or a client event that refuses control characters.
PlainText = Annotated[str, AfterValidator(_plain)]


class EscapedArgs(logging.Filter):
    """A handler filter: every string argument of a log record with its control characters
    escaped, so a CR/LF in a request path or header cannot forge a log line. (Tracebacks are
    formatted from `exc_info`, not the arguments, and keep their lines.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(escaped(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):
            record.args = {k: escaped(v) if isinstance(v, str) else v for k, v in args.items()}
        return True
