"""Outbox delivery: claims due messages atomically and sends them through the senders."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register the outbox delivery job (and create the senders) on ``app``."""
