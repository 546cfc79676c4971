"""Where outbox messages go: kept in the outbox (default), an SMS gateway (a webhook, or
a provider: ``sms_providers``), an SMTP server.

A sender delivers one message (or, the ``outbox`` backend, answers that it keeps it) or
raises ``DeliveryError``; the worker retries, unless the error is a
``PermanentDeliveryError``. Error texts are written here, never copied from a gateway's
answer, so they carry no recipient or message text into the database or the logs.
"""

from __future__ import annotations

import email.message
import email.utils
import logging
from typing import Protocol

import aiohttp
import aiosmtplib

from telemed.notify.models import OutboxChannel, OutboxMessage
from telemed.notify.outcomes import (
    DeliveryError,
    DeliveryStatus,
    Kept,
    PermanentDeliveryError,
    Sent,
)
from telemed.notify.service import Attachment
from telemed.notify.sms_providers import PROVIDERS, ProviderSender
from telemed.settings import EmailBackend, Mode, Settings, SmsBackend

__all__ = [
    "DeliveryError",
    "DeliveryStatus",
    "Kept",
    "PermanentDeliveryError",
    "Sender",
    "Sent",
    "build_senders",
    "keeps_clear_text",
]

logger = logging.getLogger(__name__)


class Sender(Protocol):
    async def send(self, message: OutboxMessage) -> Kept | Sent | None:
        """Deliver ``message`` (None, or ``Sent`` when the provider names it), or keep it
        (``Kept``); raise ``DeliveryError`` if it did not go out this time,
        ``PermanentDeliveryError`` if it never will."""
        ...


def keeps_clear_text(settings: Settings) -> bool:
    """Whether a message kept in the outbox keeps its clear text (passwords and codes
    included) for staff to read and pass on: in development mode only, where the outbox
    stands in for the gateway (``./dev run``, demo deployments). In production mode a
    kept message is masked like a sent one, so no password ever stays readable there."""
    return settings.mode is Mode.DEVELOPMENT


class OutboxSender:
    """The ``outbox`` backend: nothing leaves the server. The message stays in the outbox,
    marked ``kept`` (staff read it at ``GET /outbox``: in development mode as the
    recipient would have got it, in production masked), and one log line says so."""

    def __init__(self, *, keep_clear: bool) -> None:
        self.keep_clear = keep_clear

    async def send(self, message: OutboxMessage) -> Kept:
        logger.info(
            "outbox message %s (%s, %s) kept in the outbox: no gateway configured",
            message.id,
            message.channel.value,
            message.kind,
        )
        return Kept(clear=self.keep_clear)


class HttpSmsSender:
    """SMS through a JSON webhook: ``POST {"to", "text", "id"}`` to the gateway's URL.

    ``id`` is the outbox message id, so that a gateway can drop a repeat that follows a
    lost answer. Any 2xx answer is a success.
    """

    def __init__(
        self, *, http: aiohttp.ClientSession, url: str, token: str | None, timeout: float
    ) -> None:
        self.http = http
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def send(self, message: OutboxMessage) -> None:
        payload = {"to": message.recipient, "text": message.body, "id": str(message.id)}
        try:
            async with self.http.post(
                self.url, json=payload, headers=self.headers, timeout=self.timeout
            ) as response:
                if not 200 <= response.status < 300:
                    raise DeliveryError(f"SMS gateway answered HTTP {response.status}")
        except TimeoutError:
            raise DeliveryError(
                f"SMS gateway did not answer within {self.timeout.total:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"SMS gateway unreachable ({type(exc).__name__})") from None


class SmtpSender:
    """E-mail through an SMTP server (aiosmtplib): UTF-8 text plus attachments."""

    def __init__(self, settings: Settings) -> None:
        self.sender = settings.email_from
        self.hostname = settings.smtp_host
        self.port = settings.smtp_port
        self.username = settings.smtp_username
        self.password = settings.smtp_password
        self.start_tls = settings.smtp_starttls
        self.timeout = settings.smtp_timeout_seconds

    def build(self, message: OutboxMessage) -> email.message.EmailMessage:
        mail = email.message.EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.recipient
        mail["Subject"] = message.subject
        mail["Date"] = email.utils.formatdate(localtime=False)
        domain = email.utils.parseaddr(self.sender)[1].rpartition("@")[2] or None
        mail["Message-ID"] = email.utils.make_msgid(idstring=message.id.hex, domain=domain)
        mail.set_content(message.body, charset="utf-8")
        for data in message.attachments:
            attachment = Attachment.from_json(data)
            # "text/calendar; method=REQUEST; charset=UTF-8" → type, subtype, parameters.
            header = email.message.Message()
            header["Content-Type"] = attachment.content_type
            params = {k: v for k, v in header.get_params([])[1:] if isinstance(v, str)}
            mail.add_attachment(
                attachment.content,
                maintype=header.get_content_maintype(),
                subtype=header.get_content_subtype(),
                filename=attachment.filename,
                params=params,
            )
        return mail

    async def send(self, message: OutboxMessage) -> None:
        try:
            await aiosmtplib.send(
                self.build(message),
                hostname=self.hostname,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=self.start_tls,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP server refused the message ({exc.code})") from None
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP delivery failed ({type(exc).__name__})") from None


def build_senders(settings: Settings, http: aiohttp.ClientSession) -> dict[OutboxChannel, Sender]:
    """One sender per channel, as the settings choose."""
    keeper = OutboxSender(keep_clear=keeps_clear_text(settings))
    sms: Sender = keeper
    provider = PROVIDERS.get(settings.sms_backend)
    if provider is not None:
        sms = provider.from_settings(settings, http)
    elif settings.sms_backend is SmsBackend.HTTP:
        assert settings.sms_http_url is not None  # the settings refuse http without a URL
        sms = HttpSmsSender(
            http=http,
            url=settings.sms_http_url,
            token=settings.sms_http_token,
            timeout=settings.sms_http_timeout_seconds,
        )
    mail: Sender = keeper
    if settings.email_backend is EmailBackend.SMTP:
        mail = SmtpSender(settings)
    return {OutboxChannel.SMS: sms, OutboxChannel.EMAIL: mail}


def status_reporter(senders: dict[OutboxChannel, Sender]) -> ProviderSender | None:
    """The SMS sender, if it can tell what became of a message it sent."""
    sms = senders[OutboxChannel.SMS]
    return sms if isinstance(sms, ProviderSender) else None
