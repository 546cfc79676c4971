"""The web app's dictionaries: each part of the app (``web/i18n/<part>.<lang>.json``) has
the same keys in Russian and English, none empty but on purpose, and every key the pages
and scripts use exists in their part."""

from __future__ import annotations

import json
import re
from pathlib import Path

WEB = Path(__file__).resolve().parent.parent / "web"
LANGUAGES = ("ru", "en")
MAY_BE_EMPTY = {"notRecording"}
# Which files speak through which dictionaries: the room page through ``TEXT.key``; the
# app's modules name keys as dotted string literals ("nav.documents"), given to ``t()``
# or to the form helpers of web/app/dom.js.
USERS = {
    ("room",): (["room.html"], ["room.js", "room/*.js"], r"\bTEXT\.([A-Za-z_]+)"),
    ("app", "manager"): (["index.html"], ["app/*.js"], r"""["']([a-z]+\.[A-Za-z_]+)["']"""),
}


def dictionary(part: str, lang: str) -> dict[str, str]:
    loaded: dict[str, str] = json.loads((WEB / "i18n" / f"{part}.{lang}.json").read_text("utf-8"))
    return loaded


def parts() -> list[str]:
    return sorted({path.name.split(".")[0] for path in (WEB / "i18n").glob("*.json")})


def test_every_part_has_both_languages_with_the_same_keys() -> None:
    assert set(parts()) == {part for group in USERS for part in group}
    for part in parts():
        ru, en = (dictionary(part, lang) for lang in LANGUAGES)
        assert set(ru) == set(en), (part, set(ru) ^ set(en))
        for words in (ru, en):
            assert all(isinstance(text, str) for text in words.values())
            assert {key for key, text in words.items() if not text.strip()} <= MAY_BE_EMPTY
        # Translated, not copied: most texts differ between the languages.
        same = [key for key in ru if ru[key] == en[key] and ru[key].strip()]
        assert len(same) <= len(ru) // 10, (part, same)


def test_every_key_the_pages_use_exists() -> None:
    for group, (pages, scripts, pattern) in USERS.items():
        keys = {key for part in group for key in dictionary(part, "ru")}
        used: set[str] = set()
        for page in pages:
            for path in WEB.glob(page):
                found = re.findall(r'data-i18n(?:-label)?="([^"]+)"', path.read_text("utf-8"))
                used |= set(found)
        for script in scripts:
            for path in WEB.glob(script):
                used |= set(re.findall(pattern, path.read_text("utf-8")))
        assert used, group
        # A count's key stands for its plural forms (tCount: 41 год, 64 года, 15 лет).
        counted = {
            key
            for key in used - keys
            if all(f"{key}_{form}" in keys for form in ("one", "few", "many", "other"))
        }
        assert used - counted <= keys, (group, used - counted - keys)
