"""Backup and restore round trips on both databases, through the CLI script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from core.config import DatabaseConfig
from db.engine import create_engine, sessionmaker
from db.tables import Session
from tests.db.helpers import make_viva

ROOT = Path(__file__).resolve().parents[2]


def _cli(action: str, path: Path, url: str) -> None:
    subprocess.run(
        [sys.executable, "scripts/backup.py", action, str(path)],
        cwd=ROOT,
        env={"DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        timeout=120,
    )


async def _count(url: str) -> int:
    engine = create_engine(DatabaseConfig(url=url))
    try:
        async with sessionmaker(engine)() as db:
            return int((await db.execute(select(func.count()).select_from(Session))).scalar_one())
    finally:
        await engine.dispose()


async def test_backup_restore_round_trip(db_url, db_session, tmp_path) -> None:  # type: ignore[no-untyped-def]
    kept = await make_viva(db_session)
    backup_file = tmp_path / "viva.backup"
    _cli("backup", backup_file, db_url)
    assert backup_file.stat().st_size > 0
    await make_viva(db_session)  # written after the backup: the restore must drop it
    assert await _count(db_url) == 2
    _cli("restore", backup_file, db_url)
    assert await _count(db_url) == 1
    async with db_session() as db:
        assert (await db.get(Session, kept.session_id)) is not None


def test_missing_backup_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run(
        [sys.executable, "scripts/backup.py", "restore", str(tmp_path / "none")],
        cwd=ROOT,
        env={"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "no backup at" in done.stderr
