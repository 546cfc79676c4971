"""A list costs a fixed number of queries, however long it is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from telemed import keys
from tests.conftest import AppClient
from tests.flows import make_centre, make_doctor, make_patient, manager_token, ok, request_to_centre


@contextmanager
def counted(client: AppClient) -> Iterator[list[str]]:
    """The SQL statements the server runs meanwhile."""
    app = client.app
    assert app is not None
    engine = app[keys.ENGINE].sync_engine
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


async def test_the_consultation_list_costs_the_same_for_1_and_for_50(client: AppClient) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    await make_doctor(client, manager, centre["id"])
    costs = {}
    for target in (1, 50):
        while True:
            listed = await ok(client, "GET", "/consultations", manager)
            if len(listed["items"]) >= target:
                break
            patient = await make_patient(client)  # a name of their own for each
            await request_to_centre(client, patient, centre["id"])
        with counted(client) as statements:
            listed = await ok(client, "GET", "/consultations", manager)
        assert len(listed["items"]) == target
        assert all(item["patient"]["full_name"] for item in listed["items"])
        costs[target] = len(statements)
    assert costs[1] == costs[50], costs
