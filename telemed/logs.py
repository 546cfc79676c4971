"""Logging set-up. Our code logs ids and outcomes, never names, phones, message text,
document contents or SDP: see STYLE.md."""

from __future__ import annotations

import logging


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # SQL echo would print bound parameters: patient data.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
