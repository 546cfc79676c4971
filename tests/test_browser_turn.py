"""TURN with a real browser and a real coturn: Chromium's room page restricted to relay
candidates (``?ice=relay``: ``iceTransportPolicy: "relay"``) holds a call with an aiortc
doctor through the TURN server, over UDP, TCP and TLS, with the credentials the server
minted for the join; with a TURN secret that coturn does not share, the page says why
in words, and without ``?ice=relay`` the call goes on directly. A patient whose network
passes no UDP at all (a network namespace of its own) connects through TURN over TCP by
itself.

TLS: Chromium checks a TURN server's certificate as it checks a web site's (a
self-signed one fails with icecandidateerror 701, "Failed to establish connection"), so
this module's Chromium runs with a home of its own whose NSS database trusts the test's
certificate authority, as a real browser trusts a real server's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.browser import ARGS, wait_in_page
from tests.factories import AppClient
from tests.media_peers import MediaClient
from tests.netns import Namespace, chromium_for, namespace
from tests.servers import TurnServer, free_port, wait_for_port
from tests.test_browser_forwarding import KEEP_CONNECTIONS

SECRET = "coturn-static-auth-secret"
REFUSED = (
    "Не удалось подключиться через TURN-сервер: он не принял учётные данные. "
    "Сообщите администратору."
)

# The pair ICE chose on the page's newest connection, from the browser's statistics.
SELECTED_PAIR = """
async () => {
  const pc = window.testConnections[window.testConnections.length - 1];
  const stats = await pc.getStats();
  let transport = null;
  stats.forEach((s) => { if (s.type === "transport") transport = s; });
  if (!transport || !transport.selectedCandidatePairId) return null;
  const pair = stats.get(transport.selectedCandidatePairId);
  const local = stats.get(pair.localCandidateId);
  const remote = stats.get(pair.remoteCandidateId);
  return {
    policy: pc.getConfiguration().iceTransportPolicy,
    local: {type: local.candidateType, relayProtocol: local.relayProtocol || null,
            url: local.url || null},
    remote: {type: remote.candidateType, address: remote.address},
  };
}
"""


@pytest.fixture
def db_backend() -> str:
    return "sqlite"


@pytest.fixture(scope="module")
def turn() -> Iterator[TurnServer]:
    server = TurnServer.start(SECRET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chromium_endpoint(
    chromium: Path, turn: TurnServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """This module's Chromium (the session's, as tests.browser starts it, but for its
    home): its NSS database trusts the TURN server's certificate authority."""
    home = tmp_path_factory.mktemp("home")
    nss = home / ".pki" / "nssdb"
    nss.mkdir(parents=True)
    database = f"sql:{nss}"
    trust = ["-n", "Telemed test CA", "-t", "C,,", "-i", str(turn.authority)]
    for command in (
        ["certutil", "-N", "-d", database, "--empty-password"],
        ["certutil", "-A", "-d", database, *trust],
    ):
        subprocess.run(command, check=True, capture_output=True)
    port = free_port()
    process = subprocess.Popen(
        [
            str(chromium),
            *ARGS,
            f"--remote-debugging-port={port}",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={home / 'chromium'}",
            "about:blank",
        ],
        env={**os.environ, "HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def turn_kinds() -> list[str]:
    """The TURN URLs given to the browser (TELEMED_TURN_URLS), by transport."""
    return ["udp"]


@pytest.fixture
def telemed_secret() -> str:
    """Telemed's TELEMED_TURN_SECRET: coturn's own, unless a test says otherwise."""
    return SECRET


@pytest.fixture
def turn_urls(turn: TurnServer, turn_kinds: list[str]) -> list[str]:
    """TELEMED_TURN_URLS."""
    return turn.urls(*turn_kinds)


@pytest.fixture
def settings_overrides(turn_urls: list[str], telemed_secret: str) -> dict[str, Any]:
    return {
        "media_addresses": ["127.0.0.1"],
        "turn_secret": telemed_secret,
        "turn_urls": turn_urls,
    }


async def joined_page(
    browser: Browser, client: AppClient, booked: dict[str, Any], query: str
) -> Page:
    """The patient's room page (with ``query`` added to its address), its join clicked,
    its connections kept for their statistics."""
    origin = str(client.make_url("/")).rstrip("/")
    context = await browser.new_context()
    await context.grant_permissions(["camera", "microphone"], origin=origin)
    await context.add_init_script(KEEP_CONNECTIONS)
    page = await context.new_page()
    page.on("console", lambda message: print("browser:", message.text))
    token = booked["patient"]["token"]
    await page.goto(f"{origin}/static/room.html?consultation={booked['id']}&token={token}{query}")
    await wait_in_page(page, "window.telemedRoom.phase === 'prejoin'")
    await page.locator("#join:enabled").click()
    await wait_in_page(page, "window.telemedRoom.phase === 'joined'")
    return page


async def selected_pair(page: Page) -> dict[str, Any]:
    await wait_in_page(page, "window.testConnections.length > 0")
    pair: dict[str, Any] | None = await page.evaluate(SELECTED_PAIR)
    assert pair is not None, "no candidate pair selected"
    return pair


@pytest.mark.parametrize(
    ("turn_kinds", "relay_protocol"),
    [(["udp"], "udp"), (["tcp"], "tcp"), (["tls"], "tls")],
)
async def test_a_relay_only_page_holds_a_call_through_coturn(
    browser: Browser,
    client: AppClient,
    booked: dict[str, Any],
    room_doctor: MediaClient,
    turn: TurnServer,
    relay_protocol: str,
) -> None:
    doctor = room_doctor
    page = await joined_page(browser, client, booked, "&ice=relay")
    await wait_in_page(page, "window.telemedRoom.remoteFrames >= 30", seconds=20)
    await doctor.peer.wait_for(
        lambda: doctor.decoded["video"] >= 30 and doctor.decoded["audio"] >= 30, seconds=20
    )
    assert (640, 480) in doctor.sizes

    # Through the TURN server, on the transport its URL names: the page's own candidate
    # is a relayed address, the other end the media server's.
    pair = await selected_pair(page)
    assert pair["policy"] == "relay"
    assert pair["local"]["type"] == "relay", pair
    assert pair["local"]["relayProtocol"] == relay_protocol, pair
    assert pair["remote"]["address"] == "127.0.0.1", pair
    room = await page.evaluate("window.telemedRoom")
    assert room["turn"] == {"relay": True, "fallbacks": 0, "failure": None}
    # With the patient's own credentials, as the join answered them.
    await turn.logged(f":{booked['patient']['user']['id']}>, lifetime=")
    await page.context.close()


@pytest.mark.parametrize("telemed_secret", ["not-the-secret-coturn-has"])
async def test_a_refused_turn_credential_is_explained_and_a_direct_call_unharmed(
    browser: Browser,
    client: AppClient,
    booked: dict[str, Any],
    room_doctor: MediaClient,
    turn: TurnServer,
) -> None:
    doctor = room_doctor
    # Relay only: coturn answers 401, the page has no way to connect, and says why.
    page = await joined_page(browser, client, booked, "&ice=relay")
    await wait_in_page(page, "window.telemedRoom.turn.failure !== null", seconds=15)
    room = await page.evaluate("window.telemedRoom")
    assert room["turn"] == {"relay": True, "fallbacks": 0, "failure": "refused"}, room
    assert await page.locator("#notice").inner_text() == REFUSED
    assert room["remoteFrames"] == 0
    assert doctor.decoded["video"] == 0
    assert room["reconnections"] == 0  # not tried again and again
    await turn.logged(f":{booked['patient']['user']['id']}>: incoming packet message processed")
    await page.context.close()

    # Every candidate (the page's default): the same refusal costs nothing, the call goes
    # directly, and the page does not fall back to a relay it could not use.
    page = await joined_page(browser, client, booked, "")
    await wait_in_page(page, "window.telemedRoom.remoteFrames >= 30", seconds=20)
    await doctor.peer.wait_for(lambda: doctor.decoded["video"] >= 30, seconds=20)
    pair = await selected_pair(page)
    assert pair["policy"] == "all"
    assert pair["local"]["type"] != "relay", pair
    room = await page.evaluate("window.telemedRoom")
    assert room["turn"] == {"relay": False, "fallbacks": 0, "failure": None}
    assert await page.locator("#notice").inner_text() == ""
    await page.context.close()


def block_udp(space: Namespace) -> None:
    """Nothing UDP leaves the namespace (every other packet does): its UDP goes to a
    queue that holds none (this kernel has htb, pfifo and u32, no iptables)."""
    device = space.inner
    for command in (
        f"qdisc add dev {device} root handle 1: htb default 1",
        f"class add dev {device} parent 1: classid 1:1 htb rate 1gbit",
        f"class add dev {device} parent 1: classid 1:2 htb rate 1gbit",
        f"qdisc add dev {device} parent 1:2 pfifo limit 0",
        f"filter add dev {device} parent 1: protocol ip prio 1"
        " u32 match ip protocol 17 0xff flowid 1:2",
    ):
        space.run("tc", *command.split())


@contextlib.asynccontextmanager
async def forwarded(address: str, port: int) -> AsyncIterator[int]:
    """A port on ``address`` whose TCP connections go to 127.0.0.1:``port`` (the test
    server listens on loopback, which a namespace cannot reach)."""

    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        writers.extend((writer, upstream_writer))
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(connected, address, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0,
    reason="network namespaces and tc need Linux and root (this project's machines and CI)",
)
class TestNoUdp:
    """The patient's Chromium in a network namespace whose link passes TCP only; coturn
    listens on this side of the link. The class gives its test a coturn there."""

    @pytest.fixture
    def space(self) -> Iterator[Namespace]:
        with namespace() as made:
            block_udp(made)
            yield made

    @pytest.fixture
    def turn_here(self, space: Namespace) -> Iterator[TurnServer]:
        server = TurnServer.start(SECRET, address=space.host_address)
        yield server
        server.stop()

    @pytest.fixture
    def turn_urls(self, turn_here: TurnServer) -> list[str]:
        return turn_here.urls("udp", "tcp")

    async def test_a_patient_without_udp_connects_through_turn_over_tcp_by_itself(
        self,
        client: AppClient,
        booked: dict[str, Any],
        room_doctor: MediaClient,
        space: Namespace,
        turn_here: TurnServer,
        tmp_path: Path,
    ) -> None:
        doctor = room_doctor
        assert client.port is not None
        async with forwarded(space.host_address, client.port) as port:
            origin = f"http://{space.host_address}:{port}"
            async with chromium_for(origin, inside=space, directory=tmp_path) as inside:
                context = await inside.new_context()
                await context.grant_permissions(["camera", "microphone"], origin=origin)
                await context.add_init_script(KEEP_CONNECTIONS)
                page = await context.new_page()
                page.on("console", lambda message: print("browser:", message.text))
                token = booked["patient"]["token"]
                await page.goto(
                    f"{origin}/static/room.html?consultation={booked['id']}&token={token}"
                )
                await wait_in_page(page, "window.telemedRoom.phase === 'prejoin'")
                await page.locator("#join:enabled").click()
                await wait_in_page(page, "window.telemedRoom.remoteFrames >= 30", seconds=25)
                await doctor.peer.wait_for(lambda: doctor.decoded["video"] >= 30, seconds=20)
                # Every candidate allowed (no ?ice=relay), and the one that worked is
                # coturn's, reached over TCP: the browser found it, the page did not
                # have to fall back.
                pair = await selected_pair(page)
                assert pair["policy"] == "all"
                assert pair["local"]["type"] == "relay", pair
                assert pair["local"]["relayProtocol"] == "tcp", pair
                room = await page.evaluate("window.telemedRoom")
                assert room["turn"] == {"relay": False, "fallbacks": 0, "failure": None}
        await turn_here.logged(f":{booked['patient']['user']['id']}>, lifetime=")
