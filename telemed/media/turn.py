"""Short-lived TURN credentials for each join (the TURN REST API scheme that coturn's
``use-auth-secret`` checks): the username is ``<expiry in Unix seconds>:<user id>`` and
the credential ``base64(HMAC-SHA1(secret, username))``. Nobody holds a credential that
outlives their consultation by more than ``TELEMED_TURN_TTL_HOURS``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import datetime, timedelta
from typing import Any

from telemed.settings import Settings


def turn_credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def ice_servers_for(
    settings: Settings, *, user_id: uuid.UUID, now: datetime
) -> list[dict[str, Any]]:
    """The ICE servers a participant's browser gets on joining: the configured ones, and
    with ``TELEMED_TURN_SECRET`` a TURN entry with credentials of this user's own."""
    servers = list(settings.ice_servers)
    if settings.turn_secret and settings.turn_urls:
        expiry = int((now + timedelta(hours=settings.turn_ttl_hours)).timestamp())
        username = f"{expiry}:{user_id}"
        servers.append(
            {
                "urls": list(settings.turn_urls),
                "username": username,
                "credential": turn_credential(settings.turn_secret, username),
            }
        )
    return servers
