"""The one application key: the worker context (`worker.service.context`) that every handler
reads. The application creates the context; nothing else of the worker is stored on it."""

from __future__ import annotations

from aiohttp import web

from worker.service.context import WorkerContext

CONTEXT = web.AppKey("context", WorkerContext)


def context(request: web.Request) -> WorkerContext:
    return request.app[CONTEXT]
