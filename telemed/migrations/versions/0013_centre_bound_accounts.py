"""centre-bound accounts: the medical centre a manager or a system client is bound to

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The foreign key goes inline with the new column: on SQLite a separate constraint
    # would make Alembic copy and drop ``user_account``, and with foreign keys on, that
    # drop would delete (cascade) every session, code and document row that points at it.
    op.add_column(
        "user_account",
        sa.Column(
            "centre_id",
            sa.Uuid(),
            sa.ForeignKey("centre.id", name=op.f("fk_user_account_centre_id_centre")),
            nullable=True,
        ),
        inline_references=True,
    )


def downgrade() -> None:
    # SQLite cannot drop a column that a foreign key uses; the batch copies the table
    # (run it with foreign keys off there, for the reason above).
    with op.batch_alter_table("user_account", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_user_account_centre_id_centre"), type_="foreignkey")
        batch_op.drop_column("centre_id")
