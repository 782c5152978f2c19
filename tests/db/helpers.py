"""Test helpers: a user with a session and the questions of its scenario."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from core.config import Config, load_config, replace_settings
from db import ops
from db.queries.questions import questions_for
from db.queries.sessions import create_session
from db.queries.users import upsert_user
from db.tables import Answer, AuditLog, Evaluation

API_KEY = "test-api-key-123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
TOKEN_SECRET = "test-token-secret-456"  # signs student tokens; never the API key
FAST_AUDIO_BURST_S = 30
FAKE_MODELS = {f"models.{stage}.backend": "fake" for stage in ("vad", "asr", "llm", "tts", "eot")}


def server_config(db_url: str, journal_dir: str, **settings: Any) -> Config:
    """A worker config on `db_url` with fake models (the real ones are tested in
    tests/integration) and the test API key; `settings` are extra dotted overrides."""
    return replace_settings(
        load_config("config.yaml", {}),
        {
            "database.url": db_url,
            "server.api_key": API_KEY,
            "server.token_secret": TOKEN_SECRET,
            "writer.journal_dir": journal_dir,
            **FAKE_MODELS,
            # The fake ASR's constant transcript gives the viva policy nothing to judge: these
            # tests end answers on a fixed silence (tests/db/test_viva_listening.py does not).
            "turn.policy": "silence",
            # Several tests replay a clip faster than real time: a burst that lets them.
            "server.audio_burst_seconds": FAST_AUDIO_BURST_S,
            **settings,
        },
    )


async def wait_ready(client: Any, within: float = 30) -> None:
    """Models warm in the background after start-up; `/ping` turns 200 when they are ready."""
    deadline = asyncio.get_running_loop().time() + within
    while (await client.get("/ping")).status != 200:
        assert asyncio.get_running_loop().time() < deadline, "worker not ready"
        await asyncio.sleep(0.05)


@dataclass
class Viva:
    user_id: int
    session_id: int
    code: str
    question_ids: list[int]


async def make_viva(maker: Any, college: str = "medical") -> Viva:
    async with maker() as db, db.begin():
        user = await upsert_user(db, f"student_{secrets.token_hex(3)}")
        qs = await questions_for(db, college, (await _first_scenario(db, college)))
        sess = await create_session(db, user.id, college, qs[0].scenario_id)
        return Viva(user.id, sess.id, sess.session_code, [q.id for q in qs])


async def _first_scenario(db: Any, college: str) -> str:
    from db.tables import QuestionBank

    return (
        await db.execute(
            select(QuestionBank.scenario_id)
            .where(QuestionBank.college_type == college)
            .order_by(QuestionBank.scenario_id)
            .limit(1)
        )
    ).scalar_one()


def answer_and_evaluation(viva: Viva, n: int, score: float = 7.0) -> tuple[ops.Upsert, ops.Upsert]:
    q = viva.question_ids[n % len(viva.question_ids)]
    answer = ops.upsert(
        "answers",
        session_id=viva.session_id,
        question_bank_id=q,
        question_number=n + 1,  # one answer row per question number of a session
        transcribed_text=f"answer {n}",
        confidence_score=0.9,
    )
    evaluation = ops.upsert(
        "evaluations",
        answer_id=answer.row["id"],
        session_id=viva.session_id,
        evaluator_type="keyword_match",
        score_obtained=score,
        max_score=10.0,
        percentage_correct=score * 10,
        feedback_type="partial",
        latency_ms=250.0 + n,
    )
    return answer, evaluation


async def count_ids(maker: Any, model: Any, ids: list[int]) -> tuple[int, int]:
    """(rows found among `ids`, rows in the table whose id is in `ids` more than once)."""
    found = 0
    dup = 0
    async with maker() as db:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = (
                await db.execute(
                    select(model.id, func.count()).where(model.id.in_(chunk)).group_by(model.id)
                )
            ).all()
            found += len(rows)
            dup += sum(1 for _, c in rows if c > 1)
    return found, dup


TABLE_MODELS = {"answers": Answer, "evaluations": Evaluation, "audit_logs": AuditLog}
