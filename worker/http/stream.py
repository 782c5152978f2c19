"""`GET /v1/sessions/{code}/stream?token=...`: the voice WebSocket of one session.

Token and capacity problems are reported after the upgrade (one `error` event, then the close
code of docs/protocol.md), because a browser cannot read the HTTP status of a refused upgrade.
"""

from __future__ import annotations

import contextlib
import logging
import socket

from aiohttp import web

from db.engine import is_unreachable
from db.nodes import LeaseLost
from db.queries.sessions import get_by_code
from db.tables import User
from worker import protocol as p
from worker.http.api import UNREACHABLE
from worker.http.context import context
from worker.service.context import WorkerContext
from worker.service.live import Refused
from worker.service.records import exam_questions, scored_answers
from worker.service.tokens import TokenError, check_token
from worker.session.viva import Moved, SessionRecord, VivaSession
from worker.voice.metrics import WS_ERRORS

log = logging.getLogger(__name__)


async def _refuse(
    ws: web.WebSocketResponse, code: p.ErrorCode, message: str
) -> web.WebSocketResponse:
    WS_ERRORS.labels(code).inc()
    await p.refuse(ws, code, message)
    return ws


async def _new_session(ctx: WorkerContext, code: str) -> VivaSession:
    """The live session for a stored one (raises Refused when it cannot be run)."""
    try:
        return await _load_session(ctx, code)
    except Exception as exc:
        if not is_unreachable(exc):
            raise
        log.warning("session %s: database unreachable (%s)", code, exc)
        raise Refused("database_unavailable", UNREACHABLE) from exc


async def _load_session(ctx: WorkerContext, code: str) -> VivaSession:
    """The live session for a stored one. On PostgreSQL this worker first takes the session's
    lock (`db/nodes.py`): a session another live worker serves is refused with
    `session_elsewhere`, never served twice. A session already under way (its worker left or
    died) continues at the question it stood at, with its scored answers."""
    database = ctx.db()
    async with database.sessions() as db:
        sess = await get_by_code(db, code)
    if sess is None:
        raise Refused("session_not_found", f"no session {code}")
    if sess.status in ("completed", "terminated"):
        raise Refused("session_closed", f"session {code} is {sess.status}")
    lease = database.lease
    try:
        owned = lease is None or await lease.own(sess.id)
    except LeaseLost as exc:  # a database restart: owning waits for the lease to come back
        raise Refused("database_unavailable", UNREACHABLE) from exc
    if not owned:
        message = "another worker is serving this session; reconnect in a moment"
        raise Refused("session_elsewhere", message)
    try:
        return await _make_session(ctx, code)
    except BaseException:
        if lease is not None:
            await lease.disown(sess.id)
        raise


async def _make_session(ctx: WorkerContext, code: str) -> VivaSession:
    cfg, database = ctx.config, ctx.db()
    async with database.sessions() as db:  # again, now that it is ours: the latest checkpoint
        sess = await get_by_code(db, code, full=True)
        assert sess is not None
        if sess.status in ("completed", "terminated"):
            raise Refused("session_closed", f"session {code} is {sess.status}")
        asked = await exam_questions(db, sess.college_type, sess.scenario_id, cfg.exam.max_score)
        user = await db.get(User, sess.user_id)
        moved = None
        if sess.status == "in_progress":
            moved = Moved.of(sess, scored_answers(sess))
    questions = tuple(asked[: sess.total_questions])
    student = (user.full_name or user.username) if user is not None else ""
    record = SessionRecord(
        sess.id, sess.session_code, sess.user_id, questions, student, sess.college_type
    )
    models = ctx.models
    assert models.hub is not None and models.prompts is not None  # checked before
    return VivaSession(record, models.hub, database.writer, cfg, models.prompts, moved=moved)


def _reject_token(request: web.Request, code: str, reason: str) -> None:
    """Audit a refused token: through the writer (no database call on this path), and at most
    one row per client address per window, with the count."""
    details = {"session_code": code[:64], "reason": reason}
    context(request).rejected_tokens.hit(request.remote or "?", details)


def _bound_send_buffer(request: web.Request, size: int) -> None:
    """A small kernel send buffer, so that a client that stops reading blocks the server's
    writes within seconds and meets `send_timeout_seconds` (the connection is dropped)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if size and sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


async def stream(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(max_msg_size=p.MAX_WS_MESSAGE_BYTES, heartbeat=20)
    await ws.prepare(request)
    ctx, code = context(request), request.match_info["code"].upper()
    _bound_send_buffer(request, ctx.config.server.socket_send_buffer_bytes)
    if not ctx.admission.allow("ws", request.remote):
        message = "too many connections from this address; retry shortly"
        return await _refuse(ws, "too_many_connections", message)
    try:
        check_token(request.query.get("token", ""), code, ctx.config.server)
    except TokenError as exc:
        _reject_token(request, code, str(exc))
        kind: p.ErrorCode = "token_expired" if "expired" in str(exc) else "unauthorized"
        return await _refuse(ws, kind, str(exc))
    if not ctx.models.ready:
        return await _refuse(ws, "at_capacity", "models are still warming up; retry shortly")
    try:
        session = await ctx.live.open(code, lambda: _new_session(ctx, code))
    except Refused as exc:
        return await _refuse(ws, exc.code, exc.message)
    await session.serve(ws, request.transport)
    # A link the client dropped without a close frame leaves `ws.closed` False too: only a
    # connection still writable can be told that the session failed.
    transport = request.transport
    if not ws.closed and transport is not None and not transport.is_closing():
        with contextlib.suppress(ConnectionError):  # it may still go while we write
            await _refuse(ws, "internal_error", "the session failed; reconnect to resume")
    return ws
