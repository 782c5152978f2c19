"""Back up or restore the worker's database (SQLite file or PostgreSQL).

Usage:
  python scripts/backup.py backup  PATH [--config config.yaml]
  python scripts/backup.py restore PATH [--config config.yaml]
DATABASE_URL overrides the configured database, as for the worker.
"""

from __future__ import annotations

import argparse
import os
import sys

from core.config import ConfigError, load_config
from db.backup import BackupError, backup, restore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Back up or restore the viva database.")
    parser.add_argument("action", choices=["backup", "restore"])
    parser.add_argument("path")
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args(argv)
    try:
        url = load_config(args.config, os.environ).database.url
        if args.action == "backup":
            print(f"backed up to {backup(url, args.path)}")
        else:
            restore(url, args.path)
            print(f"restored from {args.path}")
    except (ConfigError, BackupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
