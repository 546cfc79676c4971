"""SMS through the providers that operators in Russia use: SMS.ru, SMSC.ru and SMS Aero,
each through its own documented HTTP API (``TELEMED_SMS_BACKEND=smsru|smsc|smsaero``).

Each sender authenticates as its API says, passes the sender name, sends the text in
UTF-8 (Cyrillic included), maps the provider's error codes to *try again later*
(``DeliveryError``) or *give up* (``PermanentDeliveryError``), and returns the provider's
message id with the status it reported (``Sent``), so that the delivery status can be
asked later (``delivery_status``).

What is retried, for every provider: no answer, a broken connection, HTTP 5xx, 408 and
429, an answer that is not the API's JSON, the provider's own "temporarily unavailable"
and rate limits, an unknown code, and *no money on the account* (the operator tops the
account up, and the messages of the last hours still go out; the retries are bounded by
``TELEMED_OUTBOX_MAX_ATTEMPTS``). What is given up at once: wrong credentials (a setting
to fix; repeating them also gets the server's address blocked at SMSC.ru), a number or a
text that the provider refuses, a sender name that is not approved, another HTTP 4xx.

Error texts are our own (the code and what it means), never the provider's text, which
may repeat the number.
"""

from __future__ import annotations

import base64
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import aiohttp

from telemed.notify.models import OutboxMessage
from telemed.notify.outcomes import DeliveryError, DeliveryStatus, PermanentDeliveryError, Sent
from telemed.settings import Settings, SmsBackend

RETRYABLE_HTTP = frozenset({408, 429})


@dataclass(frozen=True)
class Code:
    """What a provider's error code means, and whether trying again may help."""

    retry: bool
    meaning: str


def as_code(value: object) -> int | None:
    """A code from a JSON answer: an integer (a number in a string too), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,9}", value.strip()):
        return int(value)
    return None


def status_of(value: object, table: dict[int, DeliveryStatus]) -> DeliveryStatus | None:
    """The delivery status that the provider's status code ``value`` means (None if
    unknown)."""
    code = as_code(value)
    return None if code is None else table.get(code)


def phone_digits(recipient: str) -> str:
    """``+7 912 345-67-89`` → ``79123456789``: the number as every one of these APIs
    takes it (international format, digits only)."""
    return re.sub(r"\D", "", recipient)


class ProviderSender(ABC):
    """What the three providers share: one HTTP client session, the account, the
    sender name, the timeout, and the transport errors mapped to retries."""

    title: ClassVar[str]

    def __init__(
        self,
        *,
        http: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        login: str | None = None,
        sender: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.login = login
        self.sender = sender
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    @classmethod
    def from_settings(cls, settings: Settings, http: aiohttp.ClientSession) -> Self:
        assert settings.sms_api_key is not None  # Settings.check_sms_provider
        return cls(
            http=http,
            base_url=settings.sms_provider_url,
            api_key=settings.sms_api_key,
            login=settings.sms_login,
            sender=settings.sms_sender,
            timeout=settings.sms_http_timeout_seconds,
        )

    @abstractmethod
    async def send(self, message: OutboxMessage) -> Sent:
        """Hand ``message`` to the provider; its id there and the status it reported."""

    @abstractmethod
    async def delivery_status(self, provider_id: str, recipient: str) -> DeliveryStatus | None:
        """What became of a message sent earlier, as the provider reports it now (None:
        the provider does not know it, or reported something unknown). Raises
        ``DeliveryError`` if the provider could not be asked."""

    async def _post(
        self,
        path: str,
        *,
        data: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """POST to the API: the HTTP status and the JSON answer (None if it is not JSON)."""
        try:
            async with self.http.post(
                self.base_url + path,
                data=data,
                json=json_body,
                headers=headers,
                timeout=self.timeout,
            ) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            raise DeliveryError(
                f"{self.title} did not answer within {self.timeout.total:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"{self.title} unreachable ({type(exc).__name__})") from None
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        return status, body

    def _check_http(self, status: int) -> None:
        """A 5xx, 408 or 429 is retried; another status that is not 2xx is given up
        (a wrong address or a refused request: a setting to fix)."""
        if 200 <= status < 300:
            return
        if status >= 500 or status in RETRYABLE_HTTP:
            raise DeliveryError(f"{self.title} answered HTTP {status}")
        raise PermanentDeliveryError(f"{self.title} answered HTTP {status}")

    def _unexpected(self) -> DeliveryError:
        return DeliveryError(f"{self.title} answered something that is not its API's JSON")

    def _refused(self, code: object, codes: dict[int, Code]) -> DeliveryError:
        """The error for the provider's error ``code`` (an unknown one is retried)."""
        number = as_code(code)
        known = codes.get(number) if number is not None else None
        if known is None:
            return DeliveryError(f"{self.title} answered an unknown code {str(code)[:20]!r}")
        text = f"{self.title} error {number}: {known.meaning}"
        return DeliveryError(text) if known.retry else PermanentDeliveryError(text)


# ── SMS.ru ──────────────────────────────────────────────────────────────────────────
# https://sms.ru/api/send, https://sms.ru/api/status. Relied on: POST /sms/send with
# api_id, to, msg (UTF-8), from, json=1; the answer {"status": "OK"|"ERROR",
# "status_code", "sms": {<number>: {"status", "status_code", "sms_id"}}, "balance"};
# POST /sms/status with api_id, sms_id, json=1, answering
# {"status", "status_code", "sms": {<sms_id>: {"status", "status_code"}}}.

SMSRU_ERRORS: dict[int, Code] = {
    200: Code(False, "wrong api_id"),
    201: Code(True, "no money on the account"),
    202: Code(False, "wrong recipient number, or no route to it"),
    203: Code(False, "no message text"),
    204: Code(False, "sender name not approved"),
    205: Code(False, "message too long"),
    206: Code(True, "daily sending limit reached"),
    207: Code(False, "messages to this number are not allowed"),
    208: Code(False, "wrong time parameter"),
    209: Code(False, "the number is on the account's stop list"),
    210: Code(False, "GET used where POST is needed"),
    211: Code(False, "method not found"),
    212: Code(False, "the text must be UTF-8"),
    213: Code(False, "more than 100 numbers"),
    220: Code(True, "service temporarily unavailable"),
    230: Code(True, "daily limit of messages to this number reached"),
    231: Code(True, "limit of identical messages to this number per minute reached"),
    232: Code(True, "limit of identical messages to this number per day reached"),
    233: Code(True, "limit of repeated code messages to this number reached"),
    300: Code(False, "wrong token"),
    301: Code(False, "wrong api_id, or login and password"),
    302: Code(False, "account not confirmed"),
    500: Code(True, "error on the provider's server"),
}

SMSRU_STATUSES: dict[int, DeliveryStatus] = {
    100: DeliveryStatus.ACCEPTED,  # queued
    101: DeliveryStatus.ACCEPTED,  # being handed to the operator
    102: DeliveryStatus.SENT,  # with the operator, on its way
    103: DeliveryStatus.DELIVERED,
    104: DeliveryStatus.UNDELIVERED,  # its lifetime ran out
    105: DeliveryStatus.UNDELIVERED,  # deleted by the operator
    106: DeliveryStatus.UNDELIVERED,  # the phone failed
    107: DeliveryStatus.UNDELIVERED,  # for an unknown reason
    108: DeliveryStatus.UNDELIVERED,  # rejected
    110: DeliveryStatus.DELIVERED,  # read
    150: DeliveryStatus.UNDELIVERED,  # no route to the number
}


class SmsRuSender(ProviderSender):
    """SMS.ru: the account's ``api_id`` (``TELEMED_SMS_API_KEY``) in every request."""

    title = "SMS.ru"

    async def send(self, message: OutboxMessage) -> Sent:
        number = phone_digits(message.recipient)
        form = {"api_id": self.api_key, "to": number, "msg": message.body, "json": "1"}
        if self.sender:
            form["from"] = self.sender
        status, body = await self._post("/sms/send", data=form)
        self._check_http(status)
        if not isinstance(body, dict):
            raise self._unexpected()
        if body.get("status") != "OK":
            raise self._refused(body.get("status_code"), SMSRU_ERRORS)
        messages = body.get("sms")
        if not isinstance(messages, dict) or not messages:
            raise self._unexpected()
        # One number was sent, so one entry (under the number as SMS.ru writes it).
        entry = messages.get(number, next(iter(messages.values())))
        if not isinstance(entry, dict):
            raise self._unexpected()
        if entry.get("status") != "OK":
            raise self._refused(entry.get("status_code"), SMSRU_ERRORS)
        sms_id = entry.get("sms_id")
        if not isinstance(sms_id, str) or not sms_id:
            raise self._unexpected()
        return Sent(provider_id=sms_id, status=DeliveryStatus.ACCEPTED)

    async def delivery_status(self, provider_id: str, recipient: str) -> DeliveryStatus | None:
        form = {"api_id": self.api_key, "sms_id": provider_id, "json": "1"}
        status, body = await self._post("/sms/status", data=form)
        self._check_http(status)
        if not isinstance(body, dict):
            raise self._unexpected()
        if body.get("status") != "OK":
            raise self._refused(body.get("status_code"), SMSRU_ERRORS)
        entry = (body.get("sms") or {}).get(provider_id)
        if not isinstance(entry, dict) or entry.get("status") != "OK":
            return None  # not found (-1)
        return status_of(entry.get("status_code"), SMSRU_STATUSES)


# ── SMSC.ru ─────────────────────────────────────────────────────────────────────────
# https://smsc.ru/api/http/. Relied on: POST /sys/send.php with login and psw (or
# apikey), phones, mes, sender, charset=utf-8 (the default is windows-1251), fmt=3 (JSON);
# the answer {"id", "cnt"} or {"error", "error_code"[, "id"]}; POST /sys/status.php with
# login, psw, phone, id, fmt=3, answering {"status", "last_timestamp", "err"} or an error.

SMSC_ERRORS: dict[int, Code] = {
    1: Code(False, "error in the parameters"),
    2: Code(False, "wrong login or password"),
    3: Code(True, "no money on the account"),
    4: Code(True, "the server's address is blocked for a while after too many errors"),
    5: Code(False, "wrong date format"),
    6: Code(False, "message forbidden (by its text or sender name)"),
    7: Code(False, "wrong phone number format"),
    8: Code(False, "the message cannot be delivered to this number"),
    9: Code(True, "too many identical or simultaneous requests"),
}

SMSC_STATUSES: dict[int, DeliveryStatus] = {
    -1: DeliveryStatus.ACCEPTED,  # waiting to be sent
    0: DeliveryStatus.SENT,  # handed to the operator
    1: DeliveryStatus.DELIVERED,
    2: DeliveryStatus.DELIVERED,  # read
    3: DeliveryStatus.UNDELIVERED,  # expired
    4: DeliveryStatus.DELIVERED,  # its link was followed
    20: DeliveryStatus.UNDELIVERED,  # cannot be delivered
    22: DeliveryStatus.UNDELIVERED,  # wrong number
    23: DeliveryStatus.UNDELIVERED,  # forbidden
    24: DeliveryStatus.UNDELIVERED,  # no money
    25: DeliveryStatus.UNDELIVERED,  # number unavailable
}


class SmscSender(ProviderSender):
    """SMSC.ru: ``login`` and ``psw`` (``TELEMED_SMS_LOGIN``, ``TELEMED_SMS_API_KEY``), or,
    with no login, the account's API key as ``apikey``."""

    title = "SMSC.ru"

    def _account(self) -> dict[str, str]:
        if self.login:
            return {"login": self.login, "psw": self.api_key}
        return {"apikey": self.api_key}

    async def send(self, message: OutboxMessage) -> Sent:
        form = {
            **self._account(),
            "phones": phone_digits(message.recipient),
            "mes": message.body,
            "charset": "utf-8",
            "fmt": "3",
        }
        if self.sender:
            form["sender"] = self.sender
        status, body = await self._post("/sys/send.php", data=form)
        self._check_http(status)
        if not isinstance(body, dict):
            raise self._unexpected()
        if "error_code" in body or "error" in body:
            raise self._refused(body.get("error_code"), SMSC_ERRORS)
        message_id = body.get("id")
        if isinstance(message_id, bool) or not isinstance(message_id, int | str):
            raise self._unexpected()
        return Sent(provider_id=str(message_id), status=DeliveryStatus.ACCEPTED)

    async def delivery_status(self, provider_id: str, recipient: str) -> DeliveryStatus | None:
        form = {
            **self._account(),
            "phone": phone_digits(recipient),
            "id": provider_id,
            "charset": "utf-8",
            "fmt": "3",
        }
        status, body = await self._post("/sys/status.php", data=form)
        self._check_http(status)
        if not isinstance(body, dict):
            raise self._unexpected()
        if "error_code" in body or "error" in body:
            raise self._refused(body.get("error_code"), SMSC_ERRORS)
        return status_of(body.get("status"), SMSC_STATUSES)


# ── SMS Aero ────────────────────────────────────────────────────────────────────────
# https://smsaero.ru/integration/documentation/api/ (API v2). Relied on: HTTP Basic
# authentication with the account's e-mail and API key; POST /sms/send with a JSON body
# {"number", "text", "sign"}; the answer {"success": true, "data": {"id", "status",
# "extendStatus", …}, "message": null}, or {"success": false, "data", "message"} (401 for
# wrong credentials, 400 for invalid fields); a lack of money answered as
# {"result": "no credits"} and a refusal as {"result": "reject", "reason"} (as the
# provider's own client library reads them); POST /sms/status {"id"} answering the same
# "data". SMS Aero has no error codes of its own, so the HTTP status decides.

SMSAERO_DEFAULT_SIGN = "SMS Aero"  # the free sender name every account has

SMSAERO_STATUSES: dict[int, DeliveryStatus] = {
    0: DeliveryStatus.ACCEPTED,  # queued
    1: DeliveryStatus.DELIVERED,
    2: DeliveryStatus.UNDELIVERED,
    3: DeliveryStatus.SENT,  # handed to the operator
    4: DeliveryStatus.SENT,  # waiting for the operator's report
    6: DeliveryStatus.UNDELIVERED,  # rejected
    8: DeliveryStatus.ACCEPTED,  # on moderation
}


class SmsAeroSender(ProviderSender):
    """SMS Aero: HTTP Basic with the account's e-mail (``TELEMED_SMS_LOGIN``) and API key
    (``TELEMED_SMS_API_KEY``); the sender name is required, ``SMS Aero`` if unset."""

    title = "SMS Aero"

    def _auth(self) -> dict[str, str]:
        """HTTP Basic (RFC 7617, UTF-8) with the e-mail and the API key."""
        assert self.login is not None  # Settings.check_sms_provider
        pair = f"{self.login}:{self.api_key}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}

    def _data(self, status: int, body: Any) -> dict[str, Any]:
        """The ``data`` of a successful answer, or the error that the answer means."""
        if isinstance(body, dict) and body.get("result") == "no credits":
            raise DeliveryError(f"{self.title}: no money on the account")
        if status == 401:
            raise PermanentDeliveryError(f"{self.title}: wrong e-mail or API key (HTTP 401)")
        if status == 402:
            raise DeliveryError(f"{self.title}: no money on the account (HTTP 402)")
        self._check_http(status)
        if not isinstance(body, dict):
            raise self._unexpected()
        if body.get("result") == "reject":
            raise PermanentDeliveryError(f"{self.title} rejected the message")
        if body.get("success") is not True:
            raise PermanentDeliveryError(f"{self.title} refused the request")
        data = body.get("data")
        if not isinstance(data, dict):
            raise self._unexpected()
        return data

    async def send(self, message: OutboxMessage) -> Sent:
        payload = {
            "number": int(phone_digits(message.recipient) or 0),
            "text": message.body,
            "sign": self.sender or SMSAERO_DEFAULT_SIGN,
        }
        status, body = await self._post("/sms/send", json_body=payload, headers=self._auth())
        data = self._data(status, body)
        message_id = data.get("id")
        if isinstance(message_id, bool) or not isinstance(message_id, int | str):
            raise self._unexpected()
        reported = status_of(data.get("status"), SMSAERO_STATUSES)
        return Sent(provider_id=str(message_id), status=reported or DeliveryStatus.ACCEPTED)

    async def delivery_status(self, provider_id: str, recipient: str) -> DeliveryStatus | None:
        try:
            payload: dict[str, Any] = {"id": int(provider_id)}
        except ValueError:
            return None
        status, body = await self._post("/sms/status", json_body=payload, headers=self._auth())
        data = self._data(status, body)
        return status_of(data.get("status"), SMSAERO_STATUSES)


PROVIDERS: dict[SmsBackend, type[ProviderSender]] = {
    SmsBackend.SMSRU: SmsRuSender,
    SmsBackend.SMSC: SmscSender,
    SmsBackend.SMSAERO: SmsAeroSender,
}
"""The sender class of each provider backend."""
