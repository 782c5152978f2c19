"""The `configuration` table: typed get and set of live settings."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.tables import Configuration


class InvalidSetting(ValueError):
    """A stored value that does not parse as its declared type, or a value of the wrong type."""


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "json"


def encode_value(value: Any, value_type: str) -> str:
    if value_type == "boolean":
        if not isinstance(value, bool):
            raise InvalidSetting(f"expected a boolean, got {value!r}")
        return "true" if value else "false"
    if value_type == "json":
        return json.dumps(value)
    if value_type in ("integer", "float") and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        raise InvalidSetting(f"expected a number, got {value!r}")
    if value_type == "integer" and not float(value).is_integer():
        raise InvalidSetting(f"expected an integer, got {value!r}")
    return str(int(value) if value_type == "integer" else value)


def decode_value(raw: str, value_type: str) -> Any:
    try:
        if value_type == "integer":
            return int(raw)
        if value_type == "float":
            return float(raw)
        if value_type == "boolean":
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"not a boolean: {raw!r}")
            return lowered in ("true", "1", "yes")
        if value_type == "json":
            return json.loads(raw)
        return raw
    except ValueError as exc:
        raise InvalidSetting(f"{raw!r} is not a valid {value_type}: {exc}") from None


async def get_setting(db: AsyncSession, key: str, default: Any = None) -> Any:
    row = (
        await db.execute(select(Configuration).where(Configuration.config_key == key))
    ).scalar_one_or_none()
    if row is None or not row.is_active:
        return default
    return decode_value(row.config_value, row.value_type)


async def set_setting(
    db: AsyncSession,
    key: str,
    value: Any,
    value_type: str | None = None,
    description: str | None = None,
) -> Configuration:
    """Create or update a setting; the type is inferred from the value unless given."""
    vtype = value_type or _type_of(value)
    raw = encode_value(value, vtype)
    row = (
        await db.execute(select(Configuration).where(Configuration.config_key == key))
    ).scalar_one_or_none()
    if row is None:
        row = Configuration(config_key=key, config_value=raw, value_type=vtype)
        db.add(row)
    else:
        row.config_value, row.value_type, row.is_active = raw, vtype, True
    if description is not None:
        row.description = description
    await db.flush()
    return row


async def active_settings(db: AsyncSession) -> dict[str, Any]:
    """Every active setting, decoded; a row that does not decode raises InvalidSetting."""
    rows = (
        await db.execute(select(Configuration).where(Configuration.is_active.is_(True)))
    ).scalars()
    out: dict[str, Any] = {}
    for row in rows:
        try:
            out[row.config_key] = decode_value(row.config_value, row.value_type)
        except InvalidSetting as exc:
            raise InvalidSetting(f"configuration.{row.config_key}: {exc}") from None
    return out
