"""Real servers for the tests (PostgreSQL, Redis, coturn), started on loopback in a
temporary directory.

They come from the system's packages (``./dev test`` installs them). As root,
PostgreSQL runs as the ``postgres`` user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import asyncio
import glob
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


@dataclass
class PostgresServer:
    root: Path
    port: int
    bin_dir: Path
    run_as: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}"

    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = _postgres_bin()
        if bin_dir is None:
            raise RuntimeError(
                "PostgreSQL is not installed: run `./dev test` (it installs it) or "
                "`apt-get install postgresql`"
            )
        root = Path(tempfile.mkdtemp(prefix="telemed-pg-"))
        run_as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
            run_as = ["runuser", "-u", "postgres", "--"]
        data = root / "data"
        subprocess.run(
            [
                *run_as,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
        )
        port = free_port()
        options = (
            f"-h 127.0.0.1 -p {port} -k {root} -F "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        subprocess.run(
            [
                *run_as,
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        return cls(root=root, port=port, bin_dir=bin_dir, run_as=run_as)

    def stop(self) -> None:
        subprocess.run(
            [
                *self.run_as,
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """One request to the local server; answers (status, JSON body)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    # Only http://127.0.0.1 URLs built by these tests reach urllib (S310).
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def wait_until_healthy(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the server exited:\n{log.read_text()}"
        try:
            if http("GET", f"{base}/healthz")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)  # the server is starting: poll again
    raise AssertionError(f"/healthz did not answer 200 in 30 s:\n{log.read_text()}")


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@dataclass
class RedisServer:
    """A real ``redis-server`` on a loopback port, which a test may stop and start again."""

    port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start_new(cls) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `./dev test` (it installs it)")
        server = cls(port=free_port(), root=Path(tempfile.mkdtemp(prefix="telemed-redis-")))
        server.start()
        return server

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _certificates(root: Path, name: str, address: str) -> tuple[Path, Path, Path]:
    """A certificate authority of the test's own (``ca.crt``), and a certificate for
    ``name`` and ``address`` that it signed (``turn.crt``, ``turn.key``), valid a day:
    what a browser checks as it checks a real one, once told to trust that authority."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)

    def certificate(subject: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Telemed test CA")]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    authority = (
        certificate("Telemed test CA", ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        certificate(name, key)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address(address))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = root / "ca.crt", root / "turn.crt", root / "turn.key"
    paths[0].write_bytes(authority.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@dataclass
class TurnServer:
    """Debian's coturn (``turnserver``) on loopback (or ``address``), as docs/media.md
    configures it for Telemed (``use-auth-secret`` with a ``static-auth-secret``: the
    time-limited credentials ``telemed.media.turn`` mints), with two differences a test
    needs: it listens on free ports, and it relays to loopback peers (the test's media
    server is on 127.0.0.1), which production refuses (``denied-peer-ip``). TLS uses a
    certificate for ``localhost`` and the address from an authority of the test's own
    (``authority``), which nothing trusts unless told to."""

    secret: str
    port: int
    """UDP and TCP (``turn:<address>:<port>``)."""
    tls_port: int
    """TLS over TCP (``turns:…:<tls_port>?transport=tcp``)."""
    root: Path
    process: subprocess.Popen[bytes]
    address: str = "127.0.0.1"
    """Where it listens (relayed addresses are on 127.0.0.1 whatever this is)."""
    realm: str = "telemed.test"

    @property
    def host(self) -> str:
        """The name its certificate is for (``localhost`` on loopback)."""
        return "localhost" if self.address == "127.0.0.1" else self.address

    @property
    def authority(self) -> Path:
        return self.root / "ca.crt"

    @property
    def log(self) -> Path:
        return self.root / "turn.log"

    async def logged(self, text: str, seconds: float = 5) -> None:
        """Wait until coturn's log says ``text`` (it writes from threads of its own)."""
        async with asyncio.timeout(seconds):
            # Polls a file another process writes: there is nothing to wait on instead.
            while text not in self.log.read_text():  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    def urls(self, *kinds: str) -> list[str]:
        """The TURN URLs of ``kinds`` (``udp``, ``tcp``, ``tls``), as TELEMED_TURN_URLS."""
        known = {
            "udp": f"turn:{self.address}:{self.port}?transport=udp",
            "tcp": f"turn:{self.address}:{self.port}?transport=tcp",
            "tls": f"turns:{self.host}:{self.tls_port}?transport=tcp",
        }
        return [known[kind] for kind in kinds]

    @classmethod
    def start(cls, secret: str, address: str = "127.0.0.1") -> TurnServer:
        binary = shutil.which("turnserver")
        if binary is None:
            raise RuntimeError("coturn is not installed: run `./dev test` (it installs it)")
        root = Path(tempfile.mkdtemp(prefix="telemed-turn-"))
        _, cert, pkey = _certificates(root, "localhost", address)
        port = tls_port = free_port()
        while tls_port == port:
            tls_port = free_port()
        config = root / "turnserver.conf"
        config.write_text(
            "\n".join(
                [
                    f"listening-ip={address}",
                    "relay-ip=127.0.0.1",
                    f"listening-port={port}",
                    f"tls-listening-port={tls_port}",
                    f"cert={cert}",
                    f"pkey={pkey}",
                    "use-auth-secret",
                    f"static-auth-secret={secret}",
                    f"realm={cls.realm}",
                    "fingerprint",
                    # No NAT discovery (RFC 5780: it needs a second address), no DTLS
                    # (browsers do not use it for TURN), no telnet CLI.
                    "no-rfc5780",
                    "no-dtls",
                    "no-cli",
                    "no-multicast-peers",
                    "no-software-attribute",
                    # The media server is on 127.0.0.1; production denies loopback and
                    # private peers (docs/media.md).
                    "allow-loopback-peers",
                    f"log-file={root / 'turn.log'}",
                    "simple-log",
                    "no-stdout-log",
                    "verbose",  # a line per allocation and refusal: tests read them
                    f"pidfile={root / 'turn.pid'}",
                    f"userdb={root / 'turndb'}",  # not the system's /var/lib/turn/turndb
                    "",
                ]
            )
        )
        process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        server = cls(
            secret=secret,
            port=port,
            tls_port=tls_port,
            root=root,
            process=process,
            address=address,
        )
        try:
            wait_for_port(port, host=address)
            wait_for_port(tls_port, host=address)
        except TimeoutError:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
