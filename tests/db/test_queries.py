"""The query layer on both dialects: users, sessions, questions, results, audit, configuration."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from core.config import ConfigError, load_config
from core.live_settings import LIVE_SETTINGS
from core.vocabulary import COLLEGE_TYPES
from db.live_settings import apply_live_settings
from db.queries import configuration as conf
from db.queries.audit import log_action, logs_for_session
from db.queries.questions import questions_for, scenarios
from db.queries.sessions import (
    InvalidTransition,
    complete_session,
    get_by_code,
    list_sessions,
    start_session,
    terminate_session,
)
from db.queries.users import get_user, upsert_user
from db.seed import seed
from db.tables import Answer, Configuration, Evaluation, QuestionBank, User
from tests.db.helpers import answer_and_evaluation, make_viva


async def test_seed_covers_every_college_and_is_idempotent(db_session) -> None:  # type: ignore[no-untyped-def]
    async with db_session() as db:
        found = await scenarios(db)
        for college in COLLEGE_TYPES:
            mine = [s for s in found if s[0] == college]
            assert len(mine) >= 2, college
            for _, scenario_id, _ in mine:
                qs = await questions_for(db, college, scenario_id)
                assert len(qs) >= 12
                assert [q.question_number for q in qs] == sorted(q.question_number for q in qs)
                assert all(q.expected_keywords and q.answer_guidelines for q in qs)
        n_questions = (await db.execute(select(func.count()).select_from(QuestionBank))).scalar()
    async with db_session() as db, db.begin():
        report = await seed(db)
    assert (report.questions_added, report.questions_updated, report.settings_added) == (0, 0, 0)
    assert not report.admin_created
    async with db_session() as db:
        again = (await db.execute(select(func.count()).select_from(QuestionBank))).scalar()
        admin = (await db.execute(select(User).where(User.role == "admin"))).scalar_one()
        keys = set((await db.execute(select(Configuration.config_key))).scalars())
    assert again == n_questions and admin.username == "admin"
    seeded = {k for k, spec in LIVE_SETTINGS.items() if spec[2] is not None}
    assert seeded <= keys
    assert not (set(LIVE_SETTINGS) - seeded) & keys  # the turn policy's keys wait for an operator


async def test_users_upsert(db_session) -> None:  # type: ignore[no-untyped-def]
    async with db_session() as db, db.begin():
        a = await upsert_user(db, "asha", full_name="Asha", college_type="law")
        b = await upsert_user(db, "asha", email="asha@example.org")
        assert a.id == b.id and b.email == "asha@example.org" and b.full_name == "Asha"
    async with db_session() as db:
        assert (await get_user(db, a.id)).college_type == "law"  # type: ignore[union-attr]


async def test_session_lifecycle_and_result(db_session) -> None:  # type: ignore[no-untyped-def]
    viva = await make_viva(db_session)
    assert re.fullmatch(r"VIVA-[2-9A-HJ-NP-Z]{6}", viva.code)
    async with db_session() as db, db.begin():
        await start_session(db, viva.session_id)
        for i, score in enumerate([9, 8, 8, 7, 9, 10, 8, 9, 8, 9, 10, 9]):
            answer, evaluation = answer_and_evaluation(viva, i, score=score)
            db.add(Answer(**answer.row))
            await db.flush()
            db.add(Evaluation(**evaluation.row))
    async with db_session() as db:
        active = await list_sessions(db, "in_progress")
        assert viva.session_id in [s.id for s in active]
    async with db_session() as db, db.begin():
        result = await complete_session(db, viva.session_id)
    assert result.total_score == 104 and result.max_score == 120
    assert result.grade == "A" and result.pass_status
    assert len(result.result_json["questions"]) == 12
    async with db_session() as db:
        full = await get_by_code(db, viva.code.lower(), full=True)
        assert full is not None and full.status == "completed" and full.duration_seconds is not None
        assert len(full.answers) == 12 and all(a.evaluation for a in full.answers)
        assert len(full.evaluations) == 12 and full.result is not None
    async with db_session() as db, db.begin():
        with pytest.raises(InvalidTransition):
            await terminate_session(db, viva.session_id)


async def test_terminated_session_gets_a_result(db_session) -> None:  # type: ignore[no-untyped-def]
    viva = await make_viva(db_session)
    async with db_session() as db, db.begin():
        await start_session(db, viva.session_id)
        answer, evaluation = answer_and_evaluation(viva, 0, score=10)
        db.add(Answer(**answer.row))
        await db.flush()
        db.add(Evaluation(**evaluation.row))
    async with db_session() as db, db.begin():
        result = await terminate_session(db, viva.session_id)
    assert (result.total_score, result.max_score, result.grade) == (10, 120, "F")
    assert result.result_json["status"] == "terminated"


async def test_audit_log(db_session) -> None:  # type: ignore[no-untyped-def]
    viva = await make_viva(db_session)
    async with db_session() as db, db.begin():
        await log_action(db, "session.created", session_id=viva.session_id, details={"k": 1})
    async with db_session() as db:
        logs = await logs_for_session(db, viva.session_id)
    assert [(e.action, e.details) for e in logs] == [("session.created", {"k": 1})]


async def test_configuration_typed_values(db_session) -> None:  # type: ignore[no-untyped-def]
    async with db_session() as db, db.begin():
        assert await conf.get_setting(db, "vad_sensitivity") == 0.5
        assert await conf.get_setting(db, "asr_language") == "en"
        await conf.set_setting(db, "vad_sensitivity", 0.65)
        await conf.set_setting(db, "feature_flags", {"monitor": True})
        await conf.set_setting(db, "strict", True)
        with pytest.raises(conf.InvalidSetting):
            await conf.set_setting(db, "latency_target_ms", "fast", value_type="integer")
    async with db_session() as db:
        assert await conf.get_setting(db, "feature_flags") == {"monitor": True}
        assert await conf.get_setting(db, "strict") is True
        assert await conf.get_setting(db, "missing", 3) == 3
        live = await apply_live_settings(db, load_config("config.yaml", {}))
    assert live.turn.vad_threshold == 0.65


async def test_invalid_live_setting_fails_with_the_key(db_session) -> None:  # type: ignore[no-untyped-def]
    async with db_session() as db, db.begin():
        row = (
            await db.execute(
                select(Configuration).where(Configuration.config_key == "llm_temperature")
            )
        ).scalar_one()
        row.config_value = "very hot"
    async with db_session() as db:
        with pytest.raises(ConfigError, match="llm_temperature"):
            await apply_live_settings(db, load_config("config.yaml", {}))
