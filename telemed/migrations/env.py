"""Alembic environment: runs on the connection that ``telemed.db.upgrade`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from telemed.db import load_models

target_metadata = load_models()


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `telemed db upgrade`")
run(connection)
