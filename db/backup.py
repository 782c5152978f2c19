"""Backups of both databases: SQLite through its online backup API, PostgreSQL through
pg_dump / pg_restore (custom format). Both are safe while the worker is writing."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import URL, make_url


class BackupError(RuntimeError):
    """A backup or restore could not be made; the message says why."""


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(url.database)


def _pg_args(url: URL) -> tuple[list[str], dict[str, str]]:
    args = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
    if url.username:
        args += ["-U", url.username]
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return args, env


def _run(cmd: list[str], env: dict[str, str]) -> None:
    exe = shutil.which(cmd[0])
    if exe is None:
        raise BackupError(f"{cmd[0]} is not installed (the PostgreSQL client tools are needed)")
    done = subprocess.run([exe, *cmd[1:]], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"{cmd[0]} failed ({done.returncode}): {done.stderr.strip()}")


def backup(database_url: str, out: str | Path) -> Path:
    """Write a consistent copy of the database to `out`."""
    url = make_url(database_url)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    if url.get_backend_name() == "sqlite":
        src_path = _sqlite_path(url)
        if not src_path.exists():
            raise BackupError(f"no SQLite database at {src_path}")
        with sqlite3.connect(src_path) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        return target
    args, env = _pg_args(url)
    _run(["pg_dump", *args, "-Fc", "-f", str(target), url.database or "postgres"], env)
    return target


def restore(database_url: str, source: str | Path) -> None:
    """Replace the database's contents with the backup at `source`."""
    url = make_url(database_url)
    src = Path(source)
    if not src.exists():
        raise BackupError(f"no backup at {src}")
    if url.get_backend_name() == "sqlite":
        dst_path = _sqlite_path(url)
        dst_path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(src) as s, sqlite3.connect(dst_path) as d:
            s.backup(d)
        return
    args, env = _pg_args(url)
    _run(
        [
            "pg_restore",
            *args,
            "--clean",
            "--if-exists",
            "--no-owner",
            "-d",
            url.database or "",
            str(src),
        ],
        env,
    )
