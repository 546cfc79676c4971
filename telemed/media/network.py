"""The local addresses the media may use (``TELEMED_MEDIA_ADDRESSES``).

aioice asks ``aioice.ice.get_host_addresses`` for the host candidates of every ICE
connection, with no per-connection setting: the choice is process-wide, so the app makes
it once, at start-up (``telemed.app``), not a handler or a room.
"""

from __future__ import annotations

import aioice.ice


def bind_media_addresses(addresses: list[str]) -> None:
    """Offer only these local addresses as ICE host candidates (aioice would offer every
    interface but loopback; tests and closed networks need exactly these)."""
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool = True, use_ipv6: bool = False) -> list[str]:
        return list(chosen)

    aioice.ice.get_host_addresses = host_addresses
