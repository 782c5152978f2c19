"""Entry point of the worker.

    python handler.py                 RunPod queue-based serverless: warm up, then take jobs
                                      (`evaluate`, `viva`, `session`, `health`; worker/jobs.py)
    python handler.py --rp_serve_api  the same behind the SDK's local /run, /runsync, /stream
    python handler.py --serve         the HTTP/WebSocket server alone; also whenever RunPod's
                                      PORT is set (load-balancing endpoints), with PORT_HEALTH

Outside RunPod, plain `python handler.py` runs test_input.json (or `--test_input JSON`) through
the handler and prints what it yields. Config comes from config.yaml and the environment (see
config.yaml's header); start-up fails fast with a clear message and a non-zero status on invalid
config, a public worker without its own secrets (VIVA_API_KEY, VIVA_TOKEN_SECRET), an
unreachable database, an unmigrated schema or models that fail to load.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from core.config import Config, ConfigError, load_config
from core.text import EscapedArgs
from db.engine import DatabaseNotMigrated, DatabaseUnavailable
from db.nodes import NodeIdTaken
from worker.http.server import serve
from worker.service.secrets import with_secrets

log = logging.getLogger("viva")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Realtime voice viva examiner worker")
    parser.add_argument("--serve", action="store_true", help="run the HTTP/WebSocket server")
    parser.add_argument("--config", default=os.environ.get("VIVA_CONFIG", "config.yaml"))
    # RunPod's SDK reads these (and its other --rp_* flags) from sys.argv itself.
    parser.add_argument("--rp_serve_api", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--test_input", help="a test job as JSON (local runs)")
    args, _sdk_args = parser.parse_known_args(argv)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(EscapedArgs())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        config = with_secrets(load_config(args.config, os.environ))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.serve or os.environ.get("PORT"):
        return _serve(config)
    from worker.runpod import serverless  # the SDK and the job code: not needed by --serve

    return serverless.run(config, os.environ, args.rp_serve_api, args.test_input)


def _serve(config: Config) -> int:
    raw = os.environ.get("PORT_HEALTH")
    try:
        health_port = int(raw) if raw else None
    except ValueError:
        print(f"error: PORT_HEALTH must be a port number, got {raw!r}", file=sys.stderr)
        return 2
    try:
        failure = asyncio.run(serve(config, health_port))
    except (DatabaseUnavailable, DatabaseNotMigrated, NodeIdTaken, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if failure is not None:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
