"""Idempotent seed: question banks of every college type, configuration defaults, an admin user.

Running it twice changes nothing the second time; question text edited in the YAML files is
updated in place (same id), and configuration values an operator changed are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.live_settings import LIVE_SETTINGS
from core.vocabulary import COLLEGE_TYPES
from db.queries.configuration import encode_value
from db.tables import Configuration, QuestionBank, User

BANKS_DIR = Path(__file__).with_name("seed_data") / "question_banks"
QUESTION_FIELDS = (
    "question_text",
    "category",
    "difficulty_level",
    "keywords",
    "expected_keywords",
    "keyword_synonyms",
    "max_score",
    "min_score",
    "answer_guidelines",
)


class SeedError(ValueError):
    """A question bank file is malformed."""


@dataclass
class SeedReport:
    questions_added: int = 0
    questions_updated: int = 0
    settings_added: int = 0
    admin_created: bool = False


def load_banks(directory: Path = BANKS_DIR) -> list[dict[str, Any]]:
    """Every question of every bank file, flattened, validated enough to seed."""
    rows: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        college = doc.get("college_type")
        if college not in COLLEGE_TYPES:
            raise SeedError(f"{path.name}: unknown college_type {college!r}")
        for scenario in doc.get("scenarios", []):
            for q in scenario.get("questions", []):
                missing = [f for f in ("question_number", "question_text") if f not in q]
                if missing:
                    raise SeedError(
                        f"{path.name}: {scenario.get('scenario_id')}: missing {missing}"
                    )
                rows.append(
                    {
                        "college_type": college,
                        "scenario_id": scenario["scenario_id"],
                        "scenario_name": scenario["scenario_name"],
                        "question_number": int(q["question_number"]),
                        **{f: q[f] for f in QUESTION_FIELDS if f in q},
                    }
                )
    return rows


async def seed_questions(db: AsyncSession, rows: list[dict[str, Any]], report: SeedReport) -> None:
    existing = {
        (q.college_type, q.scenario_id, q.question_number): q
        for q in (await db.execute(select(QuestionBank))).scalars()
    }
    for row in rows:
        key = (row["college_type"], row["scenario_id"], row["question_number"])
        current = existing.get(key)
        if current is None:
            db.add(QuestionBank(**row))
            report.questions_added += 1
            continue
        changed = False
        for field, value in row.items():
            if getattr(current, field) != value:
                setattr(current, field, value)
                changed = True
        report.questions_updated += changed


async def seed_settings(db: AsyncSession, report: SeedReport) -> None:
    present = set((await db.execute(select(Configuration.config_key))).scalars())
    for key, (_path, vtype, default, description) in LIVE_SETTINGS.items():
        if key in present or default is None:  # None: applied only when a row is added
            continue
        db.add(
            Configuration(
                config_key=key,
                config_value=encode_value(default, vtype),
                value_type=vtype,
                description=description,
            )
        )
        report.settings_added += 1


async def seed_admin(db: AsyncSession, report: SeedReport, username: str = "admin") -> None:
    found = (await db.execute(select(User).where(User.username == username))).scalar_one_or_none()
    if found is None:
        db.add(
            User(
                username=username,
                email=f"{username}@localhost",
                role="admin",
                full_name="Administrator",
            )
        )
        report.admin_created = True


async def seed(db: AsyncSession, banks_dir: Path = BANKS_DIR) -> SeedReport:
    """Seed everything in the caller's transaction."""
    report = SeedReport()
    await seed_questions(db, load_banks(banks_dir), report)
    await seed_settings(db, report)
    await seed_admin(db, report)
    await db.flush()
    return report
