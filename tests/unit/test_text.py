"""Text from strangers: control characters refused, stripped, escaped in log arguments."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel, ValidationError

from core.text import EscapedArgs, PlainText, escaped, stripped


class Named(BaseModel):
    name: PlainText


def test_plain_text_refuses_control_characters() -> None:
    assert Named(name="Ada Lovelace").name == "Ada Lovelace"
    for bad in ("Ada\x00", "A\r\nB", "\x1b[31m"):
        with pytest.raises(ValidationError, match="control characters"):
            Named(name=bad)


def test_stripped_and_escaped() -> None:
    assert stripped("Mozilla\x00/5.0\r\n" + "x" * 600, 512) == ("Mozilla/5.0" + "x" * 600)[:512]
    assert stripped("\x00\x01", 10) is None and stripped(None, 10) is None
    assert escaped("/x\r\nFORGED") == "/x\\x0d\\x0aFORGED"


def test_log_arguments_are_escaped_by_the_filter() -> None:
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "%s %s failed", ("GET", "/a\r\nB"), None
    )
    assert EscapedArgs().filter(record)
    assert record.getMessage() == "GET /a\\x0d\\x0aB failed"
    assert "\n" not in record.getMessage()
