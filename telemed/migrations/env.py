"""Alembic environment: runs on the connection that ``telemed.db.upgrade`` hands over."""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from telemed.db import StrEnumType, load_models

target_metadata = load_models()


def render_item(kind: str, item: Any, autogen_context: Any) -> str | Literal[False]:
    """Render our enum columns as the plain VARCHAR they are in the database."""
    if kind == "type" and isinstance(item, StrEnumType):
        impl = item.impl_instance
        assert isinstance(impl, sa.String)
        return f"sa.String(length={impl.length})"
    return False


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `telemed db upgrade`")
run(connection)
