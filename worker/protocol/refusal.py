"""Refusing a voice WebSocket the way docs/protocol.md says: one `error` event, then the close
code for that error. The one helper of this package that does I/O, shared by the stream route
(a refused token, a full worker) and the session (a connection that arrives after its end)."""

from __future__ import annotations

from aiohttp import web

from worker.protocol.codec import dump
from worker.protocol.events import CLOSE_CODE_FOR, ErrorCode, ErrorEvent


async def refuse(ws: web.WebSocketResponse, code: ErrorCode, message: str) -> None:
    """Send the fatal `error` event and close with its close code; nothing when already closed."""
    if not ws.closed:
        await ws.send_str(dump(ErrorEvent(code=code, message=message)))
        await ws.close(code=CLOSE_CODE_FOR[code])
