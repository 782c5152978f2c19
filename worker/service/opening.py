"""Creating a viva session, shared by `POST /v1/sessions` and the RunPod `viva` and `session`
jobs.

`open_session` checks the worker can take it, creates the student (or updates them) and a
pending session with its code in one transaction, audits it, and issues the student token.
Refusals are `core.errors.CodedError`s (`OpenRefused`, or the live sessions' `Refused` when the
worker is full) with the HTTP status and the typed error code the API answers with.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.config import Config
from core.errors import CodedError
from core.text import PlainText
from core.vocabulary import CollegeType, RequestErrorCode
from db.queries.audit import log_action
from db.queries.questions import questions_for
from db.queries.sessions import create_session
from db.queries.users import EmailInUse, upsert_user
from db.tables import Session, User
from worker.service.live import LiveSessions
from worker.service.resources import Database
from worker.service.tokens import issue_token, signing_secret

STUDENT_ID_PATTERN = r"^[A-Za-z0-9_.@-]+$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
# Names the platform's students may not take: the seeded staff accounts and the like. Existing
# users who are not students are refused too (`open_session`), whatever their name.
RESERVED_IDS = frozenset({"admin", "administrator", "root", "system", "examiner", "monitor"})


class CreateSession(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    student_id: str = Field(min_length=1, max_length=64, pattern=STUDENT_ID_PATTERN)
    full_name: PlainText | None = Field(None, max_length=255)
    email: PlainText | None = Field(None, max_length=255, pattern=EMAIL_PATTERN)
    college_type: CollegeType
    scenario_id: PlainText = Field(min_length=1, max_length=64)

    @field_validator("student_id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower() in RESERVED_IDS:
            raise ValueError(f"{value!r} is reserved")
        return value


class OpenRefused(CodedError):
    def __init__(self, status: int, code: RequestErrorCode, message: str):
        super().__init__(code, message, status)


@dataclass(frozen=True)
class Opened:
    session_id: int
    user_id: int
    code: str
    token: str
    expires_in: int
    total_questions: int


async def open_session(
    cfg: Config,
    database: Database,
    live: LiveSessions | None,
    body: CreateSession,
    *,
    total_questions: int | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    guest: bool = False,
) -> Opened:
    """A new pending session for `body`. `live`: the sessions it will join when the student
    connects (capacity is checked); None for a session that never goes live (a recorded viva).
    `total_questions` caps the exam below `cfg.exam.total_questions`. `guest`: a practice
    session, held to the guest limits of `LiveSessions` and holding its slot from now on."""
    if not database.writer.healthy:
        raise OpenRefused(
            503, "unhealthy", "the worker's journal is over its limit; try another worker"
        )
    claim = None
    if live is not None and guest:  # Refused, 503
        claim = live.claim_guest()
    elif live is not None:
        live.check_capacity()
    try:
        sess, user, total = await _store(
            cfg, database, body, total_questions, ip_address, user_agent
        )
    except BaseException:
        if live is not None and claim is not None:
            live.release(claim)
        raise
    if live is not None and claim is not None:
        live.name_guest(claim, sess.session_code)
    ttl = cfg.server.student_token_ttl_seconds
    token = issue_token(sess.session_code, signing_secret(cfg.server), ttl)
    return Opened(sess.id, user.id, sess.session_code, token, ttl, total)


async def _store(
    cfg: Config,
    database: Database,
    body: CreateSession,
    total_questions: int | None,
    ip_address: str | None,
    user_agent: str | None,
) -> tuple[Session, User, int]:
    """The student (created or updated) and a pending session, audited, in one transaction."""
    async with database.sessions() as db, db.begin():
        questions = await questions_for(db, body.college_type, body.scenario_id)
        if not questions:
            raise OpenRefused(
                404, "unknown_scenario", f"no questions for {body.college_type}/{body.scenario_id}"
            )
        try:
            user = await upsert_user(
                db,
                body.student_id,
                body.email,
                full_name=body.full_name,
                college_type=body.college_type,
            )
        except EmailInUse:
            raise OpenRefused(
                409, "conflict", "that email belongs to another user; give another or none"
            ) from None
        if user.role != "student":
            raise OpenRefused(409, "conflict", f"{body.student_id!r} is not a student account")
        total = min(cfg.exam.total_questions, len(questions), total_questions or len(questions))
        sess = await create_session(db, user.id, body.college_type, body.scenario_id, total)
        await log_action(
            db,
            "session.created",
            session_id=sess.id,
            user_id=user.id,
            resource_type="session",
            resource_id=sess.session_code,
            ip_address=ip_address,
            user_agent=user_agent,  # stripped and bounded by log_action
        )
    return sess, user, total
