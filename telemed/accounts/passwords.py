"""The password policy (pure rules) and hashing (argon2id)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from telemed.errors import Problem, WeakPassword

T = TypeVar("T")

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


def password_problems(
    password: str, *, personal: tuple[str, ...] = ()
) -> list[tuple[Problem, dict[str, Any]]]:
    """Every rule the password breaks, with its parameters (empty when acceptable)."""
    problems: list[tuple[Problem, dict[str, Any]]] = []
    if len(password) < MIN_LENGTH:
        problems.append((Problem.PASSWORD_TOO_SHORT, {"min": MIN_LENGTH}))
    if len(password) > MAX_LENGTH:
        problems.append((Problem.PASSWORD_TOO_LONG, {"max": MAX_LENGTH}))
    if not re.search(r"[^\W\d_]", password):
        problems.append((Problem.PASSWORD_NO_LETTER, {}))
    if not re.search(r"\d", password):
        problems.append((Problem.PASSWORD_NO_DIGIT, {}))
    if password.lower() in COMMON:
        problems.append((Problem.PASSWORD_COMMON, {}))
    lowered = password.lower()
    if any(piece in lowered for piece in _personal_pieces(personal)):
        problems.append((Problem.PASSWORD_PERSONAL, {}))
    return problems


_REQUIREMENTS: Final = {
    Problem.PASSWORD_TOO_SHORT: f"at least {MIN_LENGTH} characters",
    Problem.PASSWORD_TOO_LONG: f"at most {MAX_LENGTH} characters",
    Problem.PASSWORD_NO_LETTER: "at least one letter",
    Problem.PASSWORD_NO_DIGIT: "at least one digit",
    Problem.PASSWORD_COMMON: "not a commonly used password",
    Problem.PASSWORD_PERSONAL: "not your phone number, e-mail or name",
}


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
            "The password is too weak: it needs "
            + "; ".join(_REQUIREMENTS[problem] for problem, _ in problems),
            problem=problems[0][0],
            problems=problems,
            field=field,
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

HASHING_NICENESS = 10


def _lower_priority() -> None:
    # Linux: a thread's niceness is its own, and argon2's lane threads inherit it.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


class Passwords:
    """Hashing and checking passwords (argon2id, deliberately slow) for one process.

    Hashes run on threads of their own (``threads``, one fewer than the machine's cores
    by default) at a lower CPU priority: a burst of sign-ins and registrations queues
    there instead of taking the cores from the event loop, so every other request is
    still answered at once. Only hashes wait, and the rate limits bound how many come.
    """

    def __init__(self, hasher: PasswordHasher, *, threads: int | None = None) -> None:
        self.hasher = hasher
        self._pool = ThreadPoolExecutor(
            threads or max(1, (os.cpu_count() or 2) - 1),
            thread_name_prefix="telemed-passwords",
            initializer=_lower_priority,
        )
        self._dummy: str | None = None

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def hash(self, password: str) -> str:
        return await self._run(lambda: self.hasher.hash(password))

    async def verify(self, password_hash: str, password: str) -> bool:
        def verify() -> bool:
            try:
                return self.hasher.verify(password_hash, password)
            except (VerificationError, InvalidHashError):
                return False

        return await self._run(verify)

    def needs_rehash(self, password_hash: str) -> bool:
        """The hash was made with other parameters than today's."""
        return self.hasher.check_needs_rehash(password_hash)

    async def dummy_hash(self) -> str:
        """A hash with today's parameters that no password matches: checked for an
        unknown login, so that the answer takes as long as for a real account."""
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))
        return self._dummy

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


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
