"""The worker with its pages, as the browser tests run it: `python -m tests.browser.serve`.

Configured like `handler.py --serve` (config.yaml, then the environment). It differs only in
adding the page and monitor routes itself, which keeps the tests independent of whether
`build_app` does.
"""

from __future__ import annotations

import logging
import os

from aiohttp import web

from core.config import load_config
from worker.http.monitor import add_monitor_routes
from worker.http.pages import add_page_routes
from worker.http.server import build_app


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = load_config(os.environ.get("VIVA_CONFIG", "config.yaml"), os.environ)
    app = build_app(config)
    add_page_routes(app)  # a no-op once build_app registers them
    add_monitor_routes(app)  # likewise
    web.run_app(app, host=config.server.host, port=config.server.port, print=None)


if __name__ == "__main__":
    main()
