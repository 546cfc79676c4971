"""Logging set-up. Our code logs ids and outcomes, never names, phones, message text,
document contents or SDP: see STYLE.md."""

from __future__ import annotations

import logging


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Database drivers log statements with their bound parameters (patient data) at
    # DEBUG: keep them quiet even when the rest of the server is debugged.
    for name in ("sqlalchemy.engine", "aiosqlite", "asyncpg"):
        logging.getLogger(name).setLevel(logging.WARNING)
