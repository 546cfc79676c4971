"""The routes to a consultation, through the web app in Chromium: route 1 (a patient
registers, uploads a document, sends a request to a centre; the centre's doctor reads it
and schedules; the patient is notified live) and route 2 (a duty doctor publishes time;
a patient books it and they chat before the consultation)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from playwright.async_api import Browser, Locator, Page

from telemed.clock import FakeClock
from tests import samples
from tests.e2e.app_pages import go, new_page, screenshot, sign_in, wait_in_page
from tests.factories import PASSWORD as API_PASSWORD
from tests.factories import AppClient, next_phone
from tests.flows import (
    NEW_PASSWORD,
    make_centre,
    make_doctor,
    make_patient,
    manager_token,
    request_to_centre,
)

PASSWORD = "Patient-Own-2026"


async def register_patient(page: Page, client: AppClient, phone: str) -> None:
    await page.goto(str(client.make_url("/#/register")))
    await page.get_by_label("ФИО").fill("Смирнова Ольга Андреевна")
    await page.get_by_label("Дата рождения").fill("1975-06-15")
    await page.get_by_label("Телефон").fill(phone)
    await page.get_by_label("Пароль").fill(PASSWORD)
    # The consent (152-ФЗ): its text can be read right there, and must be agreed to.
    await page.get_by_text("Текст согласия на обработку персональных данных").click()
    await page.locator(".consent-text .text", has_text="152-ФЗ").wait_for()
    await page.get_by_label("Я прочитал(а) и даю согласие", exact=False).check()
    await page.get_by_role("button", name="Зарегистрироваться").click()
    await wait_in_page(page, "window.telemedApp.route === '/documents'")


async def upload_document(page: Page, tmp_path: Path, title: str) -> None:
    pdf = tmp_path / "Выписка.pdf"
    pdf.write_bytes(samples.pdf("Discharge summary", pages=2))
    await page.get_by_label("Файл (PDF, JPEG, PNG, DICOM)").set_input_files(str(pdf))
    await page.get_by_label("Вид документа").select_option("discharge_summary")
    await page.get_by_label("Название").fill(title)
    await page.get_by_role("button", name="Загрузить документ").click()
    await page.locator("#documents li.document", has_text=title).wait_for()


# How many dark pixels the first page of a drawn PDF has (its text).
INK = """(canvas) => {
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let dark = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] < 300) dark += 1;
  return dark;
}"""


async def shows_the_preview(page: Page, item: Locator, pages: int) -> None:
    """The PDF is drawn inside the page (pdf.js, as on a phone): the file is fetched
    with the session, and each page's canvas has the document's text on it."""
    async with page.expect_response(lambda r: "/content?inline=true" in r.url) as answer:
        await item.get_by_role("button", name="Просмотр").click()
    response = await answer.value
    assert response.status == 200
    assert response.headers["content-type"] == "application/pdf"
    drawn = item.locator(f".preview.pdf[data-pages='{pages}']")
    await drawn.wait_for()
    canvases = drawn.locator("canvas.pdf-page")
    assert await canvases.count() == pages
    assert await canvases.first.evaluate(INK) > 200


async def unread(page: Page) -> int:
    return int(await page.evaluate("window.telemedApp.unread"))


async def test_route_1_register_upload_request_schedule_notify(
    browser: Browser, client: AppClient, tmp_path: Path
) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager, "Кардиоцентр", ["кардиология", "аритмология"])
    doctor = await make_doctor(client, manager, centre["id"], name="Ершов Пётр Алексеевич")

    patient = await new_page(browser, client, phone=True)
    await register_patient(patient, client, next_phone())
    await upload_document(patient, tmp_path, "Выписка из стационара")
    # The upload is listed, and its preview opens in the page.
    item = patient.locator("#documents li.document", has_text="Выписка из стационара")
    await shows_the_preview(patient, item, pages=2)
    await screenshot(patient, "patient-documents", tmp_path, at=patient.locator("#documents"))
    # A document uploaded by mistake is deleted (after the page asks to confirm).
    await upload_document(patient, tmp_path, "Не тот файл")
    mistake = patient.locator("#documents li.document", has_text="Не тот файл")
    await mistake.get_by_role("button", name="Удалить").click()
    await mistake.wait_for(state="detached")
    assert await patient.locator("#documents li.document").count() == 1

    # Route 1: the centre is picked from the list, with its profiles shown.
    await go(patient, "/new")
    card = patient.locator("#centres li", has_text="Кардиоцентр")
    assert "аритмология" in await card.inner_text()
    await card.get_by_role("link", name="Подать заявку").click()
    await wait_in_page(patient, "window.telemedApp.route === '/new'")
    await patient.locator("#request-form").wait_for()
    # The form is prefilled from the account.
    assert await patient.get_by_label("ФИО пациента").input_value() == "Смирнова Ольга Андреевна"
    assert int(await patient.get_by_label("Возраст").input_value()) >= 50
    await patient.get_by_label("Диагноз").fill("Гипертоническая болезнь II стадии")
    await patient.get_by_label("Жалобы").fill("Головные боли по утрам, давление до 160/100")
    await patient.get_by_label("Когда вам удобно (необязательно)").fill("будни после 18:00")
    await patient.get_by_label("Выписка из стационара (Выписка)").check()
    await patient.get_by_role("button", name="Отправить заявку").click()
    await wait_in_page(patient, "(window.telemedApp.route || '').startsWith('/consultations/')")
    assert await patient.locator("article[data-state=requested]").count() == 1
    before = await unread(patient)

    # The centre's doctor sees the request with its deadline, and its document.
    desk = await new_page(browser, client)
    await sign_in(desk, client, doctor["phone"], NEW_PASSWORD)
    await wait_in_page(desk, "window.telemedApp.route === '/requests'")
    request = desk.locator("#consultations li", has_text="Смирнова Ольга Андреевна")
    assert "осталось" in await request.locator(".deadline").inner_text()
    await screenshot(desk, "doctor-requests", tmp_path)
    await request.get_by_role("link").click()
    await desk.locator("#schedule-form").wait_for()
    facts = await desk.locator("dl.facts").inner_text()
    assert "Головные боли" in facts
    assert "Удобное время\nбудни после 18:00" in facts
    await shows_the_preview(
        desk, desk.locator("li.document", has_text="Выписка из стационара"), pages=2
    )

    # The doctor schedules it, in the doctor's own time zone (Moscow).
    await desk.get_by_label("Дата и время").fill(tomorrow_at_ten())
    await desk.get_by_label("Длительность, минут").fill("40")
    await desk.get_by_role("button", name="Назначить время").click()
    await desk.locator("article[data-state=scheduled]").wait_for()
    assert "10:00" in await desk.locator("dl.facts").inner_text()

    # The patient is told at once: the bell and the open page change without a reload.
    await wait_in_page(patient, f"window.telemedApp.unread > {before}")
    await patient.locator("article[data-state=scheduled]").wait_for()
    assert "10:00" in await patient.locator("dl.facts").inner_text()
    await screenshot(patient, "patient-consultation", tmp_path)
    await patient.locator("#bell").click()
    assert await patient.locator("#bell-panel li", has_text="Консультация назначена").count() == 1
    # The calendar file of the appointment.
    async with patient.expect_download() as download_info:
        await patient.locator("#calendar").click()
    ics = await (await download_info.value).path()
    text = await asyncio.to_thread(Path(ics).read_text, "utf-8")
    assert text.startswith("BEGIN:VCALENDAR")
    assert "DTSTART" in text


def tomorrow_at_ten() -> str:
    """Tomorrow at 10:00 on Moscow's wall clock, as a datetime-local input takes it."""
    moscow = datetime.now(UTC).astimezone(ZoneInfo("Europe/Moscow")) + timedelta(days=1)
    return moscow.strftime("%Y-%m-%dT10:00")


async def test_route_2_publish_slots_book_and_chat_before(
    browser: Browser, client: AppClient, clock: FakeClock, tmp_path: Path
) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager, "Центр общей практики", ["терапия"])
    duty = await make_doctor(client, manager, centre["id"], duty=True, name="Белова М. С.")

    # The duty doctor publishes tomorrow's morning through the page.
    desk = await new_page(browser, client)
    await sign_in(desk, client, duty["phone"], NEW_PASSWORD)
    await go(desk, "/slots")
    await desk.get_by_label("С", exact=True).fill("09:00")
    await desk.get_by_label("До", exact=True).fill("11:00")
    await desk.get_by_label("Длительность приёма, минут").fill("30")
    await desk.get_by_role("button", name="Опубликовать время дежурства").click()
    await desk.locator("#my-slots tbody tr").nth(3).wait_for()
    assert await desk.locator("#my-slots tbody tr").count() == 4

    # A patient books the 09:30 slot, shown in the patient's own time zone.
    patient = await new_page(browser, client, phone=True)
    await register_patient(patient, client, next_phone())
    await go(patient, "/new")
    await patient.get_by_label("Дежурный врач").select_option(label="Белова М. С. — кардиолог")
    await patient.locator(f"#slots[data-doctor='{duty['id']}']").wait_for()
    # Times are large chips of the chosen day (tappable: 44 px at least), a radio
    # group underneath; the topics are the cardiologist's.
    chip = patient.locator("#slots .times label", has_text="09:30").first
    box = await chip.bounding_box()
    assert box is not None
    assert box["height"] >= 44
    assert box["width"] >= 44
    await chip.click()
    assert await patient.get_by_role("radio", name="09:30").is_checked()
    topics = await patient.get_by_label("Тема").locator("option").all_inner_texts()
    assert "Гинекология" not in topics
    assert topics[0] == "Сердечно-сосудистые заболевания"
    assert topics[-1] == "Другое"
    await patient.get_by_label("Тема").select_option("cardiovascular")
    await patient.get_by_label("Вопрос врачу").fill("Можно ли заниматься бегом при аритмии?")
    await screenshot(patient, "patient-booking", tmp_path, at=patient.locator("#duty-form"))
    await patient.get_by_role("button", name="Записаться").click()
    await wait_in_page(patient, "(window.telemedApp.route || '').startsWith('/consultations/')")
    await patient.locator("article[data-state=scheduled]").wait_for()
    assert "09:30" in await patient.locator("dl.facts").inner_text()
    consultation_url = patient.url

    # They chat before the consultation, both ways, live.
    await patient.get_by_label("Сообщение").fill("Здравствуйте! Взять ли с собой ЭКГ?")
    await patient.get_by_role("button", name="Отправить").click()
    await patient.locator("#chat-log li.mine", has_text="Взять ли с собой ЭКГ").wait_for()
    await desk.goto(consultation_url)
    await desk.locator("#chat-log li.theirs", has_text="Взять ли с собой ЭКГ").wait_for()
    await desk.get_by_label("Сообщение").fill("Да, пришлите фото ЭКГ в документы.")
    await desk.get_by_role("button", name="Отправить").click()
    await patient.locator("#chat-log li.theirs", has_text="пришлите фото ЭКГ").wait_for()
    assert await patient.locator("#chat-log li").count() == 2
    # The slot is no longer free for anyone else.
    await desk.goto(str(client.make_url("/#/slots")))
    await desk.locator("#my-slots tbody tr", has_text="Занято").wait_for()
    assert await desk.locator("#my-slots tbody tr", has_text="Занято").count() == 1

    # The patient cancels with a reason; the doctor's open page shows it at once, and
    # the time is free again.
    await desk.goto(consultation_url)
    await desk.locator("article[data-state=scheduled]").wait_for()
    await patient.locator("summary", has_text="Отменить консультацию").click()
    await patient.get_by_label("Причина").fill("Заболела, приду в другой день")
    await patient.get_by_role("button", name="Отменить консультацию").click()
    await patient.locator("article[data-state=cancelled]").wait_for()
    await desk.locator("article[data-state=cancelled]").wait_for()
    assert "Заболела, приду в другой день" in await desk.locator("dl.facts").inner_text()
    await desk.goto(str(client.make_url("/#/slots")))
    await desk.locator("#my-slots tbody tr").nth(3).wait_for()
    assert await desk.locator("#my-slots tbody tr", has_text="Занято").count() == 0


async def test_the_doctor_declines_a_request_with_a_reason(
    browser: Browser, client: AppClient
) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager, "Кардиоцентр")
    doctor = await make_doctor(client, manager, centre["id"])
    patient = await make_patient(client)
    created = await request_to_centre(client, patient, centre["id"], age=41)
    elder = await make_patient(client)
    older = await request_to_centre(client, elder, centre["id"], diagnosis="ИБС", age=64)

    desk = await new_page(browser, client)
    await sign_in(desk, client, doctor["phone"], NEW_PASSWORD)
    # Ages in Russian plurals.
    await go(desk, f"/consultations/{older['id']}")
    assert ", 64 года" in await desk.locator("dl.facts").inner_text()
    await go(desk, f"/consultations/{created['id']}")
    assert ", 41 год" in await desk.locator("dl.facts").inner_text()
    decline = desk.locator("#decline-form")
    await decline.get_by_label("Причина").fill("Нужен невролог: обратитесь в неврологический центр")
    await decline.get_by_role("button", name="Отклонить заявку").click()
    await desk.locator("article[data-state=declined]").wait_for()
    # Nothing more to do with it: no forms are left on the page.
    assert await desk.locator("#schedule-form, #decline-form").count() == 0

    home = await new_page(browser, client, phone=True)
    await sign_in(home, client, patient["user"]["phone"], API_PASSWORD)
    card = home.locator("#consultations li.consultation")
    assert await card.get_attribute("data-state") == "declined"
    await card.get_by_role("link").click()
    await home.locator("article[data-state=declined]").wait_for()
    assert "Нужен невролог" in await home.locator("dl.facts").inner_text()
