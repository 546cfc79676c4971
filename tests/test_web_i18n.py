"""The web app's dictionaries: Russian and English have the same keys, none empty but
on purpose, and every key the pages use exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

WEB = Path(__file__).resolve().parent.parent / "web"
MAY_BE_EMPTY = {"notRecording"}


def dictionary(lang: str) -> dict[str, str]:
    loaded: dict[str, str] = json.loads((WEB / "i18n" / f"{lang}.json").read_text("utf-8"))
    return loaded


def test_both_languages_have_the_same_keys() -> None:
    ru, en = dictionary("ru"), dictionary("en")
    assert set(ru) == set(en)
    for words in (ru, en):
        assert all(isinstance(text, str) for text in words.values())
        assert {key for key, text in words.items() if not text.strip()} <= MAY_BE_EMPTY
    assert ru["consent"] != en["consent"]  # translated, not copied


def test_every_key_the_pages_use_exists() -> None:
    keys = set(dictionary("ru"))
    used: set[str] = set()
    for page in WEB.glob("*.html"):
        used |= set(re.findall(r'data-i18n(?:-label)?="([^"]+)"', page.read_text("utf-8")))
    for script in WEB.glob("*.js"):
        used |= set(re.findall(r"\bTEXT\.([A-Za-z_]+)", script.read_text("utf-8")))
    assert used
    assert used <= keys, used - keys
