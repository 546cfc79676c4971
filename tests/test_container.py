"""The container image (deploy/Containerfile) on a base image made from Debian's own
packages (deploy/make-base-image.sh), built and run with podman: Telemed runs as a user
without privileges, healthy by its ``/readyz`` check, serves the whole app on a
published loopback port and signs a patient in; its data directory is a volume that
outlives the container. And the compose file for one machine, as podman-compose reads it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio
import yaml
from playwright.async_api import Browser

from tests.nodes import fresh_database
from tests.servers import PostgresServer, RedisServer, free_port
from tests.wheel import (
    PATIENT_PASSWORD,
    PATIENT_PHONE,
    ROOT,
    build_wheel,
    check_whole_app,
    fetch,
    sign_in_with_browser,
)

DEPLOY = ROOT / "deploy"
# podman's settings on these machines: runc (crun refuses to run here), cgroups without
# systemd, and no default ulimits (the container may not raise them). Without systemd,
# podman starts no health check timers: the test runs the check itself.
CONTAINERS_CONF = """\
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
# pip inside the build reaches PyPI through this machine's network, whose HTTPS may be
# inspected by a proxy that only the machine's own certificate authorities vouch for.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

needs_root = pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0,
    reason="debootstrap and podman's root mode need Linux and root (this project's "
    "machines and CI)",
)


@dataclass(frozen=True)
class Podman:
    env: dict[str, str]

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert done.returncode == 0, f"podman {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return Podman({**os.environ, "CONTAINERS_CONF": str(conf)})


@pytest.fixture(scope="module")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base image from Debian's packages, then Telemed's image on it, with the
    wheel built from this checkout; both removed at the end."""
    work = tmp_path_factory.mktemp("image")
    tag = uuid.uuid4().hex[:12]
    base = f"localhost/telemed-test-base:{tag}"
    image = f"localhost/telemed-test:{tag}"
    try:
        made = subprocess.run(
            [DEPLOY / "make-base-image.sh", base],
            env=podman.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert made.returncode == 0, made.stderr[-4000:]
        assert made.stdout.strip() == base
        context = work / "context"
        context.mkdir()
        shutil.copy2(DEPLOY / "Containerfile", context / "Containerfile")
        build_wheel(context / "dist", work)
        secret = ["--secret", f"id=ca,src={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
        podman(
            "build",
            "--format",
            "docker",
            # No cached layers left behind on the machine (the images are removed).
            "--layers=false",
            "--build-arg",
            f"BASE={base}",
            *secret,
            "--file",
            str(context / "Containerfile"),
            "--tag",
            image,
            str(context),
            timeout=1800,
        )
        yield image
    finally:
        podman("rmi", "--force", image, base, check=False)


def _start(podman: Podman, image: str, volume: str, port: int) -> str:
    name = f"telemed-test-{uuid.uuid4().hex[:12]}"
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--publish",
        f"127.0.0.1:{port}:8080",
        "--volume",
        f"{volume}:/var/lib/telemed",
        "--env",
        "TELEMED_LOG_LEVEL=WARNING",
        image,
    )
    return name


def _wait_healthy(podman: Podman, name: str, seconds: float = 120) -> None:
    """Runs the image's own health check until it passes."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "running", podman("logs", name).stderr
        if podman("healthcheck", "run", name, check=False).returncode == 0:
            health = podman("inspect", "--format", "{{.State.Health.Status}}", name)
            assert health.stdout.strip() == "healthy"
            return
        time.sleep(1)  # the server is starting: check again
    raise AssertionError(f"not healthy in {seconds} s:\n{podman('logs', name).stderr}")


@needs_root
async def test_the_image_serves_the_app_and_keeps_its_data_in_a_volume(
    podman: Podman, image: str, browser: Browser
) -> None:
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    assert inspected["Config"]["User"] == "telemed"
    assert "/var/lib/telemed" in inspected["Config"]["Volumes"]
    assert "/readyz" in " ".join(inspected["Healthcheck"]["Test"])

    volume = f"telemed-test-{uuid.uuid4().hex[:12]}"
    podman("volume", "create", volume)
    names: list[str] = []
    try:
        port = free_port()
        names.append(_start(podman, image, volume, port))
        _wait_healthy(podman, names[0])
        assert podman("exec", names[0], "id", "-u").stdout.strip() == "10001"
        demo = podman("exec", names[0], "telemed", "demo").stdout
        assert PATIENT_PHONE in demo
        check_whole_app(f"http://127.0.0.1:{port}")
        await sign_in_with_browser(browser, f"http://127.0.0.1:{port}")

        podman("stop", "--time", "30", names[0], timeout=60)
        exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", names[0]).stdout
        assert exit_code.strip() == "0", podman("logs", names[0]).stderr

        # A new container on the same volume has the same accounts.
        port = free_port()
        names.append(_start(podman, image, volume, port))
        _wait_healthy(podman, names[1])
        status, _, body = fetch(
            f"http://127.0.0.1:{port}/api/v1/auth/login",
            {"login": PATIENT_PHONE, "password": PATIENT_PASSWORD},
        )
        assert status == 200, body
    finally:
        for name in names:
            podman("rm", "--force", name, check=False)
        podman("volume", "rm", "--force", volume, check=False)


COMPOSE_ENV = {
    "TELEMED_WORKERS": "2",
    "TELEMED_SITE": "telemed.example.ru",
    "TELEMED_SECRET_KEY": "compose-secret-" + "k" * 40,
    "POSTGRES_PASSWORD": "compose-postgres-password",
    "TURN_SECRET": "compose-turn-secret-0123456789",
    "TELEMED_MEDIA_ADDRESS": "203.0.113.10",
    "TLS_DIR": "/etc/ssl/telemed",
}


def _compose_config(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``podman-compose config``: the compose file as podman-compose reads it, its
    variables filled in (podman-compose from the test dependencies: Debian 12's 1.0.3
    has no ``config``)."""
    clean = {k: v for k, v in os.environ.items() if k not in COMPOSE_ENV}
    return subprocess.run(
        [
            Path(sys.executable).parent / "podman-compose",
            *args,
            "--file",
            DEPLOY / "compose.yaml",
            "config",
        ],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_compose_file_runs_telemed_workers_postgresql_redis_coturn_and_nginx(
    tmp_path: Path,
) -> None:
    done = _compose_config(tmp_path, **COMPOSE_ENV)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert set(services) == {"telemed", "postgres", "redis", "coturn", "nginx"}
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert service["restart"] == "unless-stopped", name

    telemed = services["telemed"]
    assert telemed["command"][:3] == ["telemed", "serve", "--workers"]
    assert Path(telemed["build"]["context"]).resolve() == DEPLOY
    assert (DEPLOY / telemed["build"]["dockerfile"]).is_file()
    assert any(volume.endswith(":/var/lib/telemed") for volume in telemed["volumes"])
    env = telemed["environment"]
    assert env["TELEMED_MODE"] == "production"
    assert env["TELEMED_SECRET_KEY"] == COMPOSE_ENV["TELEMED_SECRET_KEY"]
    assert env["TELEMED_HOST"] == "127.0.0.1"
    assert env["TELEMED_DATABASE_URL"] == (
        "postgresql+asyncpg://telemed:compose-postgres-password@127.0.0.1:5432/telemed"
    )
    assert env["TELEMED_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert env["TELEMED_PUBLIC_URL"] == "https://telemed.example.ru"
    assert env["TELEMED_TRUSTED_PROXIES"] == "127.0.0.1"
    assert env["TELEMED_TURN_SECRET"] == COMPOSE_ENV["TURN_SECRET"]
    assert env["TELEMED_TURN_URLS"].startswith("turn:telemed.example.ru:3478")

    assert "listen_addresses=127.0.0.1" in services["postgres"]["command"]
    postgres_env = services["postgres"]["environment"]
    assert postgres_env["POSTGRES_PASSWORD"] == COMPOSE_ENV["POSTGRES_PASSWORD"]
    assert services["redis"]["command"][:3] == ["redis-server", "--bind", "127.0.0.1"]
    coturn = services["coturn"]["command"]
    assert f"--static-auth-secret={COMPOSE_ENV['TURN_SECRET']}" in coturn
    assert "--use-auth-secret" in coturn
    assert "--allowed-peer-ip=203.0.113.10" in coturn
    nginx = services["nginx"]["volumes"]
    assert any(
        volume.startswith("./nginx/telemed.conf:") or "/deploy/nginx/telemed.conf:" in volume
        for volume in nginx
    ), nginx
    assert "/etc/ssl/telemed:/etc/ssl/telemed:ro" in nginx


def test_the_compose_file_names_a_missing_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in COMPOSE_ENV.items() if k != "TELEMED_SECRET_KEY"}
    done = _compose_config(tmp_path, **env)
    assert done.returncode != 0
    assert "set TELEMED_SECRET_KEY in deploy/.env" in done.stderr


def test_the_example_env_file_fills_every_variable(tmp_path: Path) -> None:
    done = _compose_config(tmp_path, "--env-file", str(DEPLOY / "env.example"))
    assert done.returncode == 0, done.stderr
    env = yaml.safe_load(done.stdout)["services"]["telemed"]["environment"]
    assert env["TELEMED_PUBLIC_URL"] == "https://telemed.example.ru"


@needs_root
async def test_the_compose_telemed_service_runs_its_workers_on_postgresql_and_redis(
    podman: Podman, image: str, postgres: PostgresServer, redis_server: RedisServer
) -> None:
    """The telemed service as compose.yaml starts it (its command, settings and the
    machine's network), with a real PostgreSQL and Redis of the test's in place of the
    compose file's, on a free loopback port."""
    done = _compose_config(ROOT, **COMPOSE_ENV)
    assert done.returncode == 0, done.stderr
    service = yaml.safe_load(done.stdout)["services"]["telemed"]
    assert service["command"] == ["telemed", "serve", "--workers", "2"]
    port = free_port()
    volume = f"telemed-test-{uuid.uuid4().hex[:12]}"
    name = f"telemed-test-{uuid.uuid4().hex[:12]}"
    podman("volume", "create", volume)
    try:
        async with fresh_database(postgres) as database_url:
            env = {
                **service["environment"],
                "TELEMED_DATABASE_URL": database_url,
                "TELEMED_REDIS_URL": redis_server.url,
                "TELEMED_PORT": str(port),
                "TELEMED_MEDIA_ADDRESSES": "127.0.0.1",
                "TELEMED_LOG_LEVEL": "WARNING",
            }
            assert env["TELEMED_HOST"] == "127.0.0.1"
            settings = [f"--env={key}={value}" for key, value in env.items()]
            podman(
                "run",
                "--detach",
                "--name",
                name,
                f"--network={service['network_mode']}",
                f"--volume={volume}:/var/lib/telemed",
                *settings,
                image,
                *service["command"],
            )
            _wait_healthy(podman, name)
            # Production mode: demo data only when forced.
            refused = podman("exec", name, "telemed", "demo", check=False)
            assert refused.returncode != 0
            assert "refusing demo data in production" in refused.stderr
            assert PATIENT_PHONE in podman("exec", name, "telemed", "demo", "--force").stdout

            check_whole_app(f"http://127.0.0.1:{port}")
            # Each worker is a node, recorded in Redis at its start.
            client = redis.asyncio.Redis.from_url(redis_server.url)
            try:
                for _ in range(60):
                    nodes = [key async for key in client.scan_iter("telemed:node:*")]
                    if len(nodes) == 2:
                        break
                    await asyncio.sleep(0.5)  # the second worker is starting
            finally:
                await client.aclose()
            assert len(nodes) == 2, nodes

            podman("stop", "--time", "30", name, timeout=60)
            exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout
            assert exit_code.strip() == "0", podman("logs", name).stderr
    finally:
        podman("rm", "--force", name, check=False)
        podman("volume", "rm", "--force", volume, check=False)
