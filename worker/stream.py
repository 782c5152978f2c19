"""`GET /v1/sessions/{code}/stream?token=...`: the voice WebSocket of one session.

Token and capacity problems are reported after the upgrade (one `error` event, then the close
code of docs/protocol.md), because a browser cannot read the HTTP status of a refused upgrade.
"""

from __future__ import annotations

import logging

from aiohttp import web

from db.queries.questions import questions_for
from db.queries.sessions import get_by_code
from models.hub import Hub
from worker import protocol as p
from worker.api import CONFIG, DATABASE, LIVE
from worker.evaluators import Question
from worker.session import SessionRecord, VivaSession
from worker.tokens import TokenError, verify_token

log = logging.getLogger(__name__)
HUB = web.AppKey("hub", Hub)


async def _refuse(
    ws: web.WebSocketResponse, code: p.ErrorCode, message: str
) -> web.WebSocketResponse:
    await ws.send_str(p.dump(p.ErrorEvent(code=code, message=message)))
    await ws.close(code=p.CLOSE_CODE_FOR[code])
    return ws


async def _record(request: web.Request, code: str) -> SessionRecord | tuple[p.ErrorCode, str]:
    cfg = request.app[CONFIG]
    async with request.app[DATABASE].sessions() as db:
        sess = await get_by_code(db, code)
        if sess is None:
            return "session_not_found", f"no session {code}"
        if sess.status in ("completed", "terminated"):
            return "session_closed", f"session {code} is {sess.status}"
        rows = (await questions_for(db, sess.college_type, sess.scenario_id))[
            : sess.total_questions
        ]
    questions = tuple(
        Question(
            q.id,
            q.question_number,
            q.question_text,
            tuple(q.expected_keywords or ()),
            q.answer_guidelines or "",
            cfg.exam.max_score,
        )
        for q in rows
    )
    return SessionRecord(sess.id, sess.session_code, sess.user_id, questions)


async def stream(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(max_msg_size=p.MAX_WS_MESSAGE_BYTES, heartbeat=20)
    await ws.prepare(request)
    app, code = request.app, request.match_info["code"].upper()
    cfg = app[CONFIG]
    try:
        verify_token(request.query.get("token", ""), code, cfg.server.api_key)
    except TokenError as exc:
        kind: p.ErrorCode = "token_expired" if "expired" in str(exc) else "unauthorized"
        return await _refuse(ws, kind, str(exc))
    if HUB not in app or not app[HUB].ready:
        return await _refuse(ws, "at_capacity", "models are still warming up; retry shortly")
    if code in app[LIVE]:
        return await _refuse(ws, "session_busy", "another connection holds this session")
    if len(app[LIVE]) >= cfg.server.max_sessions:
        return await _refuse(
            ws, "at_capacity", f"this worker holds {cfg.server.max_sessions} sessions"
        )
    record = await _record(request, code)
    if isinstance(record, tuple):
        return await _refuse(ws, *record)
    session = VivaSession(record, app[HUB], app[DATABASE].writer, app[DATABASE].config, ws)
    app[LIVE][code] = session
    try:
        await session.run()
    except Exception:
        log.exception("session %s failed", code)
        if not ws.closed:
            await _refuse(ws, "internal_error", "the session failed; reconnect to resume")
    finally:
        app[LIVE].pop(code, None)
        if not ws.closed:
            await ws.close(code=p.CloseCode.NORMAL)
    return ws
