"""HTTP API for the exam platform (API key): create a session, read one, list live ones; and,
without a key, the catalog of scenarios and guest practice sessions when the config allows them.

Everything here is outside the voice path, so it uses the query layer directly (session creation
is shared with the RunPod jobs in `worker.service.opening`); errors are typed JSON bodies
`{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import CodedError
from core.text import PlainText
from core.vocabulary import SESSION_STATUSES, CollegeType, ErrorCode
from db.queries.questions import scenarios
from db.queries.sessions import get_by_code, list_sessions
from worker.http.context import context
from worker.service.opening import CreateSession, open_session
from worker.service.records import session_json
from worker.service.urls import request_ws_base, stream_url

RETRY_AFTER_S = 2  # what a client told the database is unreachable should wait
BODY_TIMEOUT_S = 10.0  # a request body trickled slower than this is refused (408)
UNREACHABLE = "the database is unreachable; retry shortly"
_M = TypeVar("_M", bound=BaseModel)


class CreatePractice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: PlainText = Field(min_length=1, max_length=80)
    college_type: CollegeType
    scenario_id: str = Field(min_length=1, max_length=64)


def error(status: int, code: ErrorCode, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def unavailable() -> web.Response:
    """503 for a request that needed the database while it is unreachable (restart, outage)."""
    response = error(503, "database_unavailable", UNREACHABLE)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def require_api_key(request: web.Request, query: bool = False) -> web.Response | None:
    """None when the request carries the API key, else the 401 to answer: in `X-API-Key` or
    `Authorization: Bearer` (either may hold it: behind RunPod, Authorization carries RunPod's
    own key); `query`: also `?key=` (for EventSource, which cannot set headers)."""
    key = context(request).config.server.api_key.encode()
    given = [
        request.headers.get("X-API-Key", ""),
        request.headers.get("Authorization", "").removeprefix("Bearer ").strip(),
    ]
    if query:
        given.append(request.query.get("key", ""))
    # Each candidate compared in constant time; undecodable header bytes simply do not match.
    matched = [hmac.compare_digest(g.encode("utf-8", "replace"), key) for g in given if g]
    if not any(matched):
        return error(401, "unauthorized", "a valid API key is required (X-API-Key or Bearer)")
    return None


def ws_url(request: web.Request, code: str, token: str) -> str:
    base = context(request).public_ws_base or request_ws_base(request.secure, request.host)
    return stream_url(base, code, token)


async def _body(request: web.Request, model: type[_M]) -> _M | web.Response:
    """The JSON body as `model`, or the typed 4xx to answer. Only `application/json` (a
    cross-site form or a `text/plain` fetch cannot post one without a CORS preflight, which
    this worker never grants)."""
    if request.content_type != "application/json":
        return error(415, "unsupported_media_type", "send the body as application/json")
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            raw = await request.read()
    except TimeoutError:
        return error(408, "request_timeout", f"the body did not arrive within {BODY_TIMEOUT_S:g} s")
    except web.HTTPRequestEntityTooLarge as exc:
        return error(413, "invalid_request", exc.text or "the body is too large")
    try:
        data = json.loads(raw)
    except RecursionError:
        return error(400, "invalid_request", "the JSON body is nested too deeply")
    except ValueError as exc:  # UnicodeDecodeError is one too
        return error(400, "invalid_request", f"the body is not JSON: {exc}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = exc.errors()[0]
        where = ".".join(str(p) for p in detail.get("loc", ()))
        return error(400, "invalid_request", f"{where}: {detail['msg']}".lstrip(": "))


def too_many(what: str) -> web.Response:
    response = error(429, "rate_limited", f"too many {what} from this address; retry shortly")
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def create(request: web.Request) -> web.Response:
    if (denied := require_api_key(request)) is not None:
        return denied
    if not context(request).admission.allow("create", request.remote):
        return too_many("sessions")
    body = await _body(request, CreateSession)
    return body if isinstance(body, web.Response) else await _open(request, body)


async def practice(request: web.Request) -> web.Response:
    """A guest viva started from the student page (config `server.practice_sessions`)."""
    if not context(request).config.server.practice_sessions:
        return error(403, "practice_disabled", "practice sessions are off on this worker")
    if not context(request).admission.allow("practice", request.remote):
        return too_many("practice sessions")
    body = await _body(request, CreatePractice)
    if isinstance(body, web.Response):
        return body
    guest = CreateSession(
        student_id=f"guest-{secrets.token_hex(6)}",
        full_name=body.name,
        college_type=body.college_type,
        scenario_id=body.scenario_id,
    )
    return await _open(request, guest, guest=True)


async def catalog(request: web.Request) -> web.Response:
    """College types and their scenarios, for the student page's practice form."""
    ctx = context(request)
    async with ctx.db().sessions() as db:
        rows = await scenarios(db)
    by_type: dict[str, list[dict[str, str]]] = {}
    for college, scenario_id, name in rows:
        by_type.setdefault(college, []).append({"id": scenario_id, "name": name})
    return web.json_response(
        {
            "practice": ctx.config.server.practice_sessions,
            "college_types": [{"id": c, "scenarios": s} for c, s in by_type.items()],
        }
    )


async def _open(request: web.Request, body: CreateSession, guest: bool = False) -> web.Response:
    ctx = context(request)
    try:
        opened = await open_session(
            ctx.config,
            ctx.db(),
            ctx.live,
            body,
            ip_address=request.remote,
            user_agent=request.headers.get("User-Agent"),
            guest=guest,
        )
    except CodedError as exc:  # a refusal (unknown scenario, full, unhealthy): typed, with status
        return error(exc.status, exc.code, exc.message)
    return web.json_response(
        {
            "session_code": opened.code,
            "token": opened.token,
            "ws_url": ws_url(request, opened.code, opened.token),
            "expires_in": opened.expires_in,
            "total_questions": opened.total_questions,
        },
        status=201,
    )


async def get_one(request: web.Request) -> web.Response:
    if (denied := require_api_key(request)) is not None:
        return denied
    code = request.match_info["code"]
    async with context(request).db().sessions() as db:
        sess = await get_by_code(db, code, full=True)
        if sess is None:
            return error(404, "not_found", f"no session {code}")
        return web.json_response(session_json(sess, full=True))


async def list_live(request: web.Request) -> web.Response:
    if (denied := require_api_key(request)) is not None:
        return denied
    status = request.query.get("status", "in_progress")
    if status not in SESSION_STATUSES:
        allowed = ", ".join(SESSION_STATUSES)
        return error(400, "invalid_request", f"status must be one of {allowed}")
    async with context(request).db().sessions() as db:
        rows = await list_sessions(db, status)
        return web.json_response({"sessions": [session_json(s, full=False) for s in rows]})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/sessions", create)
    app.router.add_post("/v1/practice", practice)
    app.router.add_get("/v1/catalog", catalog)
    app.router.add_get("/v1/sessions", list_live)
    app.router.add_get("/v1/sessions/{code}", get_one)
