"""The models of a running worker, loaded in the background so the server answers `/ping` (204)
while they warm, as RunPod's load balancer expects; `ready` once every model has run once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from core.config import ModelsConfig
from models.hub import Hub, load_hub
from worker.voice.speaker import PromptCache

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

    def describe(self) -> dict[str, object]:
        """What health reports say about the models."""
        if self.hub is not None:
            return self.hub.describe()
        return {"ready": False, "error": self.error}


@contextlib.asynccontextmanager
async def loading(models: Models, settings: Callable[[], ModelsConfig]) -> AsyncIterator[None]:
    """Load the models in the background once `models.started` is set (by an on_startup
    handler, which aiohttp runs after every cleanup context), and close them on the way out.
    Not earlier: the database connects during start-up, and loading (vLLM and torch
    initialising in this process) starved the event loop long enough to time out that first
    connection. `settings` is read when loading begins: by then the live settings apply."""

    async def load() -> None:
        await models.started.wait()
        try:
            models.use(await load_hub(settings()))
            models.on_ready()
        except Exception as exc:
            models.error = f"{type(exc).__name__}: {exc}"
            log.critical("models failed to load: %s", models.error)
            models.on_failure(models.error)

    task = asyncio.create_task(load(), name="warm-up")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if models.hub is not None:
            await models.hub.close()
