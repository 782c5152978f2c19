"""Entry point of the worker.

    python handler.py --serve     the HTTP/WebSocket server (also when RunPod's PORT is set)
    python handler.py             RunPod serverless (not built yet: issue 5)

Config comes from config.yaml and the environment (see config.yaml's header); start-up fails fast
with a clear message on invalid config, an unreachable database or an unmigrated schema.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aiohttp import web

from db.engine import DatabaseNotMigrated, DatabaseUnavailable
from worker.config import ConfigError, load_config
from worker.server import build_app

log = logging.getLogger("viva")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Realtime voice viva examiner worker")
    parser.add_argument("--serve", action="store_true", help="run the HTTP/WebSocket server")
    parser.add_argument("--config", default=os.environ.get("VIVA_CONFIG", "config.yaml"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not (args.serve or os.environ.get("PORT")):
        print(
            "error: RunPod serverless mode is not built yet (issue 5); use --serve", file=sys.stderr
        )
        return 2
    try:
        web.run_app(
            build_app(config),
            host=config.server.host,
            port=config.server.port,
            print=lambda msg: log.info("%s", msg),
        )
    except (DatabaseUnavailable, DatabaseNotMigrated) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
