"""Logging set-up. Our code logs ids and outcomes, never names, phones, message text,
document contents or SDP: see STYLE.md."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError


class MalformedRequests(logging.Filter):
    """aiohttp answers a request it cannot parse (a control character in a header, say)
    with 400 and logs the error with its traceback: a client's mistake, not ours, and
    one that anyone can repeat to flood the log. Logged as one line at INFO instead,
    without the offending bytes (they are the client's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = (
                "malformed request answered %s: %s",
                (
                    error.code,
                    type(error).__name__,
                ),
            )
            record.exc_info, record.exc_text = None, None
        return True


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Database drivers log statements with their bound parameters (patient data) at
    # DEBUG: keep them quiet even when the rest of the server is debugged.
    for name in ("sqlalchemy.engine", "aiosqlite", "asyncpg"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(MalformedRequests())
