"""Issue 15's tour: what a patient, a doctor and a manager meet, walked in each language
(Russian, English) at each size (a 375 x 812 phone, a 1366 x 768 laptop), everyone in
the tour at that size and in that language, on a fresh demo deployment with the default
settings (as ``./dev run`` starts: development mode, no SMS gateway, the demo data).

Route 3 from a first run: the demo manager imports docs/samples/referrals.csv and reads
the referred patient's login and password in the outbox; the patient signs in, changes
the password, and meets the doctor in the video room: the state line, the timer, the
doctor's name, the chat's unread badge, the layout (on a phone, from element boxes, with
the chat panel closed and open; on a laptop, the video and the chat side by side) and
the end. A new patient registers with the consent (met with two field errors first),
finds the consent in the profile, books a duty doctor's time with the chips and a topic
of that doctor, and sends a route 1 request with preferred times (a too long text
refused first). Each page is read in its language: no Russian word in an English page
but the data's (names, centres, diagnoses), no English word in a Russian one.

Covered elsewhere, identically, and not walked again here: new credentials from the
consultation page and a forgotten password reset by SMS (test_route3_first_run), the
room's recording, mute, reconnection and pre-join check (tests/test_browser_room.py,
test_call), axe on every page (test_accessibility), the app offline (test_installable).
"""

from __future__ import annotations

import csv
import re
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, ViewportSize

from telemed.accounts.passwords import MIN_LENGTH
from telemed.demo import CENTRES, DOCTOR_PASSWORD, DOCTORS, MANAGER, PATIENT, REGION
from telemed.jobs import run_jobs_once
from tests.browser import phone_layout
from tests.conftest import AppClient
from tests.e2e.app_pages import (
    DESKTOP,
    PHONE,
    ROOM,
    Words,
    app_state,
    change_password,
    choose_language,
    click_and_draw,
    demo_data,
    enter_room,
    go,
    kept_text,
    new_page,
    open_app,
    say_in_room,
    sign_in,
    wait_in_page,
)
from tests.e2e.test_route3_first_run import CARDIOLOGY, CREDENTIALS, SAMPLE, VORONIN
from tests.factories import next_phone
from tests.flows import ok

MOSCOW = ZoneInfo("Europe/Moscow")
BRAND = "Телемед"  # the service's name (TELEMED_BRAND_NAME), the same in both languages
SOKOLOVA = DOCTORS[0]  # the cardiology centre's duty doctor: (name, phone, centre, specialty…)
# A few texts as people read them, not from the dictionaries the pages use.
ZONE = {"ru": "Москва (UTC+3)", "en": "Moscow (UTC+3)"}
ENDED = {"ru": "Консультация завершена", "en": "The consultation has ended"}
# The people of the tour who type in the page's language.
NEWCOMER = {"ru": "Смирнова Ольга Андреевна", "en": "Olga Smirnova"}
WEAK_PASSWORD = {"ru": "ольга26", "en": "Olga26x"}  # short, and the name in it
SAID = {
    "ru": ("Здравствуйте! Я вас вижу.", "Добрый день, доктор.", "будни после 18:00"),
    "en": ("Hello! I can see you.", "Good afternoon, doctor.", "weekdays after 6 pm"),
}

CYRILLIC = re.compile(r"[а-яё]+", re.IGNORECASE)
LATIN = re.compile(r"[a-z]{2,}", re.IGNORECASE)
# Latin words a Russian page may show: abbreviations, file types, the word e-mail.
ABBREVIATIONS = {"sms", "utc", "utf", "windows"}  # SMS, UTC+3, UTF-8, Windows-1251
FILE_TYPES = {"pdf", "jpeg", "png", "dicom", "csv", "xlsx", "ics"}
LATIN_IN_RUSSIAN = {*ABBREVIATIONS, *FILE_TYPES, "mail"}


def demo_texts() -> list[str]:
    """What the demo data and the sample table say (names, centres, diagnoses), which
    stays as people wrote it whatever the page's language, and the languages' own
    names in the language menus."""
    texts = [BRAND, REGION, MANAGER[0], PATIENT[0], SAMPLE.name, "Русский", "English"]
    for name, profiles, description in CENTRES:
        texts += [name, *profiles, description]
    for name, _, _, specialty, _, bio in DOCTORS:
        texts += [name, specialty, bio]
    with SAMPLE.open(encoding="utf-8", newline="") as table:
        texts += [cell for row in csv.reader(table, delimiter=";") for cell in row if cell]
    return sorted(set(texts), key=len, reverse=True)


DATA = demo_texts()


def foreign(text: str, lang: str, data: list[str] = DATA) -> list[str]:
    """The words of ``text`` that are not in ``lang`` (Russian in English, English in
    Russian), leaving out ``data``."""
    for item in data:
        text = text.replace(item, " ")
    if lang == "en":
        return CYRILLIC.findall(text)
    return [word for word in LATIN.findall(text) if word.lower() not in LATIN_IN_RUSSIAN]


async def reads_in(page: Page, lang: str, where: str = "#view", data: list[str] = DATA) -> None:
    """The part of the page the user reads is in ``lang`` (and so is the page)."""
    assert await page.evaluate("document.documentElement.lang") == lang
    text = await page.locator(where).inner_text()
    found = foreign(text, lang, data)
    assert found == [], (where, found, text[:1500])


def moscow_wall_clock(moment: datetime) -> str:
    """A moment as a datetime-local input takes it, on Moscow's clock (the doctor's)."""
    return moment.astimezone(MOSCOW).strftime("%Y-%m-%dT%H:%M")


def age_on(today: date, born: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


TOURS = [
    pytest.param(size, lang, id=f"{name}-{lang}")
    for name, size in (("phone", PHONE), ("desktop", DESKTOP))
    for lang in ("ru", "en")
]


@pytest.mark.parametrize(("size", "lang"), TOURS)
async def test_the_tour(
    browser: Browser, client: AppClient, app: web.Application, size: ViewportSize, lang: str
) -> None:
    started = time.monotonic()
    await demo_data(app)
    phone = size == PHONE
    login, password = await manager_reads_the_credentials(browser, client, app, phone, lang)
    await referred_patient_meets_the_doctor(browser, client, login, password, phone, lang)
    await a_new_patient_registers_books_and_asks(browser, client, phone, lang)
    print(f"tour {'phone' if phone else 'desktop'}-{lang}: {time.monotonic() - started:.1f} s")


async def manager_reads_the_credentials(
    browser: Browser, client: AppClient, app: web.Application, phone: bool, lang: str
) -> tuple[str, str]:
    """The demo manager imports the sample table and reads the first referred patient's
    login and password where a demo deployment keeps them: the outbox."""
    words = Words(lang)
    office = await new_page(browser, client, phone=phone)
    await sign_in(office, client, MANAGER[1], MANAGER[2])
    await choose_language(office, lang)
    await go(office, "#/imports")
    upload_form = office.locator("#import-form")
    await upload_form.get_by_label(words("imports.file")).set_input_files(SAMPLE)
    await upload_form.get_by_role("button", name=words("imports.check")).click()
    report = office.locator("#import-report")
    await report.get_by_role("button", name=words("imports.confirm", n=5)).click()
    await report.locator("h2", has_text=words("imports.doneTitle")).wait_for()
    summary = await report.locator("#report-summary").inner_text()
    assert summary == words("imports.doneSummary", total=6, created=5, invalid=1)
    await reads_in(office, lang)

    await run_jobs_once(app)  # the server's outbox round: no gateway, so kept
    await go(office, "#/outbox")
    signed = await ok(
        client, "POST", "/auth/login", None, {"login": MANAGER[1], "password": MANAGER[2]}
    )
    client.session.cookie_jar.clear()
    outbox = (await ok(client, "GET", "/outbox", signed["token"]))["items"]
    [sms] = [m for m in outbox if m["recipient"] == VORONIN]
    cells = (await office.locator(f"#outbox tr[data-id='{sms['id']}']").inner_text()).split("\t")
    assert cells[2:5] == [
        words("channel.sms"),
        words("notice.referral_credentials"),
        words("delivery.kept"),
    ]
    # The SMS is in the patient's language (the account's: Russian, nobody chose yet).
    found = CREDENTIALS.search(await kept_text(office, sms["id"], lang))
    assert found
    await office.context.close()
    return found[1], found[2]


async def referred_patient_meets_the_doctor(
    browser: Browser, client: AppClient, login: str, password: str, phone: bool, lang: str
) -> None:
    """The referred patient signs in with what the SMS says, changes the password; the
    centre's doctor schedules the referral (a time in the past refused first), and they
    meet in the video room until the doctor ends the consultation."""
    words, room = Words(lang), Words(lang, ("room",))
    home = await new_page(browser, client, media=True, phone=phone)
    await sign_in(home, client, login, password, lang)
    await change_password(home, password, "Sunny-Garden-58", lang)
    referral = home.locator("#consultations li.consultation")
    assert await referral.get_attribute("data-state") == "requested"
    assert CARDIOLOGY in await referral.inner_text()
    await reads_in(home, lang)

    desk = await new_page(browser, client, media=True, phone=phone)
    await sign_in(desk, client, SOKOLOVA[1], DOCTOR_PASSWORD)
    await choose_language(desk, lang)
    assert (await app_state(desk))["route"] == "/requests"
    request = desk.locator("#consultations li", has_text="Воронин Алексей Игоревич")
    await click_and_draw(desk, request.get_by_role("link"))
    consultation_id = (await app_state(desk))["route"].rsplit("/", 1)[1]
    schedule = desk.locator("#schedule-form")
    when = schedule.get_by_label(words("details.startsAt"))
    await when.fill(moscow_wall_clock(datetime.now(UTC) - timedelta(hours=1)))
    await schedule.get_by_role("button", name=words("details.schedule"), exact=True).click()
    refusal = schedule.get_by_role("alert")
    await refusal.wait_for(state="visible")
    said = await refusal.inner_text()
    assert said == f"{words('details.startsAt')}: {words('problem.in_past')}.", said
    assert foreign(said, lang) == [], said
    # Soon: the room opens 15 minutes before (the server's clock stands at the start).
    await when.fill(moscow_wall_clock(datetime.now(UTC) + timedelta(minutes=10)))
    await schedule.get_by_role("button", name=words("details.schedule"), exact=True).click()
    await desk.locator("article[data-state=scheduled]").wait_for()
    # The patient's open list changes by itself.
    await home.locator("#consultations li.consultation[data-state=scheduled]").wait_for()

    # The patient comes first, says no to a recording, and waits for the doctor, whose
    # name and specialty are shown from the start.
    await enter_room(home, consultation_id)
    assert await home.evaluate("document.documentElement.lang") == lang
    status = home.locator("#status")
    assert await status.inner_text() == room("waiting")
    await home.get_by_role("button", name=room("consentNo"), exact=True).click()
    assert await home.locator("#peer-name").inner_text() == SOKOLOVA[0]
    assert await home.locator("#peer-specialty").inner_text() == SOKOLOVA[3]
    await enter_room(desk, consultation_id)
    await wait_in_page(home, f"{ROOM}.remoteFrames > 10", seconds=30)
    assert await status.inner_text() == room("inRoom")
    await wait_in_page(home, "/^\\d+:\\d\\d$/.test(document.getElementById('timer').textContent)")
    assert await home.locator("#timer").is_visible()

    hello, answer, _ = SAID[lang]
    await say_in_room(desk, hello)
    if phone:
        # The chat is a panel over the video, closed: what came is counted on its button.
        badge = home.locator("#unread")
        await badge.wait_for(state="visible")
        assert await badge.inner_text() == "1"
        toggle = home.locator("#chat-toggle")
        label = f"{room('chat')}: {room.count('unread', 1)}"
        assert await toggle.get_attribute("aria-label") == label
        await phone_layout(home)
        await toggle.click()
        await phone_layout(home)
    else:
        await side_by_side(home)
    await home.locator("#chat-log li.theirs", has_text=hello).wait_for()
    await say_in_room(home, answer)
    await desk.locator("#chat-log li.theirs", has_text=answer).wait_for()
    await reads_in(home, lang, "#room", [SOKOLOVA[0], SOKOLOVA[3], *DATA])
    for control in await home.locator("#controls button:visible").all():
        named = await control.get_attribute("aria-label")
        assert named
        assert foreign(named, lang) == [], named

    # The doctor ends it, for everyone.
    await desk.locator("#end").click()
    await desk.get_by_role("button", name=room("endConfirm"), exact=True).click()
    await wait_in_page(home, f"{ROOM}.phase === 'ended'")
    assert await status.inner_text() == ENDED[lang]
    assert await home.locator("#after-title").inner_text() == ENDED[lang]
    assert await home.locator("#after-link").inner_text() == room("openConsultation")
    await home.context.close()
    await desk.context.close()


async def side_by_side(page: Page) -> None:
    """On a laptop the chat is beside the video, both whole on the screen."""
    assert page.viewport_size == DESKTOP
    video = await page.locator("#remotes video").first.bounding_box()
    chat = await page.locator("#chat").bounding_box()
    assert video is not None
    assert chat is not None
    assert chat["x"] >= video["x"] + video["width"] - 1, (video, chat)
    assert chat["y"] < video["y"] + video["height"], (video, chat)
    for box in (video, chat):
        assert box["x"] >= 0
        assert box["y"] >= 0
        assert box["x"] + box["width"] <= DESKTOP["width"]
        assert box["y"] + box["height"] <= DESKTOP["height"]
    assert await page.locator("#chat-toggle").is_hidden()


async def a_new_patient_registers_books_and_asks(
    browser: Browser, client: AppClient, phone: bool, lang: str
) -> None:
    words = Words(lang)
    name = NEWCOMER[lang]
    mine = [name, *DATA]
    page = await new_page(browser, client, phone=phone)
    await open_app(page, client, "/register")
    await choose_language(page, lang)
    await page.get_by_label(words("register.fullName"), exact=True).fill(name)
    await page.get_by_label(words("register.birthDate"), exact=True).fill("1975-06-15")
    await page.get_by_label(words("register.phone"), exact=True).fill(next_phone())
    password = page.get_by_label(words("register.password"), exact=True)
    await password.fill(WEAK_PASSWORD[lang])
    # The hint says the server's own rule.
    hint = await page.locator(f"#{await password.get_attribute('aria-describedby')}").inner_text()
    assert hint == words("register.passwordHint")
    assert f" {MIN_LENGTH} " in hint
    # The consent (152-ФЗ), in the page's language: read, then agreed to.
    await page.get_by_text(words("consent.read"), exact=True).click()
    law = {"ru": "152-ФЗ", "en": "152-FZ"}[lang]
    await page.locator(".consent-text .text", has_text=law).wait_for()
    await reads_in(page, lang, ".consent-text .text")
    await page.get_by_label(words("consent.agree"), exact=True).check()
    submit = page.get_by_role("button", name=words("register.submit"), exact=True)
    await submit.click()
    # Two problems with the password, each in words, the first with its figure.
    refusal = page.locator("form").get_by_role("alert")
    await refusal.wait_for(state="visible")
    said = await refusal.inner_text()
    label = words("register.password")
    assert f"{label}: {words('problem.password_too_short', min=MIN_LENGTH)}" in said, said
    assert f"{label}: {words('problem.password_personal')}" in said, said
    assert foreign(said, lang) == [], said
    await password.fill("Patient-Own-2026")
    await submit.click()
    await wait_in_page(page, "window.telemedApp.route === '/documents'")

    # The consent is in the profile: when, and its text; the time zone by its city.
    await go(page, "/profile")
    given = await page.locator("#consent").inner_text()
    assert given.startswith(words.texts["consent.given"].split("{")[0]), given
    await page.locator("#consent summary").click()
    await page.locator("#consent .text", has_text=law).wait_for()
    zone = page.get_by_label(words("profile.timeZone"), exact=True).locator("option:checked")
    assert await zone.inner_text() == ZONE[lang]
    assert await page.title() == f"{words('profile.title')} — {BRAND}"
    await reads_in(page, lang, data=mine)

    # A duty doctor's time: a day chip, then a time chip, and a topic of that doctor.
    await go(page, "/new")
    doctor = page.get_by_label(words("new.dutyDoctor"), exact=True)
    await doctor.select_option(label=f"{SOKOLOVA[0]} — {SOKOLOVA[3]}")
    await page.locator(f"#slots[data-doctor='{await doctor.input_value()}']").wait_for()
    slots = page.locator("#slots")
    assert await slots.locator("legend").inner_text() == words("new.slot", zone=ZONE[lang])
    day = slots.locator(".days .chip").nth(1)
    await day.locator("label").click()
    times = slots.locator(".times label")
    free = await times.count()
    assert free >= 2
    assert await day.locator("small").inner_text() == words.count("new.freeCount", free)
    chip = times.nth(1)
    chosen = await chip.inner_text()
    await chip.click()
    assert await page.get_by_role("radio", name=chosen).is_checked()
    topics = await page.get_by_label(words("new.topic"), exact=True).locator("option").all()
    shown = [await option.inner_text() for option in topics]
    assert shown[0] == words("topic.cardiovascular")
    assert shown[-1] == words("topic.other")
    assert words("topic.gynaecological") not in shown
    await reads_in(page, lang, data=mine)
    await page.get_by_role("button", name=words("new.book"), exact=True).click()
    await page.locator("article[data-state=scheduled]").wait_for()
    facts = await page.locator("dl.facts").inner_text()
    assert f"{chosen} " in facts
    assert f"({ZONE[lang]})" in facts
    assert "Europe/Moscow" not in facts
    scheduled = f"{words('details.title')} · {words('state.scheduled')} — {BRAND}"
    assert await page.title() == scheduled
    await reads_in(page, lang, data=mine)

    # Route 1: a request to the cardiology centre; a pasted story too long for the form
    # is refused in words, with the limit.
    await go(page, "/new")
    card = page.locator("#centres li", has_text=CARDIOLOGY)
    await card.get_by_role("link", name=words("new.askCentre")).click()
    request = page.locator("#request-form")
    await request.wait_for()
    assert await request.get_by_label(words("new.fullName")).input_value() == name
    await request.get_by_label(words("new.diagnosis"), exact=True).fill("I10")
    complaints = request.get_by_label(words("new.complaints"), exact=True)
    story = SAID[lang][0] + " "
    await complaints.fill(story * (4001 // len(story) + 1))
    preferred = SAID[lang][2]
    await request.get_by_label(words("new.preferredTimes"), exact=True).fill(preferred)
    send = request.get_by_role("button", name=words("new.send"), exact=True)
    await send.click()
    refusal = request.get_by_role("alert")
    await refusal.wait_for(state="visible")
    said = await refusal.inner_text()
    too_long = f"{words('new.complaints')}: {words('problem.too_long', max=4000)}"
    assert said == f"{words('error.invalid_input')} {too_long}.", said
    assert foreign(said, lang) == [], said
    await complaints.fill(story)
    await send.click()
    await page.locator("article[data-state=requested]").wait_for()
    facts = await page.locator("dl.facts").inner_text()
    assert f"{words('details.preferredTimes')}\n{preferred}" in facts
    years = age_on(datetime.now(MOSCOW).date(), date(1975, 6, 15))
    assert f"{name}, {words.count('details.years', years)}" in facts
    requested = f"{words('details.title')} · {words('state.requested')} — {BRAND}"
    assert await page.title() == requested
    await reads_in(page, lang, data=[*mine, story.strip(), preferred])
    await page.context.close()
