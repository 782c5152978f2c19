"""The models of a running worker, loaded in the background so the server answers `/ping` (204)
while they warm, as RunPod's load balancer expects; `ready` once every model has run once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from models.hub import Hub, load_hub
from worker.config import Config
from worker.speaker import PromptCache

log = logging.getLogger(__name__)


@dataclass
class Models:
    hub: Hub | None = None
    prompts: PromptCache | None = None
    error: str | None = None  # why loading failed; the worker is then unhealthy
    on_failure: Callable[[str], None] = field(default=lambda _: None)  # e.g. stop the process
    on_ready: Callable[[], None] = field(default=lambda: None)

    @property
    def ready(self) -> bool:
        return self.hub is not None and self.hub.ready

    def use(self, hub: Hub) -> None:
        self.prompts = PromptCache(hub.tts)
        self.hub = hub


MODELS = web.AppKey("models", Models)


def models_ctx(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        state = app[MODELS]

        async def load() -> None:
            try:
                state.use(await load_hub(config.models))
                state.on_ready()
            except Exception as exc:
                state.error = f"{type(exc).__name__}: {exc}"
                log.critical("models failed to load: %s", state.error)
                state.on_failure(state.error)

        task = asyncio.create_task(load(), name="warm-up")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if state.hub is not None:
            await state.hub.close()

    return ctx
