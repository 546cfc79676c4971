"""password reset codes: a code sent by SMS sets a new password without the old one

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import telemed.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "password_reset_code",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", telemed.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", telemed.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", telemed.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_password_reset_code_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_reset_code")),
    )
    with op.batch_alter_table("password_reset_code", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_password_reset_code_user_id"), ["user_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("password_reset_code", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_password_reset_code_user_id"))
    op.drop_table("password_reset_code")
