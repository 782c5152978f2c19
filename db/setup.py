"""Migrate to head and seed: what `scripts/init_db.py` and the tests' fixtures run."""

from __future__ import annotations

import asyncio

from core.config import DatabaseConfig
from db.engine import create_engine, sessionmaker, wait_for_database
from db.migrate import upgrade
from db.seed import SeedReport, seed


async def migrate_and_seed(cfg: DatabaseConfig) -> SeedReport:
    engine = create_engine(cfg)
    try:
        await wait_for_database(engine, cfg.connect_attempts, cfg.connect_retry_seconds)
        # Alembic's async env runs its own event loop: give it a thread.
        await asyncio.to_thread(upgrade, cfg.url)
        async with sessionmaker(engine)() as db, db.begin():
            return await seed(db)
    finally:
        await engine.dispose()
