"""The password policy (pure rules) and hashing (argon2id)."""

from __future__ import annotations

import asyncio
import functools
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from telemed.errors import WeakPassword

MIN_LENGTH = 8
MAX_LENGTH = 128

# The most used passwords (leaked lists, Russian keyboard habits included): refused outright.
COMMON = frozenset(
    {
        "password",
        "password1",
        "password123",
        "qwerty123",
        "qwertyuiop",
        "1q2w3e4r",
        "1q2w3e4r5t",
        "12345678",
        "123456789",
        "1234567890",
        "87654321",
        "11111111",
        "00000000",
        "iloveyou1",
        "abc12345",
        "passw0rd",
        "qwerty12",
        "zaq12wsx",
        "йцукенгш",
        "пароль123",
        "admin123",
        "welcome1",
        "letmein1",
        "monkey123",
    }
)


def password_problems(password: str, *, personal: tuple[str, ...] = ()) -> list[str]:
    """Every rule the password breaks (empty when it is acceptable)."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"at most {MAX_LENGTH} characters")
    if not re.search(r"[^\W\d_]", password):
        problems.append("at least one letter")
    if not re.search(r"\d", password):
        problems.append("at least one digit")
    if password.lower() in COMMON:
        problems.append("not a commonly used password")
    lowered = password.lower()
    if any(piece in lowered for piece in _personal_pieces(personal)):
        problems.append("not your phone number, e-mail or name")
    return problems


def _personal_pieces(personal: tuple[str, ...]) -> set[str]:
    """Parts of the user's own data that must not appear in their password."""
    pieces = set()
    for item in personal:
        if item.startswith("+"):
            pieces.add(re.sub(r"\D", "", item)[-7:])
        else:
            pieces.update(word for word in re.split(r"[\s@.,_-]+", item.lower()) if len(word) >= 4)
    return pieces


def check_password(
    password: str, *, personal: tuple[str, ...] = (), field: str = "password"
) -> None:
    """Raise ``WeakPassword`` listing what the password lacks."""
    problems = password_problems(password, personal=personal)
    if problems:
        raise WeakPassword(
            "The password is too weak: it needs " + "; ".join(problems),
            details={"field": field, "requirements": problems},
        )


def hasher_for(*, time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    """The argon2id hasher of the settings (``TELEMED_PASSWORD_HASH_*``)."""
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


TEMPORARY_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
"""For passwords the server generates (``generate_password``: 10 characters from 56, about
58 bits of chance): guessing one is out of reach at any hashing cost, so a light hash
(half a millisecond) lets an import of thousands of referred patients finish in seconds
instead of minutes. The patient must replace it at the first sign-in, and that password
is hashed with the full cost; a sign-in with it also re-hashes it at full cost."""


async def hash_password(hasher: PasswordHasher, password: str) -> str:
    # argon2 is deliberately slow: keep it off the event loop (it releases the GIL, so
    # other threads and the loop go on meanwhile).
    return await asyncio.to_thread(hasher.hash, password)


@functools.cache
def _dummy_hash(time_cost: int, memory_cost: int, parallelism: int) -> str:
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
    return hasher.hash(secrets.token_urlsafe(16))


async def dummy_hash(hasher: PasswordHasher) -> str:
    """A hash with the hasher's parameters that no password matches: checked for an
    unknown login, so that the answer takes as long as for a real account."""
    return await asyncio.to_thread(
        _dummy_hash, hasher.time_cost, hasher.memory_cost, hasher.parallelism
    )


async def verify_password(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


# No look-alikes (0/O, 1/l/I): the password is read from an SMS and typed by hand.
_LETTERS = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
_DIGITS = "23456789"


def generate_password(length: int = 10) -> str:
    """A random temporary password that meets the policy (letters and digits)."""
    while True:
        chars = [secrets.choice(_LETTERS + _DIGITS) for _ in range(length)]
        password = "".join(chars)
        if not password_problems(password):
            return password
