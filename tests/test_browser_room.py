"""A real browser in the video room: Chromium with a fake camera and microphone checks
its devices, joins a consultation with an aiortc doctor, and media flows both ways
through the relay; the recording of both decodes after the patient's consent in the
page's dialog. With the permission denied, the page says so in the user's language and
the room (the doctor) sees it. The chat, the doctor's status, mute, a dropped
connection, the end; the doctor's own page; a phone-sized screen."""

from __future__ import annotations

from typing import Any

import av
import pytest
from playwright.async_api import Browser, Page

from telemed import keys
from tests.browser import phone_layout, wait_in_page
from tests.factories import AppClient
from tests.flows import ok
from tests.media_peers import MediaClient, participant
from tests.realtime import Peer, send


@pytest.fixture
def db_backend() -> str:
    return "sqlite"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"media_addresses": ["127.0.0.1"]}


async def open_room(
    browser: Browser,
    client: AppClient,
    booked: dict[str, Any],
    *,
    allow: bool,
    lang: str = "",
    who: str = "patient",
    width: int = 1280,
    height: int = 800,
) -> Page:
    """The room page of the consultation's patient (or doctor), at its pre-join check."""
    origin = str(client.make_url("/")).rstrip("/")
    context = await browser.new_context(viewport={"width": width, "height": height})
    if allow:
        await context.grant_permissions(["camera", "microphone"], origin=origin)
    page = await context.new_page()
    page.on("console", lambda message: print("browser:", message.text))
    token = booked[who]["token"]
    choice = f"&lang={lang}" if lang else ""
    await page.goto(f"{origin}/static/room.html?consultation={booked['id']}&token={token}{choice}")
    await wait_in_page(page, "window.telemedRoom.phase === 'prejoin'")
    return page


async def join(page: Page) -> None:
    """Click «join» once the check is done; wait until the media connection is set up."""
    await page.locator("#join:enabled").click()
    await wait_in_page(page, "window.telemedRoom.phase === 'joined'")


async def room_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate("window.telemedRoom")
    return state


async def test_a_browser_patient_and_an_aiortc_doctor_see_each_other_and_are_recorded(
    browser: Browser,
    client: AppClient,
    booked: dict[str, Any],
    room_doctor: MediaClient,
) -> None:
    doctor = room_doctor
    page = await open_room(browser, client, booked, allow=True)
    # The check before joining: the preview runs, the level meter moves with the fake
    # microphone's beep, and nothing has been sent to the room yet.
    state = await room_state(page)
    assert (state["camera"], state["microphone"]) == ("granted", "granted")
    await wait_in_page(page, "window.telemedRoom.micLevel > 0.05")
    await wait_in_page(page, "document.getElementById('local').videoWidth > 0")
    assert not doctor.peer.events("room:participant_joined")
    await join(page)

    # Both directions: the doctor decodes the browser's camera and microphone, the page
    # plays the doctor's video.
    try:
        await doctor.peer.wait_for(
            lambda: doctor.decoded["video"] >= 30 and doctor.decoded["audio"] >= 30, seconds=30
        )
    except TimeoutError:
        room = client.app[keys.ROOMS].get(booked["id"])
        assert room is not None
        server = {
            p.role: (
                {k: v.frames for k, v in p.publications.items()},
                {k: (t.forwarded, t.dropped) for k, t in p.viewing.items()},
                p.pc.connectionState if p.pc else None,
                p.pc.signalingState if p.pc else None,
            )
            for p in room.participants.values()
        }
        raise AssertionError(
            f"doctor got {dict(doctor.decoded)}; page {await room_state(page)}; server {server}"
        ) from None
    await wait_in_page(page, "window.telemedRoom.remoteFrames >= 30", seconds=30)
    assert (640, 480) in doctor.sizes
    # The page offered without waiting for its candidates and trickled them after.
    assert await page.evaluate("window.telemedRoom.trickled") >= 1

    # The server's check of the browser's media reaches the doctor.
    cid = booked["id"]
    await doctor.peer.wait_for(
        lambda: any(
            c["camera"]["state"] == "ok" and c["microphone"]["state"] == "ok"
            for c in doctor.peer.events("media:status_changed")
        ),
        seconds=20,
    )

    # Recording with consent: the page asks the patient on entering; the patient agrees
    # in the dialog, the doctor consents too, and starts.
    assert await page.locator("#consent-dialog").is_visible()
    assert await page.locator("#recording").is_hidden()
    await page.get_by_role("button", name="Да, согласен(на)").click()

    def patient_consented() -> bool:
        return any(
            consent["granted"]
            for change in doctor.peer.events("recording:state_changed")
            for consent in change["recording"]["consents"]
        )

    await doctor.peer.wait_for(patient_consented)  # the click's event reached the server
    command = {"consultation_id": cid}
    assert (await doctor.peer.call("recording:consent", {**command, "granted": True}))["ok"]
    started = await doctor.peer.call("recording:start", command)
    assert started["ok"], started
    await wait_in_page(page, "window.telemedRoom.recording === true")
    assert await page.locator("#recording").inner_text() == "Идёт запись"
    # Recorded until both sides' cameras have sent 40 more frames (2 s at 20 fps).
    room = client.app[keys.ROOMS].get(cid)
    assert room is not None
    recorded_from = {p.user_id: p.publications["video"].frames for p in room.participants.values()}
    await doctor.peer.wait_for(
        lambda: all(
            p.publications["video"].frames - recorded_from[p.user_id] >= 40
            for p in room.participants.values()
        ),
        seconds=30,
    )
    assert (await doctor.peer.call("recording:stop", command))["ok"]
    await wait_in_page(page, "window.telemedRoom.recording === false")
    assert await page.locator("#recording").is_hidden()
    listed = await ok(client, "GET", f"/consultations/{cid}/recordings", booked["doctor"]["token"])
    assert len(listed["items"]) == 2
    data_dir = client.app[keys.SETTINGS].data_dir
    for item in listed["items"]:
        path = next((data_dir / "recordings").rglob(f"{item['user_id']}-*.webm"))
        counts = {"video": 0, "audio": 0}
        with av.open(str(path)) as container:
            for frame in container.decode(*container.streams):
                counts["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
        assert counts["video"] >= 20, (item, counts)  # the fake camera: 20 fps or so
        assert counts["audio"] >= 50, (item, counts)
    await page.context.close()


@pytest.mark.parametrize(
    ("lang", "locale", "explained", "camera"),
    [
        ("", "ru", "запрещён", "Пациент: камера запрещена"),
        ("en", "ru", "blocked", "Patient: camera blocked"),
        ("", "en", "blocked", "Patient: camera blocked"),  # the user's own setting
    ],
)
async def test_a_denied_camera_is_explained_and_shown_to_the_doctor(
    browser: Browser,
    client: AppClient,
    booked: dict[str, Any],
    room_doctor: MediaClient,
    lang: str,
    locale: str,
    explained: str,
    camera: str,
) -> None:
    doctor = room_doctor
    await ok(client, "PATCH", "/me", booked["patient"]["token"], {"locale": locale})
    await ok(client, "PATCH", "/me", booked["doctor"]["token"], {"locale": locale})
    page = await open_room(browser, client, booked, allow=False, lang=lang)
    state = await room_state(page)
    assert state["camera"] == "denied"
    assert explained in await page.locator("#guidance").inner_text()
    assert await page.evaluate("document.documentElement.lang") == (lang or locale)
    await join(page)
    await doctor.peer.wait_for(
        lambda: any(
            c["camera"]["permission"] == "denied"
            for c in doctor.peer.events("media:status_changed")
        )
    )
    # The doctor's own page shows it in words.
    doctor_page = await open_room(browser, client, booked, allow=True, lang=lang, who="doctor")
    await join(doctor_page)
    await wait_in_page(
        doctor_page, f"document.getElementById('others').textContent.includes({camera!r})"
    )
    await page.context.close()
    await doctor_page.context.close()


async def test_the_devices_can_be_chosen_before_joining(
    browser: Browser, client: AppClient, room: dict[str, Any]
) -> None:
    page = await open_room(browser, client, room, allow=True)
    microphones = page.locator("#microphone-select option")
    assert await microphones.count() >= 2  # Chromium's fake devices: several microphones
    assert await page.locator("#camera-select option").count() >= 1
    track = "document.getElementById('local').srcObject.getAudioTracks()[0]"
    before = await page.evaluate(f"{track}.getSettings().deviceId")
    assert await page.locator("#microphone-select").input_value() == before
    other = next(
        value
        for value in await microphones.evaluate_all("options => options.map(o => o.value)")
        if value != before
    )
    await page.locator("#microphone-select").select_option(other)
    await wait_in_page(page, f"{track}.getSettings().deviceId === {other!r}")
    await wait_in_page(page, f"{track}.readyState === 'live'")
    await wait_in_page(page, "!document.getElementById('join').disabled")
    assert await page.locator("#microphone-select").input_value() == other
    await page.context.close()


async def test_waiting_chat_status_mute_reconnection_and_the_end_on_a_phone(
    browser: Browser,
    client: AppClient,
    room: dict[str, Any],
    peers: list[Peer],
    media: list[MediaClient],
) -> None:
    cid = room["id"]
    # The doctor writes before the patient comes in: the page shows it from the history.
    early = await participant(client, peers, media, room["doctor"]["token"], cid)
    subscribed = await early.peer.call("consultation:subscribe", {"consultation_id": cid})
    assert subscribed["ok"], subscribed
    sent = await early.peer.call("chat:send", send(cid, "d-1", "Здравствуйте! Я скоро буду."))
    assert sent["ok"], sent

    page = await open_room(browser, client, room, allow=True, width=375, height=812)
    # Before joining: a speaker test and the way back to the consultation.
    await page.get_by_role("button", name="Проверить звук").click()
    assert (await room_state(page))["speakerTests"] == 1
    back = page.get_by_role("link", name="Вернуться к консультации")
    assert await back.get_attribute("href") == f"/#/consultations/{cid}"
    await join(page)
    assert await page.locator("#status").inner_text() == "Ожидаем врача…"
    await page.locator("#consent-no").click()
    await wait_in_page(page, "window.telemedRoom.chat === 1")
    first = page.locator("#chat-log li").first
    assert await first.get_attribute("class") == "theirs"
    # On a phone the chat is a panel over the video, closed: what came is counted.
    chat_button = page.locator("#chat-toggle")
    assert await page.locator("#chat").is_hidden()
    assert await page.locator("#unread").inner_text() == "1"
    assert await chat_button.get_attribute("aria-label") == "Чат: 1 непрочитанное"
    # The doctor's name and specialty, from the start.
    assert await page.locator("#peer-name").inner_text() == room["doctor"]["full_name"]
    assert await page.locator("#peer-specialty").inner_text() == room["doctor"]["specialty"]

    # The doctor comes.
    doctor = early
    assert (await doctor.join())["ok"]
    assert (await doctor.connect_media())["ok"]
    await wait_in_page(page, "window.telemedRoom.remoteFrames >= 10", seconds=30)
    assert await page.locator("#status").inner_text() == "Консультация идёт"
    await wait_in_page(
        page,
        "document.getElementById('others').textContent"
        " === 'Врач: камера работает, микрофон работает'",
    )
    await wait_in_page(page, "/^0:0[1-9]/.test(document.getElementById('timer').textContent)")
    # The page's own call quality, in words (measured every 2 s, told by the server).
    await wait_in_page(page, "!document.getElementById('link-level').hidden", seconds=10)
    level = await page.locator("#link-level").inner_text()
    assert level in ("Связь хорошая", "Связь слабая", "Связь плохая"), level

    # The doctor's video fills most of the phone's screen, the self-view is a small
    # picture, the bar of buttons is on the screen, nothing scrolls; with the chat open
    # too.
    await phone_layout(page)
    await chat_button.click()
    assert await chat_button.get_attribute("aria-expanded") == "true"
    assert await page.locator("#unread").is_hidden()
    await phone_layout(page)
    assert "Здравствуйте" in await first.inner_text()

    # Chat both ways, by keyboard: the input is labelled, Enter sends.
    await page.get_by_label("Сообщение").fill("Добрый день, доктор")
    await page.get_by_label("Сообщение").press("Enter")
    await doctor.peer.wait_for(
        lambda: any(
            m["body"] == "Добрый день, доктор" for m in doctor.peer.events("chat:message_created")
        )
    )
    await wait_in_page(page, "window.telemedRoom.chat === 2")
    assert await page.locator("#chat-log li").nth(1).get_attribute("class") == "mine"
    assert await page.locator("#chat-input").input_value() == ""
    assert (await doctor.peer.call("chat:send", send(cid, "d-2", "Как вы себя чувствуете?")))["ok"]
    await wait_in_page(page, "window.telemedRoom.chat === 3")
    assert "Как вы" in await page.locator("#chat-log li").nth(2).inner_text()

    # Mute and camera: toggle buttons that disable the local tracks; focus is visible.
    mute = page.locator("#mute")
    await mute.focus()
    assert await mute.evaluate("b => getComputedStyle(b).outlineStyle") != "none"
    await page.keyboard.press("Enter")
    assert await mute.get_attribute("aria-pressed") == "true"
    local = "document.getElementById('local').srcObject"
    assert await page.evaluate(f"{local}.getAudioTracks().every(t => !t.enabled)")
    await page.locator("#camera-toggle").click()
    assert await page.locator("#camera-toggle").get_attribute("aria-pressed") == "true"
    assert await page.evaluate(f"{local}.getVideoTracks().every(t => !t.enabled)")
    await mute.click()
    assert await page.evaluate(f"{local}.getAudioTracks().every(t => t.enabled)")

    # A dropped connection: the server loses the page's socket. The page says so, joins
    # again, renegotiates, and the doctor's video goes on.
    sio = client.app[keys.SIO]
    patient_id = (await ok(client, "GET", "/me", room["patient"]["token"]))["id"]
    rooms = client.app[keys.ROOMS].get(cid)
    assert rooms is not None
    sid = rooms.participants[patient_id].sid
    # What the status line said meanwhile (the reconnection may be quicker than a poll).
    await page.evaluate(
        """() => {
          const status = document.getElementById('status');
          window.said = [];
          new MutationObserver(() => window.said.push(status.textContent))
            .observe(status, {childList: true, characterData: true, subtree: true});
        }"""
    )
    await sio.eio.disconnect(sio.manager.eio_sid_from_sid(sid, "/"))
    await wait_in_page(
        page,
        "window.telemedRoom.reconnections === 1 && window.telemedRoom.joins === 2"
        " && window.telemedRoom.phase === 'joined'",
        seconds=40,
    )
    assert "Связь прервалась, переподключаемся…" in await page.evaluate("window.said")
    frames = (await room_state(page))["remoteFrames"]
    await wait_in_page(page, f"window.telemedRoom.remoteFrames >= {frames + 30}", seconds=30)
    assert (await room_state(page))["chat"] == 3  # nothing shown twice after the resubscribe

    # The doctor ends it: the page says so, stops the camera, and links to the consultation.
    assert (await doctor.peer.call("consultation:end", {"consultation_id": cid}))["ok"]
    await wait_in_page(page, "window.telemedRoom.phase === 'ended'")
    assert await page.locator("#status").inner_text() == "Консультация завершена"
    assert await page.locator("#after-title").inner_text() == "Консультация завершена"
    assert await page.locator("#after").is_visible()
    link = page.locator("#after-link")
    assert await link.get_attribute("href") == f"/#/consultations/{cid}"
    assert await page.evaluate(f"{local}.getTracks().every(t => t.readyState === 'ended')")
    await page.context.close()


async def test_the_doctor_records_with_the_patients_consent_and_ends(
    browser: Browser,
    client: AppClient,
    room: dict[str, Any],
    peers: list[Peer],
    media: list[MediaClient],
) -> None:
    cid = room["id"]
    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    assert (await patient.join())["ok"]
    assert (await patient.connect_media())["ok"]
    page = await open_room(browser, client, room, allow=True, who="doctor")
    await join(page)
    assert await page.locator("#consent-dialog").is_hidden()  # the doctor is not asked
    assert await page.locator("#consent").is_hidden()
    await wait_in_page(page, "window.telemedRoom.remoteFrames >= 10", seconds=30)

    # The doctor asks to record: the doctor's consent reaches the patient, whose consent
    # starts the recording.
    await page.locator("#record-start").click()
    await patient.peer.wait_for(
        lambda: any(
            c["granted"]
            for change in patient.peer.events("recording:state_changed")
            for c in change["recording"]["consents"]
        )
    )
    await wait_in_page(page, "document.getElementById('notice').textContent.includes('не дал')")
    consent = {"consultation_id": cid, "granted": True}
    assert (await patient.peer.call("recording:consent", consent))["ok"]
    await wait_in_page(page, "window.telemedRoom.recording === true")
    assert await page.locator("#recording").is_visible()
    assert await page.locator("#record-start").is_disabled()
    await page.locator("#record-stop").click()
    await wait_in_page(page, "window.telemedRoom.recording === false")

    # Ending takes a confirmation; the doctor is then led to write the conclusion.
    await page.locator("#end").click()
    await page.locator("#end-cancel").click()
    assert (await room_state(page))["phase"] == "joined"
    await page.locator("#end").click()
    await page.locator("#end-confirm").click()
    await wait_in_page(page, "window.telemedRoom.phase === 'ended'")
    link = page.get_by_role("link", name="Написать заключение")
    assert await link.get_attribute("href") == f"/#/consultations/{cid}"
    consultation = await ok(client, "GET", f"/consultations/{cid}", room["doctor"]["token"])
    assert consultation["state"] == "completed"
    await page.context.close()
