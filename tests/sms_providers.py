"""Fakes at the external edge: SMS.ru, SMSC.ru and SMS Aero as real HTTP servers on
loopback, answering as each provider's documentation says (its authentication, its
request fields, its answers and error codes), and recording what they accept.

Each fake decodes a request the way its provider does: SMSC.ru reads the text in
windows-1251 unless ``charset`` says otherwise, SMS.ru refuses a text that is not UTF-8
(code 212), SMS Aero reads JSON; so a sender that got the encoding wrong delivers
garbled text here, as it would there.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

PHONE = "+79161234567"
NUMBER = "79161234567"  # as the providers write it


@dataclass
class Accepted:
    """One message a fake provider took: the number, the text and the sender name."""

    provider_id: str
    number: str
    text: str
    sender: str | None


@dataclass
class FakeProvider:
    """What the three fakes share: scripted failures and the record of what came in.

    ``errors``: the provider's own error codes to answer the next sends with, in order;
    ``http_errors``: HTTP statuses to answer the next requests with (before anything
    else); ``hang``: hold every request until the server stops; ``statuses``: the
    provider's status code of each message id, for status requests.
    """

    errors: list[int] = field(default_factory=list)
    http_errors: list[int] = field(default_factory=list)
    hang: bool = False
    statuses: dict[str, int] = field(default_factory=dict)
    accepted: list[Accepted] = field(default_factory=list)
    requests: int = 0
    status_requests: int = 0
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _next_id: int = 1000

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def gate(self) -> web.Response | None:
        """Count the request; hang or fail it if scripted to."""
        self.requests += 1
        if self.hang:
            await self._release.wait()
            return web.Response(status=503)
        if self.http_errors:
            return web.Response(status=self.http_errors.pop(0), text="<html>Bad Gateway</html>")
        return None

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Serve on a free loopback port; yields the base URL (``TELEMED_SMS_BASE_URL``)."""
        app = web.Application()
        app.add_routes(self.routes())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        try:
            yield f"http://{host}:{port}{self.prefix}"
        finally:
            self._release.set()
            await runner.cleanup()

    prefix = ""


async def form(request: web.Request, default_charset: str = "utf-8") -> dict[str, str]:
    """A form body (urlencoded) decoded as the provider does: the ``charset`` field if
    given, else ``default_charset``. Raises UnicodeDecodeError on bytes that are not
    text in that charset."""
    raw = (await request.read()).decode("ascii")
    charset = parse_qs(raw, encoding="latin-1").get("charset", [default_charset])[0]
    fields = parse_qs(raw, encoding=charset, errors="strict", keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


# ── SMS.ru ──────────────────────────────────────────────────────────────────────────

SMSRU_TEXTS = {
    200: "Неправильный api_id",
    201: "Не хватает средств на лицевом счету",
    202: "Неправильно указан номер телефона получателя, либо на него нет маршрута",
    204: "Имя отправителя не согласовано с администрацией",
    207: "На этот номер нельзя отправлять сообщения",
    212: "Текст сообщения необходимо передать в кодировке UTF-8",
    220: "Сервис временно недоступен, попробуйте чуть позже",
    230: "Превышен общий лимит количества сообщений на этот номер в день",
    500: "Ошибка на сервере. Повторите запрос.",
}
SMSRU_PER_NUMBER = {202, 207}  # reported under the number, the request itself is "OK"


@dataclass
class FakeSmsRu(FakeProvider):
    """sms.ru: ``POST /sms/send`` and ``/sms/status`` with ``api_id`` and ``json=1``."""

    api_id: str = "A3CA597E-3ACF-4E7D-82EE-CF82B52B1A8B"
    senders: tuple[str, ...] = ("Telemed",)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/sms/send", self.send), web.post("/sms/status", self.status)]

    @staticmethod
    def error(code: int) -> web.Response:
        text = SMSRU_TEXTS.get(code, "Ошибка")
        return web.json_response({"status": "ERROR", "status_code": code, "status_text": text})

    async def send(self, request: web.Request) -> web.Response:
        if (failed := await self.gate()) is not None:
            return failed
        try:
            fields = await form(request)
        except UnicodeDecodeError:
            return self.error(212)
        if fields.get("json") != "1":
            return web.Response(text="100\n000000-10000000\nbalance=10")  # the plain format
        if fields.get("api_id") != self.api_id:
            return self.error(200)
        sender = fields.get("from")
        if sender is not None and sender not in self.senders:
            return self.error(204)
        number = fields.get("to", "")
        if self.errors and self.errors[0] not in SMSRU_PER_NUMBER:
            return self.error(self.errors.pop(0))
        if self.errors:
            code = self.errors.pop(0)
            entry = {"status": "ERROR", "status_code": code, "status_text": SMSRU_TEXTS[code]}
        else:
            sms_id = f"000000-{self.new_id()}"
            self.accepted.append(Accepted(sms_id, number, fields.get("msg", ""), sender))
            self.statuses[sms_id] = 100
            entry = {"status": "OK", "status_code": 100, "sms_id": sms_id}
        return web.json_response(
            {"status": "OK", "status_code": 100, "sms": {number: entry}, "balance": 4122.56}
        )

    async def status(self, request: web.Request) -> web.Response:
        self.status_requests += 1
        if (failed := await self.gate()) is not None:
            return failed
        fields = await form(request)
        if fields.get("api_id") != self.api_id:
            return self.error(200)
        answers: dict[str, Any] = {}
        for sms_id in fields.get("sms_id", "").split(","):
            if sms_id in self.statuses:
                code = self.statuses[sms_id]
                answers[sms_id] = {"status": "OK", "status_code": code, "cost": 0.5}
            else:
                answers[sms_id] = {
                    "status": "ERROR",
                    "status_code": -1,
                    "status_text": "Сообщение не найдено",
                }
        return web.json_response({"status": "OK", "status_code": 100, "sms": answers})


# ── SMSC.ru ─────────────────────────────────────────────────────────────────────────

SMSC_TEXTS = {
    1: "parameters error",
    2: "authorise error",
    3: "no money",
    4: "IP is blocked",
    6: "message is denied",
    7: "invalid number",
    8: "message can not be delivered",
    9: "duplicate request, wait a minute",
}
SMSC_WITH_ID = {3, 6, 7, 8}  # these errors also name the message


@dataclass
class FakeSmsc(FakeProvider):
    """smsc.ru: ``/sys/send.php`` and ``/sys/status.php`` with ``login``/``psw`` or
    ``apikey``, ``fmt=3`` for JSON; the text in windows-1251 unless ``charset``."""

    login: str = "telemed"
    psw: str = "s3cret-пароль"
    apikey: str = "smsc-api-key-1"
    senders: tuple[str, ...] = ("Telemed",)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/sys/send.php", self.send), web.post("/sys/status.php", self.status)]

    def authorised(self, fields: dict[str, str]) -> bool:
        if "apikey" in fields:
            return fields["apikey"] == self.apikey
        return (fields.get("login"), fields.get("psw")) == (self.login, self.psw)

    @staticmethod
    def error(code: int, message_id: int | None = None) -> web.Response:
        body: dict[str, Any] = {"error": SMSC_TEXTS.get(code, "error"), "error_code": code}
        if message_id is not None:
            body["id"] = message_id
        return web.json_response(body)

    async def send(self, request: web.Request) -> web.Response:
        if (failed := await self.gate()) is not None:
            return failed
        fields = await form(request, default_charset="windows-1251")
        if fields.get("fmt") != "3":
            return web.Response(text="OK - 1 SMS, ID - 1")  # the default text format
        if not self.authorised(fields):
            return self.error(2)
        sender = fields.get("sender")
        if sender is not None and sender not in self.senders:
            return self.error(6, self.new_id())
        if not fields.get("phones", "").isdigit():
            return self.error(7, self.new_id())
        if self.errors:
            code = self.errors.pop(0)
            return self.error(code, self.new_id() if code in SMSC_WITH_ID else None)
        message_id = self.new_id()
        self.accepted.append(
            Accepted(str(message_id), fields["phones"], fields.get("mes", ""), sender)
        )
        self.statuses[str(message_id)] = -1
        return web.json_response({"id": message_id, "cnt": 1})

    async def status(self, request: web.Request) -> web.Response:
        self.status_requests += 1
        if (failed := await self.gate()) is not None:
            return failed
        fields = await form(request, default_charset="windows-1251")
        if not self.authorised(fields):
            return self.error(2)
        known = any(
            a.provider_id == fields.get("id") and a.number == fields.get("phone")
            for a in self.accepted
        )
        code = self.statuses.get(fields.get("id", ""), -3) if known else -3
        return web.json_response(
            {"status": code, "last_date": "06.12.2026 12:00:00", "last_timestamp": 0, "err": 0}
        )


# ── SMS Aero ────────────────────────────────────────────────────────────────────────

SMSAERO_EXTEND = {
    0: "queue",
    1: "delivery",
    2: "error",
    3: "transmitted",
    4: "wait",
    6: "reject",
    8: "moderation",
}
NO_CREDITS = 1  # in ``errors``: answer as SMS Aero does when the account has no money
VALIDATION = 2  # in ``errors``: a validation error (HTTP 400)


@dataclass
class FakeSmsAero(FakeProvider):
    """gate.smsaero.ru/v2: HTTP Basic (e-mail, API key), JSON in and out,
    ``{"success", "data", "message"}``."""

    email: str = "clinic@example.ru"
    api_key: str = "aero-key-0123456789abcdef0123456"
    signs: tuple[str, ...] = ("SMS Aero", "Telemed")
    prefix = "/v2"

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v2/sms/send", self.send), web.post("/v2/sms/status", self.status)]

    def authorised(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return False
        try:
            user, _, key = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (user, key) == (self.email, self.api_key)

    @staticmethod
    def failure(status: int, message: str, data: Any = None) -> web.Response:
        return web.json_response(
            {"success": False, "data": data, "message": message}, status=status
        )

    def message_data(self, message: Accepted) -> dict[str, Any]:
        code = self.statuses[message.provider_id]
        return {
            "id": int(message.provider_id),
            "from": message.sender,
            "number": message.number,
            "text": message.text,
            "status": code,
            "extendStatus": SMSAERO_EXTEND.get(code, "unknown"),
            "channel": "FREE SIGN",
            "cost": 5.49,
            "dateCreate": 1796554800,
            "dateSend": 1796554800,
        }

    async def send(self, request: web.Request) -> web.Response:
        if (failed := await self.gate()) is not None:
            return failed
        if not self.authorised(request):
            return self.failure(401, "Your request was made with invalid credentials.")
        try:
            payload = json.loads(await request.read())
        except ValueError:
            return self.failure(400, "Validation error.")
        number, text, sign = payload.get("number"), payload.get("text"), payload.get("sign")
        problems: dict[str, list[str]] = {}
        if not isinstance(number, int | str) or not str(number).isdigit():
            problems["number"] = ["Неверный номер."]
        if not isinstance(text, str) or not text:
            problems["text"] = ["Необходимо заполнить «Text»."]
        if sign not in self.signs:
            problems["sign"] = ["Неверная подпись."]
        if self.errors:
            scripted = self.errors.pop(0)
            if scripted == NO_CREDITS:
                return web.json_response({"result": "no credits"})
            problems["number"] = ["Номер в чёрном списке."]
        if problems:
            return self.failure(400, "Validation error.", problems)
        message = Accepted(str(self.new_id()), str(number), str(text), str(sign))
        self.accepted.append(message)
        self.statuses[message.provider_id] = 8  # on moderation first
        return web.json_response(
            {"success": True, "data": self.message_data(message), "message": None}
        )

    async def status(self, request: web.Request) -> web.Response:
        self.status_requests += 1
        if (failed := await self.gate()) is not None:
            return failed
        if not self.authorised(request):
            return self.failure(401, "Your request was made with invalid credentials.")
        payload = json.loads(await request.read())
        for message in self.accepted:
            if message.provider_id == str(payload.get("id")):
                return web.json_response(
                    {"success": True, "data": self.message_data(message), "message": None}
                )
        return self.failure(404, "Not found.")
