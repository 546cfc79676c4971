"""A package that runs anywhere: the wheel carries the web app and its browser libraries
(with their licences); installed into a fresh virtual environment outside the
repository, ``telemed serve --demo`` serves the whole app and signs a patient in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser

from telemed import web_files
from tests.servers import free_port
from tests.wheel import (
    ROOT,
    build_wheel,
    check_whole_app,
    fetch,
    sign_in_with_browser,
    wait_for,
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment, outside the repository, with the wheel installed
    (its dependencies from the package index, as a user gets them)."""
    root = tmp_path_factory.mktemp("package")
    wheel = build_wheel(root / "dist", root)
    environment = root / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", environment], env=_clean_env(), check=True, timeout=300
    )
    done = subprocess.run(
        [environment / "bin" / "pip", "install", "--quiet", wheel],
        env=_clean_env(),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return environment


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would point Python at the checkout or
    carry this run's settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TELEMED_") and key not in {"PYTHONPATH", "VIRTUAL_ENV"}
    }
    return {**env, **extra}


@pytest.fixture
def server(installed: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [installed / "bin" / "telemed", "serve", "--demo"],
            env=_clean_env(
                TELEMED_HOST="127.0.0.1",
                TELEMED_PORT=str(port),
                TELEMED_DATA_DIR=str(tmp_path / "data"),
            ),
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, log_path.read_text()
            return fetch(f"{base}/readyz")[0] == 200

        wait_for(ready, 60, log_path.read_text)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "+79000000001" in log_path.read_text(), "the demo logins were printed"


def test_the_installed_package_is_not_the_checkout(installed: Path) -> None:
    where = subprocess.run(
        [
            installed / "bin" / "python",
            "-c",
            "import telemed.web_files as w; print(w.__file__); print(w.locate().packaged)",
        ],
        env=_clean_env(),
        cwd=installed,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert Path(where[0]).is_relative_to(installed / "lib")
    assert not Path(where[0]).is_relative_to(ROOT)
    assert where[1] == "True"
    package = Path(where[0]).parent / "_web"
    licences = package / "licences"
    for npm in ("socket.io-client", "engine.io-client", "pdfjs-dist"):
        assert (licences / npm / "LICENSE").read_text().strip(), npm
    notice = (licences / "README.txt").read_text()
    assert "socket.io-client 4." in notice
    assert "pdfjs-dist " in notice


def test_the_installed_server_serves_the_whole_app(server: str) -> None:
    check_whole_app(server)


async def test_a_browser_signs_in_on_the_installed_server(server: str, browser: Browser) -> None:
    await sign_in_with_browser(browser, server)


def test_the_checkout_serves_its_own_files() -> None:
    files = web_files.locate()
    assert not files.packaged
    assert files.app == ROOT / "web"
    assert (files.vendor["socket.io"] / "socket.io.esm.min.js").is_file()
    assert (files.vendor["pdfjs"] / "build" / "pdf.min.mjs").is_file()


def test_a_checkout_without_browser_packages_builds_no_wheel(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "web", checkout / "web")
    (checkout / "node_modules").mkdir()
    with pytest.raises(web_files.MissingWebFiles, match=r"npm ci"):
        web_files.copy_for_wheel(checkout, tmp_path / "out")
