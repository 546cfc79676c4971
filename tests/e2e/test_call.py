"""A real consultation through the web app: a patient's and a doctor's browser (fake
camera and microphone) call each other through the relay, chat both ways in the room,
record with the patient's consent, end; the doctor issues the conclusion and the patient
reads and downloads it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from playwright.async_api import Browser

from telemed.clock import FakeClock
from tests.e2e.app_pages import (
    ROOM,
    enter_room,
    go,
    new_page,
    say_in_room,
    screenshot,
    sign_in,
    wait_in_page,
)
from tests.factories import PASSWORD, AppClient
from tests.flows import (
    NEW_PASSWORD,
    book_slot,
    later,
    make_centre,
    make_doctor,
    make_patient,
    manager_token,
    ok,
    request_to_centre,
)

MOSCOW = ZoneInfo("Europe/Moscow")


async def test_a_call_in_two_browsers_with_chat_recording_end_and_conclusion(
    browser: Browser, client: AppClient, clock: FakeClock, tmp_path: Path
) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    duty = await make_doctor(client, manager, centre["id"], duty=True, name="Соколова А. В.")
    patient = await make_patient(client, full_name="Иванов Сергей Петрович")
    booked = await book_slot(client, duty, patient, later(clock, minutes=5), topic="cardiovascular")
    consultation_id = booked["id"]

    patient_page = await new_page(browser, client, media=True, phone=True)
    await sign_in(patient_page, client, patient["user"]["phone"], PASSWORD)
    doctor_page = await new_page(browser, client, media=True)
    await sign_in(doctor_page, client, duty["phone"], NEW_PASSWORD)

    # The doctor's day lists it (unless it starts after midnight in Moscow), and not the
    # centre's requests that came in today.
    await request_to_centre(client, await make_patient(client), centre["id"])
    await go(doctor_page, "/today")
    starts = datetime.fromisoformat(booked["starts_at"]).astimezone(MOSCOW)
    same_day = starts.date() == datetime.now(UTC).astimezone(MOSCOW).date()
    listed = await doctor_page.locator("#consultations li.consultation").all()
    ids = [await item.get_attribute("data-id") for item in listed]
    assert ids == ([consultation_id] if same_day else [])

    # The patient comes first and waits; the doctor's entry starts the consultation.
    await enter_room(patient_page, consultation_id)
    await enter_room(doctor_page, consultation_id)
    # Remote video plays on both sides.
    for page in (patient_page, doctor_page):
        await wait_in_page(page, f"{ROOM}.remoteFrames > 15", seconds=30)
    state = await ok(client, "GET", f"/consultations/{consultation_id}", duty["token"])
    assert state["state"] == "in_progress"
    # The doctor sees the patient's camera and microphone working.
    await doctor_page.locator(
        "#others", has_text="Пациент: камера работает, микрофон работает"
    ).wait_for()

    # The patient, asked on joining whether the call may be recorded, says no for now.
    await patient_page.locator("#consent-dialog #consent-no").click()
    # The patient mutes, and the doctor reads it; then unmutes.
    others = doctor_page.locator("#others")
    await patient_page.locator("#mute").click()
    await others.filter(has_text="Пациент: камера работает, микрофон выключен").wait_for()
    await patient_page.locator("#mute").click()
    await others.filter(has_text="Пациент: камера работает, микрофон работает").wait_for()

    # Chat both ways, beside the video.
    await say_in_room(patient_page, "Доктор, вы меня слышите?")
    await doctor_page.locator("#chat-log li", has_text="вы меня слышите").wait_for()
    await say_in_room(doctor_page, "Да, слышу и вижу вас хорошо.")
    await patient_page.locator("#chat-log li", has_text="слышу и вижу").wait_for()

    # Recording: the doctor asks again, the patient agrees, both see the indicator.
    await doctor_page.locator("#record-start").click()
    await patient_page.locator("#consent-dialog #consent-yes").click()
    for page in (patient_page, doctor_page):
        await page.locator("#recording").wait_for(state="visible", timeout=20000)
    await screenshot(patient_page, "room-patient-phone", tmp_path)
    await screenshot(doctor_page, "room-doctor", tmp_path)
    await asyncio.sleep(2)  # two seconds of the call on record

    # The patient leaves the room (the consultation goes on) and comes back through the
    # consultation's page: the call picks up again, still recorded with their consent.
    await patient_page.locator("#leave").click()
    await wait_in_page(patient_page, f"{ROOM}.phase === 'left'")
    await patient_page.locator("#after-link").click()
    await wait_in_page(patient_page, "window.telemedApp && window.telemedApp.rendered > 0")
    await enter_room(patient_page, consultation_id)
    await wait_in_page(patient_page, f"{ROOM}.remoteFrames > 15", seconds=30)
    await patient_page.locator("#recording").wait_for(state="visible")
    assert not await patient_page.locator("#consent-dialog").is_visible()

    # The doctor ends the consultation for everyone.
    await doctor_page.locator("#end").click()
    await doctor_page.locator("#end-confirm").click()
    for page in (patient_page, doctor_page):
        await wait_in_page(page, f"{ROOM}.phase === 'ended'")
    # Both sides' recordings are closed and complete (the files close after the room).
    path = f"/consultations/{consultation_id}/recordings"
    async with asyncio.timeout(20):
        while True:
            items = (await ok(client, "GET", path, duty["token"]))["items"]
            if items and all(item["state"] == "complete" for item in items):
                break
            await asyncio.sleep(0.2)
    assert len({item["user_id"] for item in items}) == 2
    # The patient's rejoin started a second segment of their recording.
    assert len([item for item in items if item["user_id"] == patient["user"]["id"]]) == 2
    assert all(item["size"] > 0 and item["video_frames"] > 0 for item in items)

    # From the room back to the consultation, where the conclusion is written.
    await doctor_page.locator("#after-link").click()
    await doctor_page.wait_for_url("**/#/consultations/*")
    await doctor_page.locator("#conclusion-form").wait_for()
    await doctor_page.get_by_label("Диагноз").fill("Гипертоническая болезнь I стадии")
    await doctor_page.get_by_label("Код МКБ-10").fill("I10")
    await doctor_page.get_by_label("Результаты").fill("АД 150/95, ЧСС 78. Жалобы на головные боли.")
    await doctor_page.get_by_label("Рекомендации").fill("Контроль давления дважды в день.")
    await doctor_page.get_by_role("button", name="Выдать заключение").click()
    await wait_in_page(doctor_page, "!!document.querySelector('article[data-state=concluded]')")
    # The doctor finds the recordings on the page and downloads one (a WebM file).
    recorded = doctor_page.locator("#recordings li[data-state=complete]")
    assert await recorded.count() == 3
    async with doctor_page.expect_download() as download_info:
        await recorded.first.get_by_role("link", name="Скачать").click()
    webm = await (await download_info.value).path()
    assert (await asyncio.to_thread(Path(webm).read_bytes))[:4] == b"\x1a\x45\xdf\xa3"
    # How the call went, measured by both pages: for the doctor, in words.
    quality = doctor_page.locator("#call-quality")
    assert await quality.locator("li[data-role=patient]").count() == 1
    assert await quality.locator("li[data-role=doctor]").count() == 1
    assert "хорошая" in await quality.inner_text()

    # The patient is told, reads it, and downloads the PDF.
    await patient_page.goto(str(client.make_url(f"/#/consultations/{consultation_id}")))
    conclusion = patient_page.locator("#conclusion")
    await conclusion.wait_for()
    assert await patient_page.locator("#recordings").count() == 0  # not the patient's to see
    assert await patient_page.locator("#call-quality").count() == 0
    await patient_page.locator("#bell").click()
    await patient_page.locator("#bell-panel li.unread", has_text="Заключение готово").wait_for()
    assert "Контроль давления" in await conclusion.inner_text()
    await patient_page.keyboard.press("Escape")
    await screenshot(patient_page, "patient-conclusion", tmp_path, at=conclusion)
    async with patient_page.expect_download() as download_info:
        await patient_page.locator("#conclusion-pdf").click()
    pdf = await (await download_info.value).path()
    content = await asyncio.to_thread(Path(pdf).read_bytes)
    assert content.startswith(b"%PDF")
