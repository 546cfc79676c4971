"""The TLS front of docs/deployment.md ("TLS front (nginx)"): Debian's nginx running the
site file that operators copy, deploy/nginx/telemed.conf (its placeholders substituted:
the name, the certificate, the ports, the log), in front of two ``telemed serve``
processes sharing PostgreSQL and Redis.

The site is ``https://telemed.test:<port>``: Chromium resolves the name to loopback
(``--host-resolver-rules``) and trusts its certificate because this module's Chromium
trusts the test's own certificate authority (an NSS database in its home), as a browser
trusts a real site. So the room page is a secure context and gets the camera and
microphone by the permission alone, with no flag. nginx runs in the foreground with a
main configuration of the test's own (what Debian's /etc/nginx/nginx.conf gives a site):
its pid file, logs and temporary files in a temporary directory, loopback ports only.

The Python client connects from 127.0.0.5, another loopback address, so that nginx (on
127.0.0.1, the trusted proxy) and the client are told apart as in production."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from playwright.async_api import Browser, Page, WebSocket

from bench.common import PASSWORD
from telemed.auth import COOKIE_NAME
from telemed.documents.views import MULTIPART_OVERHEAD
from telemed.http import CSP
from telemed.settings import Settings
from tests import samples
from tests.browser import ARGS, joined_room, wait_in_page
from tests.nodes import NodeGroup, book, node_group, stop_node
from tests.servers import PostgresServer, RedisServer, _certificates, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "deploy" / "nginx" / "telemed.conf"
NAME = "telemed.test"
PROXY = "127.0.0.1"  # where nginx runs, as the Telemed processes see it
CLIENT = "127.0.0.5"  # the Python client's own address: not a trusted proxy
SPOOFED = "203.0.113.7"  # what a client writes into X-Forwarded-For itself

# What Telemed sends on every answer (telemed.http.security_headers) and nginx must pass
# once, unchanged; Cache-Control only on the API.
TELEMED_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(self), microphone=(self), geolocation=()",
}
HSTS = "max-age=31536000"  # the one header the site file adds


@dataclass(frozen=True)
class Certificate:
    authority: Path
    certificate: Path
    key: Path


@dataclass(frozen=True)
class Logged:
    """One line of the site's access log (its ``telemed`` format)."""

    address: str
    method: str
    path: str
    status: int
    upstream_ports: tuple[int, ...]


LOG_LINE = re.compile(
    r'^(?P<address>\S+) \[[^\]]+\] "(?P<method>\S+) (?P<path>\S+) \S+" (?P<status>\d{3}) '
    r"\d+ [\d.]+ (?P<upstream>.*)$"
)


@dataclass
class Front:
    """nginx with the site file, in the foreground."""

    root: Path
    port: int
    http_port: int
    process: subprocess.Popen[bytes]

    @property
    def origin(self) -> str:
        return f"https://{NAME}:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @classmethod
    def start(cls, port: int, upstreams: list[int], certificate: Certificate) -> Front:
        """Debian's nginx with the site file in front of ``upstreams``, listening on
        ``port`` (HTTPS) and on another loopback port (plain HTTP)."""
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        assert Path(binary).exists(), "nginx is missing: ./dev test installs it (apt-get)"
        # Its own directory, readable by nginx's workers (they run as nobody under root).
        root = Path(tempfile.mkdtemp(prefix="telemed-nginx-"))
        root.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        http_port = free_port()
        (root / "telemed.conf").write_text(
            site_config(
                port=port,
                http_port=http_port,
                upstreams=upstreams,
                certificate=certificate,
                root=root,
            )
        )
        (root / "nginx.conf").write_text(main_config(root))
        # -e: even the errors before the configuration is read go to our log.
        command = [binary, "-p", f"{root}/", "-e", str(root / "error.log")]
        with (root / "stderr.log").open("wb") as stderr:
            process = subprocess.Popen(
                [*command, "-c", str(root / "nginx.conf")],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        front = cls(root=root, port=port, http_port=http_port, process=process)
        try:
            wait_for_port(port)
        except TimeoutError:
            logs = front.error_log.read_text() + (root / "stderr.log").read_text()
            front.stop()
            raise AssertionError(f"nginx did not start:\n{logs}") from None
        return front

    def stop(self) -> None:
        self.process.terminate()  # SIGTERM: nginx's fast shutdown
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    async def logged(self, count: int, path: str | None = None) -> list[Logged]:
        """The logged requests (for ``path``), once there are ``count``: nginx writes a
        request's line after its answer has gone (a WebSocket's when it has closed)."""
        async with asyncio.timeout(10):
            while True:
                found = [r for r in self.requests() if path is None or r.path == path]
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.1)

    def requests(self) -> list[Logged]:
        """The requests nginx has logged so far."""
        lines = (self.root / "access.log").read_text().splitlines()
        logged = []
        for line in lines:
            match = LOG_LINE.match(line)
            assert match is not None, f"an access log line in another format: {line}"
            ports = re.findall(r"127\.0\.0\.1:(\d+)", match["upstream"])
            logged.append(
                Logged(
                    address=match["address"],
                    method=match["method"],
                    path=match["path"],
                    status=int(match["status"]),
                    upstream_ports=tuple(int(port) for port in ports),
                )
            )
        return logged


def site_config(
    *, port: int, http_port: int, upstreams: list[int], certificate: Certificate, root: Path
) -> str:
    """deploy/nginx/telemed.conf with its placeholders replaced (each must be there: the
    test runs the file operators copy, not a copy of its own)."""
    text = SITE.read_text()
    first, second = upstreams
    replacements = {
        "listen 443 ssl http2;": f"listen {PROXY}:{port} ssl http2;",
        "listen 80;": f"listen {PROXY}:{http_port};",
        "server_name telemed.example.ru;": f"server_name {NAME};",
        "/etc/ssl/telemed/fullchain.pem": str(certificate.certificate),
        "/etc/ssl/telemed/privkey.pem": str(certificate.key),
        "server 127.0.0.1:8080 ": f"server 127.0.0.1:{first} ",
        "server 127.0.0.1:8081 ": f"server 127.0.0.1:{second} ",
        "/var/log/nginx/telemed.access.log": str(root / "access.log"),
    }
    for placeholder, value in replacements.items():
        assert placeholder in text, f"{SITE} has no longer {placeholder!r}: update this test"
        text = text.replace(placeholder, value)
    return text


def main_config(root: Path) -> str:
    """What Debian's nginx.conf gives the sites, with every path in ``root``."""
    temporary = "\n".join(
        f"    {kind}_temp_path {root / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    return f"""daemon off;
worker_processes 1;
pid {root / "nginx.pid"};
error_log {root / "error.log"} warn;
events {{
    worker_connections 512;
}}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {root / "other.access.log"};
{temporary}
    uwsgi_temp_path {root / "uwsgi"};
    scgi_temp_path {root / "scgi"};
    include {root / "telemed.conf"};
}}
"""


def front_settings(port: int) -> dict[str, str]:
    """The Telemed settings the site file's header asks for."""
    return {
        "TELEMED_PUBLIC_URL": f"https://{NAME}:{port}",
        "TELEMED_COOKIE_SECURE": "true",
        "TELEMED_TRUSTED_PROXIES": PROXY,
    }


@asynccontextmanager
async def cluster_behind_front(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path, certificate: Certificate
) -> AsyncIterator[tuple[NodeGroup, Front]]:
    """Two Telemed processes and nginx in front of them."""
    port = free_port()
    async with node_group(postgres, redis_server, tmp_path, 2, **front_settings(port)) as group:
        front = await asyncio.to_thread(Front.start, port, group.ports, certificate)
        try:
            yield group, front
        finally:
            await asyncio.to_thread(front.stop)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A certificate for telemed.test (and 127.0.0.1) from the test's own authority."""
    root = tmp_path_factory.mktemp("certificate")
    authority, certificate, key = _certificates(root, NAME, PROXY)
    return Certificate(authority=authority, certificate=certificate, key=key)


@pytest.fixture(scope="module")
def chromium_endpoint(
    chromium: Path, certificate: Certificate, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """This module's Chromium (the session's, as tests.browser starts it, but for its
    home and one rule): its NSS database trusts the test's certificate authority, and
    telemed.test resolves to 127.0.0.1."""
    home = tmp_path_factory.mktemp("home")
    nss = home / ".pki" / "nssdb"
    nss.mkdir(parents=True)
    database = f"sql:{nss}"
    trust = ["-n", "Telemed test CA", "-t", "C,,", "-i", str(certificate.authority)]
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
            f"--host-resolver-rules=MAP {NAME} {PROXY}",
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
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LoopbackResolver(AbstractResolver):
    """telemed.test is 127.0.0.1, for the Python client as for Chromium."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        assert host == NAME, host
        return [
            {
                "hostname": host,
                "host": PROXY,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


def tls_context(certificate: Certificate) -> ssl.SSLContext:
    """A client's TLS context that trusts only the test's authority (and checks names)."""
    return ssl.create_default_context(cafile=str(certificate.authority))


@asynccontextmanager
async def https_client(certificate: Certificate) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client from 127.0.0.5 that knows telemed.test and trusts its certificate."""
    connector = aiohttp.TCPConnector(
        ssl=tls_context(certificate), resolver=LoopbackResolver(), local_addr=(CLIENT, 0)
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


def assert_headers_once(headers: list[tuple[str, str]], *, api: bool) -> None:
    """Telemed's security headers and the site's HSTS, each exactly once, unchanged."""
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)
    expected = {**TELEMED_HEADERS, "strict-transport-security": HSTS}
    if api:
        expected["cache-control"] = "no-store"
    for name, value in expected.items():
        assert by_name.get(name) == [value], (name, by_name.get(name))
    # nginx names itself without its version (server_tokens off), and only once.
    assert by_name.get("server") == ["nginx"], by_name.get("server")


async def test_a_call_through_the_tls_front(
    browser: Browser,
    postgres: PostgresServer,
    redis_server: RedisServer,
    tmp_path: Path,
    certificate: Certificate,
) -> None:
    """Doctor and patient in Chromium join a room at https://telemed.test:<port>/ through
    nginx and the two processes behind it; media flows both ways, each page's socket is
    a WebSocket that went through nginx's upgrade, and the page's own headers arrive once
    (over HTTP/2)."""
    async with cluster_behind_front(postgres, redis_server, tmp_path, certificate) as (
        group,
        front,
    ):
        [booked] = await book(group, 1)
        cid = booked.consultation_id
        sockets: dict[str, list[WebSocket]] = {"doctor": [], "patient": []}
        received = {"doctor": 0, "patient": 0}

        def watch(who: str) -> Callable[[Page], None]:
            def on_socket(socket: WebSocket) -> None:
                sockets[who].append(socket)

                def on_frame(_: object) -> None:
                    received[who] += 1

                socket.on("framereceived", on_frame)

            return lambda page: page.on("websocket", on_socket)

        pages: dict[str, Page] = {}
        for who, token in (("doctor", booked.doctor_token), ("patient", booked.patient_token)):
            pages[who] = await joined_room(browser, front.origin, cid, token, who, watch=watch(who))
        for who, page in pages.items():
            await wait_in_page(page, "window.telemedRoom.remoteFrames > 30")
            state: dict[str, Any] = await page.evaluate("window.telemedRoom")
            assert state["remoteTracks"] >= 2, state  # the other's camera and microphone
            assert state["error"] is None, state
            assert (state["camera"], state["microphone"]) == ("granted", "granted"), state
            assert await page.evaluate("[location.origin, window.isSecureContext]") == [
                front.origin,
                True,
            ]
            assert sockets[who], who
            for opened in sockets[who]:
                assert opened.url.startswith(f"wss://{NAME}:{front.port}/socket.io/"), opened.url
                assert "transport=websocket" in opened.url, opened.url
            assert not sockets[who][-1].is_closed()
            assert received[who] > 2, received  # the handshake, the connect, the acks
        assert await group.owner(cid) in (0, 1)  # the room lives on one of them

        # The page itself over HTTP/2: Telemed's headers once, the site's HSTS once.
        context = await browser.new_context()
        page = await context.new_page()
        response = await page.goto(f"{front.origin}/")
        assert response is not None
        assert response.status == 200
        navigation = "performance.getEntriesByType('navigation')[0].nextHopProtocol"
        assert await page.evaluate(navigation) == "h2"
        headers = await response.headers_array()
        assert_headers_once([(h["name"], h["value"]) for h in headers], api=False)
        await context.close()

        # nginx logs a WebSocket when it closes: close the pages, then read the log.
        for page in pages.values():
            await page.context.close()
        opened_sockets = len(sockets["doctor"]) + len(sockets["patient"])
        socket_requests = await front.logged(opened_sockets, "/socket.io/")
        logged = front.requests()
        # Each socket was one upgraded request (101): no long-polling (200s) at all.
        assert [r.status for r in socket_requests] == [101] * opened_sockets, socket_requests
        # Round robin: both processes served the pages.
        assert {port for r in logged for port in r.upstream_ports} == set(group.ports)
        assert all(r.address == PROXY for r in logged)  # Chromium's own address


async def test_https_front_passes_headers_cookies_uploads_and_addresses(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path, certificate: Certificate
) -> None:
    """Through nginx, from a client at 127.0.0.5: security headers arrive once; plain
    HTTP is sent to HTTPS; sign-in sets a Secure, HttpOnly cookie that then works with
    the site's Origin (TELEMED_PUBLIC_URL); a document of exactly
    TELEMED_DOCUMENT_MAX_BYTES passes, a larger one gets Telemed's 413; the body is
    streamed (Telemed refuses an oversized upload before it is sent); and Telemed counts
    the client's address, not nginx's nor one the client made up."""
    async with (
        cluster_behind_front(postgres, redis_server, tmp_path, certificate) as (group, front),
        https_client(certificate) as http,
    ):
        await book(group, 1)
        origin = {"Origin": front.origin}

        # Security headers on a page, an API answer and an API error.
        for path, api, status in (
            ("/", False, 200),
            ("/api/v1/openapi.json", True, 200),
            ("/api/v1/nothing-here", True, 404),
        ):
            async with http.get(f"{front.origin}{path}") as response:
                assert response.status == status, path
                assert_headers_once(
                    [(k.decode(), v.decode()) for k, v in response.raw_headers], api=api
                )
                if status == 404:
                    assert (await response.json())["error"]["code"] == "not_found"

        # Plain HTTP: sent to HTTPS, path and query kept.
        async with http.get(
            f"http://{NAME}:{front.http_port}/static/room.html?a=1", allow_redirects=False
        ) as response:
            assert response.status == 301
            assert response.headers["Location"] == f"https://{NAME}/static/room.html?a=1"

        # A wrong password, with an address the client wrote itself: counted under the
        # client's real address (nginx appends it; Telemed trusts only nginx's).
        spoofed = {**origin, "X-Forwarded-For": SPOOFED}
        async with http.post(
            f"{front.origin}/api/v1/auth/login",
            json={"login": "+79002000000", "password": "not-the-password"},
            headers=spoofed,
        ) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "invalid_credentials"
        assert await counted_addresses(group) == [f"login:addr:{CLIENT}"]

        # Sign-in: the session cookie is Secure and HttpOnly.
        async with http.post(
            f"{front.origin}/api/v1/auth/login",
            json={"login": "+79002000000", "password": PASSWORD},
            headers=origin,
        ) as response:
            assert response.status == 200, await response.text()
            [cookie] = response.headers.getall("Set-Cookie")
        attributes = [part.strip().lower() for part in cookie.split(";")]
        assert cookie.startswith(f"{COOKIE_NAME}="), cookie
        assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(attributes), cookie
        assert [c.key for c in http.cookie_jar] == [COOKIE_NAME]

        # The largest document Telemed takes, cookie-authenticated (so Origin is checked
        # against TELEMED_PUBLIC_URL), streamed through nginx.
        limit = Settings().document_max_bytes
        document = await upload(http, front, padded_pdf(limit), headers=origin)
        assert document.status == 201, document.body
        assert document.body["size"] == limit
        too_large = await upload(http, front, padded_pdf(limit + 1), headers=origin)
        assert too_large.status == 413, too_large.body
        assert too_large.body["error"]["code"] == "too_large"
        assert too_large.body["error"]["details"] == {"max_bytes": limit}
        async with http.get(f"{front.origin}/api/v1/documents") as response:
            assert [d["id"] for d in (await response.json())["items"]] == [document.body["id"]]

        # Streamed, not buffered: Telemed answers an upload too large by its length
        # while the body has not been sent.
        session_token = {c.key: c.value for c in http.cookie_jar}[COOKIE_NAME]
        too_long = limit + MULTIPART_OVERHEAD + 1024 * 1024
        status, error = await refused_before_body(front, certificate, session_token, too_long)
        assert (status, error["code"], error["details"]) == (413, "too_large", {"max_bytes": limit})
        assert "buffered to a temporary file" not in front.error_log.read_text()
        # Above nginx's own backstop (client_max_body_size): nginx refuses it, in the shape.
        beyond = 61 * 1024 * 1024
        status, error = await refused_before_body(front, certificate, session_token, beyond)
        assert (status, error["code"], error["details"]) == (413, "too_large", {})

        # One process stopped: the other answers everything.
        stop_node(group.processes[0])
        answered = len(front.requests())
        for _ in range(4):
            async with http.get(f"{front.origin}/api/v1/openapi.json") as response:
                assert response.status == 200
        served = [r.upstream_ports[-1] for r in (await front.logged(answered + 4))[answered:]]
        assert served == [group.ports[1]] * 4, served

        # No process answering: 503 in the one shape, not nginx's page.
        stop_node(group.processes[1])
        async with http.get(f"{front.origin}/api/v1/openapi.json") as response:
            assert response.status == 503
            assert response.headers.getall("Strict-Transport-Security") == [HSTS]
            assert (await response.json())["error"]["code"] == "unavailable"


@dataclass
class Answer:
    status: int
    body: Any


async def upload(
    http: aiohttp.ClientSession, front: Front, content: bytes, *, headers: dict[str, str]
) -> Answer:
    form = aiohttp.FormData()
    form.add_field("kind", "other")
    form.add_field("title", "Выписка")
    # A BytesIO, not bytes: aiohttp warns that a large bytes body blocks its loop.
    form.add_field("file", io.BytesIO(content), filename="scan.pdf", content_type="application/pdf")
    async with http.post(f"{front.origin}/api/v1/documents", data=form, headers=headers) as r:
        return Answer(r.status, await r.json())


def padded_pdf(size: int) -> bytes:
    """A PDF of exactly ``size`` bytes (a comment after its end fills it up)."""
    head = samples.pdf() + b"%"
    return head + b"x" * (size - len(head))


async def counted_addresses(group: NodeGroup) -> list[str]:
    """The addresses that sign-in attempts were counted under."""
    connection = await asyncpg.connect(group.database_url.replace("+asyncpg", ""))
    try:
        rows = await connection.fetch(
            "SELECT DISTINCT key FROM rate_event WHERE key LIKE 'login:addr:%'"
        )
    finally:
        await connection.close()
    return sorted(row["key"] for row in rows)


async def refused_before_body(
    front: Front, certificate: Certificate, session_token: str, size: int
) -> tuple[int, dict[str, Any]]:
    """Announce an upload of ``size`` bytes, send the headers and a first few bytes, and
    read the answer (the status and the error): it must come before the body."""
    reader, writer = await asyncio.open_connection(
        PROXY,
        front.port,
        ssl=tls_context(certificate),
        server_hostname=NAME,
        local_addr=(CLIENT, 0),
    )
    try:
        writer.write(
            (
                f"POST /api/v1/documents HTTP/1.1\r\n"
                f"Host: {NAME}:{front.port}\r\n"
                f"Origin: {front.origin}\r\n"
                f"Cookie: {COOKIE_NAME}={session_token}\r\n"
                f"Content-Type: multipart/form-data; boundary=b\r\n"
                f"Content-Length: {size}\r\n\r\n"
                "--b\r\n"
            ).encode()
        )
        await writer.drain()
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise AssertionError(
                "no answer before the body: nginx buffers request bodies"
            ) from None
        async with asyncio.timeout(10):
            status = int(head.split(b" ", 2)[1])
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            assert length is not None, head
            body = await reader.readexactly(int(length[1]))
        error: dict[str, Any] = json.loads(body)["error"]
        return status, error
    finally:
        writer.close()
