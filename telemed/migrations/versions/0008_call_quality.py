"""call quality: each participant's call quality summary per consultation

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import telemed.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_quality",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("consultation_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("good_seconds", sa.Float(), nullable=False),
        sa.Column("weak_seconds", sa.Float(), nullable=False),
        sa.Column("poor_seconds", sa.Float(), nullable=False),
        sa.Column("freezes", sa.Integer(), nullable=False),
        sa.Column("freeze_seconds", sa.Float(), nullable=False),
        sa.Column("relay_seconds", sa.Float(), nullable=False),
        sa.Column("audio_only_seconds", sa.Float(), nullable=False),
        sa.Column("worst", sa.JSON(), nullable=True),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("updated_at", telemed.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["consultation_id"],
            ["consultation.id"],
            name=op.f("fk_call_quality_consultation_id_consultation"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user_account.id"], name=op.f("fk_call_quality_user_id_user_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_quality")),
        sa.UniqueConstraint(
            "consultation_id", "user_id", name=op.f("uq_call_quality_consultation_id_user_id")
        ),
    )
    with op.batch_alter_table("call_quality", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_call_quality_consultation_id"), ["consultation_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("call_quality", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_quality_consultation_id"))
    op.drop_table("call_quality")
