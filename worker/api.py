"""HTTP API for the exam platform (API key): create a session, read one, list live ones; and,
without a key, the catalog of scenarios and guest practice sessions when the config allows them.

Everything here is outside the voice path, so it uses the query layer directly; errors are
typed JSON bodies `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from db.queries.audit import log_action
from db.queries.questions import questions_for, scenarios
from db.queries.sessions import create_session, get_by_code, list_sessions
from db.queries.users import upsert_user
from db.tables import Session
from worker.config import CollegeType, Config
from worker.live import LiveSessions, Refused
from worker.resources import Database
from worker.tokens import issue_token

CONFIG = web.AppKey("config", Config)
DATABASE = web.AppKey("database", Database)
LIVE = web.AppKey("live_sessions", LiveSessions)
_M = TypeVar("_M", bound=BaseModel)


class CreateSession(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    student_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    full_name: str | None = Field(None, max_length=255)
    email: str | None = Field(None, max_length=255)
    college_type: CollegeType
    scenario_id: str = Field(min_length=1, max_length=64)


class CreatePractice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=80)
    college_type: CollegeType
    scenario_id: str = Field(min_length=1, max_length=64)


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def require_api_key(request: web.Request) -> web.Response | None:
    key = request.app[CONFIG].server.api_key
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    given = given or request.headers.get("X-API-Key", "")
    if not hmac.compare_digest(given.encode(), key.encode()):
        return error(401, "unauthorized", "a valid API key is required (Authorization: Bearer)")
    return None


def ws_url(request: web.Request, code: str, token: str) -> str:
    base = request.app[CONFIG].server.public_url
    if base:
        base = base.rstrip("/").replace("https://", "wss://").replace("http://", "ws://")
    else:
        scheme = "wss" if request.secure else "ws"
        base = f"{scheme}://{request.host}"
    return f"{base}/v1/sessions/{code}/stream?token={token}"


async def _body(request: web.Request, model: type[_M]) -> _M | web.Response:
    try:
        return model.model_validate(await request.json())
    except ValueError as exc:
        detail = exc.errors()[0] if isinstance(exc, ValidationError) else {"msg": str(exc)}
        where = ".".join(str(p) for p in detail.get("loc", ()))
        return error(400, "invalid_request", f"{where}: {detail['msg']}".lstrip(": "))


async def create(request: web.Request) -> web.Response:
    if (denied := require_api_key(request)) is not None:
        return denied
    body = await _body(request, CreateSession)
    return body if isinstance(body, web.Response) else await _open(request, body)


async def practice(request: web.Request) -> web.Response:
    """A guest viva started from the student page (config `server.practice_sessions`)."""
    if not request.app[CONFIG].server.practice_sessions:
        return error(403, "practice_disabled", "practice sessions are off on this worker")
    body = await _body(request, CreatePractice)
    if isinstance(body, web.Response):
        return body
    guest = CreateSession(
        student_id=f"guest-{secrets.token_hex(6)}",
        full_name=body.name,
        college_type=body.college_type,
        scenario_id=body.scenario_id,
    )
    return await _open(request, guest)


async def catalog(request: web.Request) -> web.Response:
    """College types and their scenarios, for the student page's practice form."""
    async with request.app[DATABASE].sessions() as db:
        rows = await scenarios(db)
    by_type: dict[str, list[dict[str, str]]] = {}
    for college, scenario_id, name in rows:
        by_type.setdefault(college, []).append({"id": scenario_id, "name": name})
    return web.json_response(
        {
            "practice": request.app[CONFIG].server.practice_sessions,
            "college_types": [{"id": c, "scenarios": s} for c, s in by_type.items()],
        }
    )


async def _open(request: web.Request, body: CreateSession) -> web.Response:
    cfg, database = request.app[CONFIG], request.app[DATABASE]
    if not database.writer.healthy:
        return error(503, "unhealthy", "the worker's journal is over its limit; try another worker")
    try:
        request.app[LIVE].check_capacity()
    except Refused as exc:
        return error(503, exc.code, exc.message)
    async with database.sessions() as db, db.begin():
        questions = await questions_for(db, body.college_type, body.scenario_id)
        if not questions:
            return error(
                404, "unknown_scenario", f"no questions for {body.college_type}/{body.scenario_id}"
            )
        user = await upsert_user(
            db,
            body.student_id,
            body.email,
            full_name=body.full_name,
            college_type=body.college_type,
        )
        total = min(cfg.exam.total_questions, len(questions))
        sess = await create_session(db, user.id, body.college_type, body.scenario_id, total)
        await log_action(
            db,
            "session.created",
            session_id=sess.id,
            user_id=user.id,
            resource_type="session",
            resource_id=sess.session_code,
            ip_address=request.remote,
            user_agent=request.headers.get("User-Agent"),
        )
    token = issue_token(sess.session_code, cfg.server.api_key, cfg.server.student_token_ttl_seconds)
    return web.json_response(
        {
            "session_code": sess.session_code,
            "token": token,
            "ws_url": ws_url(request, sess.session_code, token),
            "expires_in": cfg.server.student_token_ttl_seconds,
            "total_questions": total,
        },
        status=201,
    )


def session_json(sess: Session, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "session_code": sess.session_code,
        "status": sess.status,
        "college_type": sess.college_type,
        "scenario_id": sess.scenario_id,
        "current_question": sess.current_question,
        "questions_answered": sess.questions_answered,
        "total_questions": sess.total_questions,
        "avg_latency_ms": sess.avg_latency_ms,
        "max_latency_ms": sess.max_latency_ms,
        "start_time": sess.start_time.isoformat() if sess.start_time else None,
        "end_time": sess.end_time.isoformat() if sess.end_time else None,
    }
    if full:
        out["answers"] = [
            {
                "question_number": a.question_number,
                "transcript": a.transcribed_text,
                "confidence": a.confidence_score,
                "audio_duration_seconds": a.audio_duration_seconds,
                "evaluation": None
                if a.evaluation is None
                else {
                    "score": a.evaluation.score_obtained,
                    "max_score": a.evaluation.max_score,
                    "feedback_type": a.evaluation.feedback_type,
                    "feedback": a.evaluation.feedback,
                    "latency_ms": a.evaluation.latency_ms,
                },
            }
            for a in sess.answers
        ]
        r = sess.result
        out["result"] = (
            None
            if r is None
            else {
                "total_score": r.total_score,
                "max_score": r.max_score,
                "percentage": r.percentage_correct,
                "grade": r.grade,
                "passed": r.pass_status,
                "details": r.result_json,
            }
        )
    return out


async def get_one(request: web.Request) -> web.Response:
    if (denied := require_api_key(request)) is not None:
        return denied
    code = request.match_info["code"]
    async with request.app[DATABASE].sessions() as db:
        sess = await get_by_code(db, code, full=True)
        if sess is None:
            return error(404, "not_found", f"no session {code}")
        return web.json_response(session_json(sess, full=True))


async def list_live(request: web.Request) -> web.Response:
    if (denied := require_api_key(request)) is not None:
        return denied
    status = request.query.get("status", "in_progress")
    allowed: tuple[Literal["pending", "in_progress", "completed", "terminated"], ...] = (
        "pending",
        "in_progress",
        "completed",
        "terminated",
    )
    if status not in allowed:
        return error(400, "invalid_request", f"status must be one of {', '.join(allowed)}")
    async with request.app[DATABASE].sessions() as db:
        rows = await list_sessions(db, status)
        return web.json_response({"sessions": [session_json(s, full=False) for s in rows]})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/sessions", create)
    app.router.add_post("/v1/practice", practice)
    app.router.add_get("/v1/catalog", catalog)
    app.router.add_get("/v1/sessions", list_live)
    app.router.add_get("/v1/sessions/{code}", get_one)
