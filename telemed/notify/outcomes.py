"""What a sender answers: delivered (``Sent``), kept in the outbox (``Kept``), or an error
that the worker retries (``DeliveryError``) or gives up on at once
(``PermanentDeliveryError``).

Error texts are written by the senders, never copied from a gateway's answer, so that
they carry no recipient or message text into the database or the logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DeliveryError(Exception):
    """The message did not go out this time; it is tried again later (the text is safe
    to store and log)."""


class PermanentDeliveryError(DeliveryError):
    """The message cannot go out, and trying again would not change that (the gateway
    refused the credentials, the number or the text): the worker marks it failed at once
    instead of retrying."""


class DeliveryStatus(StrEnum):
    """Where an SMS is, as its provider reports it (each provider's own codes mapped to
    these)."""

    ACCEPTED = "accepted"  # the provider took it (queued, on moderation)
    SENT = "sent"  # handed to the mobile operator, no report yet
    DELIVERED = "delivered"  # the phone received it
    UNDELIVERED = "undelivered"  # final: it will not reach the phone

    @property
    def final(self) -> bool:
        return self in (DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERED)


@dataclass(frozen=True)
class Kept:
    """A sender's answer when nothing left the server: the message stays in the outbox,
    with its clear text (``clear``) or masked."""

    clear: bool


@dataclass(frozen=True)
class Sent:
    """A sender's answer when a provider took the message and named it: its id there
    (to ask for the delivery status later) and the status it reported."""

    provider_id: str
    status: DeliveryStatus
