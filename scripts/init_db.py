"""Create or upgrade the database schema to head and seed it (idempotent).

Usage: python scripts/init_db.py [--config config.yaml]   (DATABASE_URL overrides the file)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from core.config import ConfigError, load_config
from db.engine import DatabaseUnavailable
from db.setup import migrate_and_seed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    try:
        cfg = load_config(args.config, os.environ)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(migrate_and_seed(cfg.database))
    except DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    safe = cfg.database.url.split("@")[-1]
    print(
        f"database {safe}: at head; questions +{report.questions_added} "
        f"~{report.questions_updated}, settings +{report.settings_added}, "
        f"admin {'created' if report.admin_created else 'present'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
