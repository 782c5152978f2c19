"""The models of a running worker, loaded in the background so the server answers `/ping` (204)
while they warm, as RunPod's load balancer expects; `ready` once every model has run once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from core.config import Config
from models.hub import Hub, load_hub
from worker.speaker import PromptCache

log = logging.getLogger(__name__)


@dataclass
class Models:
    hub: Hub | None = None
    prompts: PromptCache | None = None
    error: str | None = None  # why loading failed; the worker is then unhealthy
    on_failure: Callable[[str], None] = field(default=lambda _: None)  # e.g. stop the process
    on_ready: Callable[[], None] = field(default=lambda: None)
    # Set by the application's on_startup, which runs after every cleanup context has started.
    started: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ready(self) -> bool:
        return self.hub is not None and self.hub.ready

    def use(self, hub: Hub) -> None:
        self.prompts = PromptCache(hub.tts)
        self.hub = hub


MODELS = web.AppKey("models", Models)


async def start_loading(app: web.Application) -> None:
    app[MODELS].started.set()


def models_ctx(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    """Load the models in the background once the application has started (`start_loading`, an
    on_startup handler, which aiohttp runs after every cleanup context). Not earlier: the
    database connects during start-up, and loading (vLLM and torch initialising in this process)
    starved the event loop long enough to time out that first connection."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        state = app[MODELS]

        async def load() -> None:
            await state.started.wait()
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
