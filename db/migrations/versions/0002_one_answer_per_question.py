"""one answer row per question of a session, the current question's progress, keyword
synonyms and the LLM's justification of a mark

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 01:05:00

A follow-up's answer used to be a row of its own; every row held everything said to the question
so far, joined, so the latest row of a question is the whole answer. Earlier rows of a question
(and their evaluations) are removed before the constraint is added.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SUPERSEDED = """
SELECT id FROM (
    SELECT id, ROW_NUMBER() OVER (
        PARTITION BY session_id, question_number ORDER BY created_at DESC, id DESC
    ) AS rn FROM answers
) ranked WHERE rn > 1
"""


def upgrade() -> None:
    op.execute(f"DELETE FROM evaluations WHERE answer_id IN ({_SUPERSEDED})")
    op.execute(f"DELETE FROM answers WHERE id IN ({_SUPERSEDED})")
    with op.batch_alter_table('answers', schema=None) as batch_op:
        batch_op.create_unique_constraint(
            batch_op.f('uq_answers_session_id_question_number'), ['session_id', 'question_number']
        )
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('progress', sa.JSON(), nullable=True))
    with op.batch_alter_table('question_banks', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('keyword_synonyms', sa.JSON(), nullable=False, server_default='{}')
        )
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('justification', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_column('justification')
    with op.batch_alter_table('question_banks', schema=None) as batch_op:
        batch_op.drop_column('keyword_synonyms')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('progress')
    with op.batch_alter_table('answers', schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f('uq_answers_session_id_question_number'), type_='unique'
        )
