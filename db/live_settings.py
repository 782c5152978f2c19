"""Reading the live settings: the active rows of the `configuration` table, applied over a
config with `core.live_settings.apply_settings` (which holds the key mapping)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from core.config import Config, ConfigError
from core.live_settings import apply_settings
from db.queries.configuration import InvalidSetting, active_settings


async def apply_live_settings(db: AsyncSession, config: Config) -> Config:
    """Read the active rows of `configuration` and apply them over `config`."""
    try:
        settings = await active_settings(db)
    except InvalidSetting as exc:
        raise ConfigError(str(exc)) from None
    return apply_settings(config, settings)
