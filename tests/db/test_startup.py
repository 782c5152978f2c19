"""Start-up failures are clear and fast: invalid config, unreachable or unmigrated database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "VIVA__WRITER__JOURNAL_DIR": str(tmp_path / "journal"),
        "PORT": "18555",  # never bound: start-up fails before the site starts
        **env,
    }
    return subprocess.run(
        [sys.executable, "handler.py", "--serve"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_invalid_config_names_the_key(tmp_path: Path) -> None:
    done = _start(tmp_path, VIVA__WRITER__BATCH_MAX_OPS="0")
    assert done.returncode == 2
    assert "writer.batch_max_ops" in done.stderr


def test_invalid_database_url(tmp_path: Path) -> None:
    done = _start(tmp_path, DATABASE_URL="mysql://root@localhost/viva")
    assert done.returncode == 2
    assert "database.url" in done.stderr and "not supported" in done.stderr


def test_unmigrated_database_says_which_command_to_run(tmp_path: Path) -> None:
    done = _start(tmp_path, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    assert done.returncode == 1
    assert "python scripts/init_db.py" in done.stderr


@pytest.mark.postgres
def test_unreachable_database_retries_then_exits(tmp_path: Path) -> None:
    done = _start(
        tmp_path,
        DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/viva",
        VIVA__DATABASE__CONNECT_ATTEMPTS="2",
        VIVA__DATABASE__CONNECT_RETRY_SECONDS="0.1",
    )
    assert done.returncode == 1
    assert "unreachable after 2 attempts" in done.stderr
