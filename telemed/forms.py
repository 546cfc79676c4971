"""Multipart forms from untrusted clients, read part by part: every malformation is a
400, every pause of the client is bounded in time.

aiohttp's parser answers malformed input with whatever its code raises: ``ValueError``
(no boundary, a body cut off before its closing boundary), ``InvalidHeader`` (a control
character in a part's header), ``RuntimeError`` (an unknown Content-Transfer-Encoding),
``UnicodeDecodeError``. Here all of them become ``InvalidInput``, a read that waits
longer than the idle time limit becomes ``RequestTimeout``, and the rules of RFC 7578
hold: parts are plain (no Content-Transfer-Encoding or Content-Encoding), named, and
text fields are UTF-8.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from telemed.errors import InvalidInput, RequestTimeout, TelemedError

T = TypeVar("T")
X = TypeVar("X")

CHUNK = 64 * 1024
MAX_FIELD_BYTES = 4096
PLAIN_ENCODINGS = frozenset({"", "binary", "8bit", "7bit"})
# What the parser raises on malformed input; anything else is a bug of ours.
_MALFORMED = (ValueError, RuntimeError, LookupError, TypeError, HttpProcessingError)


@dataclass
class Form(Generic[T]):
    """A read form: its text fields, and its one file as the receiver made it."""

    fields: dict[str, str] = field(default_factory=dict)
    file: T | None = None
    file_name: str | None = None


async def read_form(
    request: web.Request,
    *,
    file_field: str,
    receive: Callable[[AsyncIterator[bytes]], Awaitable[T]],
    discard: Callable[[T], None],
    text_fields: Collection[str] = (),
    idle_timeout: float,
) -> Form[T]:
    """Read a ``multipart/form-data`` body with one file (``file_field``, handed to
    ``receive`` as it arrives) and some short text fields.

    Raises ``InvalidInput`` for a malformed body, an unknown or repeated field, or a
    text field that is not UTF-8 or longer than ``MAX_FIELD_BYTES``; ``RequestTimeout``
    when the client sends nothing for ``idle_timeout`` seconds. On any failure, a file
    already received is ``discard``-ed.
    """
    if request.content_type != "multipart/form-data":
        raise InvalidInput("Send the form as multipart/form-data")
    form: Form[T] = Form()
    try:
        reader = await _parsed(request.multipart(), idle_timeout)
        while (part := await _parsed(reader.next(), idle_timeout)) is not None:
            if isinstance(part, MultipartReader):
                raise InvalidInput("Nested multipart is not supported")
            name, file_name = _names(part)
            if name == file_field:
                if form.file is not None:
                    raise InvalidInput("Send one file", details={"field": name})
                form.file = await receive(_chunks(part, idle_timeout))
                form.file_name = file_name
            elif name is not None and name in text_fields:
                if name in form.fields:
                    raise InvalidInput("Send each field once", details={"field": name})
                form.fields[name] = await _text(part, name, idle_timeout)
            else:
                raise InvalidInput("Unknown form field", details={"field": str(name or "")})
    except BaseException:
        if form.file is not None:
            discard(form.file)
        raise
    return form


async def _parsed(awaitable: Awaitable[X], idle_seconds: float) -> X:
    """A step of the parser, with its malformations and its waiting bounded."""
    try:
        async with asyncio.timeout(idle_seconds):
            return await awaitable
    except TelemedError:
        raise
    except TimeoutError:
        raise RequestTimeout(
            "The upload stalled: nothing arrived for too long", details={"seconds": idle_seconds}
        ) from None
    except _MALFORMED:
        raise InvalidInput("The form is malformed") from None


def _names(part: BodyPartReader) -> tuple[str | None, str | None]:
    """The part's field and file name; a part that asks for decoding is refused."""
    for header in (hdrs.CONTENT_TRANSFER_ENCODING, hdrs.CONTENT_ENCODING):
        if part.headers.get(header, "").strip().lower() not in PLAIN_ENCODINGS:
            raise InvalidInput(
                "Send the form's parts without an encoding", details={"header": header}
            )
    with warnings.catch_warnings():
        # A malformed Content-Disposition reads as no name (then an unknown field); the
        # parser's warning about it would only be noise in the log.
        warnings.simplefilter("ignore")
        return part.name, part.filename


async def _chunks(part: BodyPartReader, idle_seconds: float) -> AsyncIterator[bytes]:
    while chunk := await _parsed(part.read_chunk(CHUNK), idle_seconds):
        yield chunk


async def _text(part: BodyPartReader, name: str, idle_seconds: float) -> str:
    value = bytearray()
    async for chunk in _chunks(part, idle_seconds):
        value += chunk
        if len(value) > MAX_FIELD_BYTES:
            raise InvalidInput("The field is too long", details={"field": name})
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("Send text fields in UTF-8", details={"field": name}) from None
