"""Phone numbers: parsed as people write them in Russia, stored in E.164."""

from __future__ import annotations

import phonenumbers

from telemed.errors import InvalidPhone, Problem

DEFAULT_REGION = "RU"


def normalise_phone(raw: str, *, region: str = DEFAULT_REGION) -> str:
    """``8 (912) 345-67-89`` → ``+79123456789``. Raises ``InvalidPhone``."""
    text = raw.strip()
    if not text or len(text) > 32:
        raise InvalidPhone("Enter a phone number", problem=Problem.MISSING, field="phone")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidPhone(
            "This is not a phone number", problem=Problem.BAD_PHONE, field="phone"
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone(
            "This phone number does not exist", problem=Problem.BAD_PHONE, field="phone"
        )
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def looks_like_phone(login: str) -> bool:
    return "@" not in login
