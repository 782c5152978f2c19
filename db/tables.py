"""The eight tables of SPEC.md as SQLAlchemy 2.0 models, portable across SQLite and PostgreSQL.

Enums are stored as constrained strings (no native PostgreSQL enum types) so one migration serves
both dialects. Every primary key is an application-generated time-ordered id (`db.ids.new_id`),
so rows can be batched and replayed idempotently by the write-behind writer.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.vocabulary import COLLEGE_TYPES, FEEDBACK_TYPES, GRADES, SESSION_STATUSES
from db.ids import new_id

ROLES = ("student", "examiner", "admin")
USER_STATUSES = ("active", "inactive", "suspended")
DIFFICULTIES = ("easy", "medium", "hard")
EVALUATOR_TYPES = ("keyword_match", "llm_based", "manual", "hybrid")
VALUE_TYPES = ("string", "integer", "float", "boolean", "json")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _enum(name: str, values: tuple[str, ...]) -> Enum:
    return Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[str]: JSON}


class _Stamped:
    id: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, autoincrement=False, default=new_id
    )
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now(), nullable=False
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True),
        default=utcnow,
        onupdate=utcnow,
        server_default=func.now(),
        nullable=False,
    )


class User(_Stamped, Base):
    __tablename__ = "users"
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(_enum("user_role", ROLES), index=True, default="student")
    college_type: Mapped[str | None] = mapped_column(
        _enum("user_college", COLLEGE_TYPES), index=True
    )
    status: Mapped[str] = mapped_column(_enum("user_status", USER_STATUSES), default="active")
    last_login: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Session(_Stamped, Base):
    __tablename__ = "sessions"
    __table_args__ = (Index(None, "created_at"),)
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    college_type: Mapped[str] = mapped_column(_enum("session_college", COLLEGE_TYPES))
    scenario_id: Mapped[str] = mapped_column(String(64))
    session_code: Mapped[str] = mapped_column(String(16), unique=True)
    status: Mapped[str] = mapped_column(
        _enum("session_status", SESSION_STATUSES), index=True, default="pending"
    )
    start_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    total_score: Mapped[float] = mapped_column(Float, default=0.0)
    total_questions: Mapped[int] = mapped_column(Integer, default=12)
    current_question: Mapped[int] = mapped_column(Integer, default=0)
    questions_answered: Mapped[int] = mapped_column(Integer, default=0)
    # Where the current question stands (what was said to it, follow-ups and time used), so
    # another worker can resume it: `ExamFlow.checkpoint()`, written at every turn.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    voice_detected_count: Mapped[int] = mapped_column(Integer, default=0)
    avg_latency_ms: Mapped[float | None] = mapped_column(Float)
    max_latency_ms: Mapped[float | None] = mapped_column(Float)

    user: Mapped[User] = relationship()
    answers: Mapped[list[Answer]] = relationship(
        back_populates="session", order_by="Answer.id", passive_deletes=True
    )
    evaluations: Mapped[list[Evaluation]] = relationship(order_by="Evaluation.id", viewonly=True)
    result: Mapped[Result | None] = relationship(viewonly=True)


class QuestionBank(_Stamped, Base):
    __tablename__ = "question_banks"
    __table_args__ = (UniqueConstraint("college_type", "scenario_id", "question_number"),)
    college_type: Mapped[str] = mapped_column(_enum("question_college", COLLEGE_TYPES), index=True)
    scenario_id: Mapped[str] = mapped_column(String(64), index=True)
    scenario_name: Mapped[str] = mapped_column(String(255))
    question_number: Mapped[int] = mapped_column(Integer)
    question_text: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(64))
    difficulty_level: Mapped[str] = mapped_column(
        _enum("difficulty", DIFFICULTIES), index=True, default="medium"
    )
    keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    expected_keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Per expected keyword, words or phrases that say the same ("prioritise" for "priority").
    keyword_synonyms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    max_score: Mapped[int] = mapped_column(Integer, default=10)
    min_score: Mapped[int] = mapped_column(Integer, default=0)
    answer_guidelines: Mapped[str | None] = mapped_column(Text)


class Answer(_Stamped, Base):
    __tablename__ = "answers"
    # One row per question of a session, whoever writes it: a follow-up's answer updates it.
    __table_args__ = (UniqueConstraint("session_id", "question_number"),)
    session_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    question_bank_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("question_banks.id", ondelete="RESTRICT"), index=True
    )
    question_number: Mapped[int] = mapped_column(Integer)
    answer_text: Mapped[str | None] = mapped_column(Text)
    answer_audio_path: Mapped[str | None] = mapped_column(String(512))
    audio_duration_seconds: Mapped[float | None] = mapped_column(Float)
    transcribed_text: Mapped[str | None] = mapped_column(Text)
    confidence_score: Mapped[float | None] = mapped_column(Float)
    is_complete: Mapped[bool] = mapped_column(Boolean, default=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    session: Mapped[Session] = relationship(back_populates="answers")
    evaluation: Mapped[Evaluation | None] = relationship(
        back_populates="answer", passive_deletes=True
    )


class Evaluation(_Stamped, Base):
    __tablename__ = "evaluations"
    answer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("answers.id", ondelete="CASCADE"), unique=True
    )
    session_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    evaluator_type: Mapped[str] = mapped_column(_enum("evaluator_type", EVALUATOR_TYPES))
    score_obtained: Mapped[float] = mapped_column(Float)
    max_score: Mapped[float] = mapped_column(Float)
    percentage_correct: Mapped[float] = mapped_column(Float)
    feedback: Mapped[str | None] = mapped_column(Text)
    # Why the LLM gave its mark, tied to the guidelines (LLM evaluators); None for keywords.
    justification: Mapped[str | None] = mapped_column(Text)
    feedback_type: Mapped[str] = mapped_column(_enum("feedback_type", FEEDBACK_TYPES), index=True)
    matched_keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    missing_keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    processing_time_ms: Mapped[float | None] = mapped_column(Float)

    answer: Mapped[Answer] = relationship(back_populates="evaluation")


class Result(_Stamped, Base):
    __tablename__ = "results"
    session_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("sessions.id", ondelete="CASCADE"), unique=True
    )
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    college_type: Mapped[str] = mapped_column(_enum("result_college", COLLEGE_TYPES), index=True)
    total_score: Mapped[float] = mapped_column(Float)
    max_score: Mapped[float] = mapped_column(Float)
    percentage_correct: Mapped[float] = mapped_column(Float)
    grade: Mapped[str] = mapped_column(_enum("grade", GRADES))
    pass_status: Mapped[bool] = mapped_column(Boolean, index=True)
    result_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    certificate_path: Mapped[str | None] = mapped_column(String(512))
    generated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditLog(_Stamped, Base):
    __tablename__ = "audit_logs"
    __table_args__ = (
        Index(None, "created_at"),
        Index(None, "resource_type", "resource_id"),
    )
    session_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("sessions.id", ondelete="SET NULL")
    )
    user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )
    action: Mapped[str] = mapped_column(String(64), index=True)
    resource_type: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default="success")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))


class Configuration(_Stamped, Base):
    __tablename__ = "configuration"
    config_key: Mapped[str] = mapped_column(String(128), unique=True)
    config_value: Mapped[str] = mapped_column(Text)
    value_type: Mapped[str] = mapped_column(_enum("value_type", VALUE_TYPES), default="string")
    description: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)


def table(model: type[Base]) -> Table:
    """The Core table of a model, typed as a Table (mypy sees `__table__` as a FromClause)."""
    return cast(Table, model.__table__)


ALL_TABLES = [
    table(m)
    for m in (User, Session, QuestionBank, Answer, Evaluation, Result, AuditLog, Configuration)
]
