"""Schema fuzzing of the whole HTTP API with schemathesis, as every role: a real server
process with the demo data, driven by ``st run`` against its own OpenAPI document.

Every check of schemathesis is on: no 5xx, every status and body as documented, input
the schema allows accepted, input it forbids refused. The budget per role is bounded
(``TELEMED_FUZZ_EXAMPLES`` examples per operation and phase, 25 by default) and the
seed fixed (``TELEMED_FUZZ_SEED``), so that CI is repeatable; before a release run it
longer and with a new seed, as ``docs/security.md`` says::

    TELEMED_FUZZ_EXAMPLES=500 TELEMED_FUZZ_SEED=$RANDOM ./dev test tests/test_fuzz_api.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port, http, wait_until_healthy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("TELEMED_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("TELEMED_FUZZ_SEED", "20261206")
ADMIN = ("+79000000009", "Admin-Fuzz-2026")
DEMO = {
    "patient": ("+79000000001", "Patient-2026"),
    "doctor": ("+79000000011", "Doctor-2026"),
    "manager": ("+79000000002", "Manager-2026"),
    "admin": ADMIN,
}
# Ending the fuzzer's own session would leave the rest of its run signed out.
EXCLUDED = ["logout"]


def _env(data: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TELEMED_DATA_DIR": str(data),
        "TELEMED_SECRET_KEY": "fuzz-secret-" + "x" * 32,
        "TELEMED_LOG_LEVEL": "WARNING",
        "TELEMED_WORKER_INTERVAL_SECONDS": "0",
        "TELEMED_PASSWORD_HASH_TIME_COST": "1",
        "TELEMED_PASSWORD_HASH_MEMORY_KIB": "1024",
        "TELEMED_PASSWORD_HASH_PARALLELISM": "1",
        # The fuzzer makes thousands of calls: limits would answer most of them 429 and
        # leave the endpoints behind them untested (the limits have tests of their own).
        "TELEMED_RATE_LIMITS": json.dumps(
            {
                "write.user": "100000/60",
                "write.address": "100000/60",
                "register.address": "100000/60",
                "password.user": "100000/60",
            }
        ),
        "TELEMED_LOGIN_MAX_FAILURES_PER_ACCOUNT": "100000",
        "TELEMED_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "data"
    env = _env(data)
    admin = ("--role", "admin", "--phone", ADMIN[0], "--password", ADMIN[1])
    subprocess.run(
        [sys.executable, "-m", "telemed", "create-user", *admin, "--name", "Администратор"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = root / "server.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "telemed", "serve", "--demo", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(base, process, log)
            yield base, log
        finally:
            process.terminate()
            process.wait(timeout=20)


@pytest.mark.parametrize("role", ["anonymous", "patient", "doctor", "manager", "admin"])
def test_fuzzing_finds_no_server_error_and_no_contract_break(
    server: tuple[str, Path], role: str, tmp_path: Path
) -> None:
    base, log = server
    headers = []
    if role != "anonymous":
        login, password = DEMO[role]
        status, signed_in = http(
            "POST", f"{base}/api/v1/auth/login", {"login": login, "password": password}
        )
        assert status == 200, signed_in
        headers = ["--header", f"Authorization: Bearer {signed_in['token']}"]
    report = tmp_path / "junit.xml"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "st"),
            "--config-file",
            str(ROOT / "tests" / "schemathesis.toml"),
            "run",
            f"{base}/api/v1/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            SEED,
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
            *headers,
            *(arg for op in EXCLUDED for arg in ("--exclude-operation-id", op)),
        ],
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    server_log = log.read_text()
    assert result.returncode == 0, (
        result.stdout[-20000:] + result.stderr[-5000:] + "\nServer log:\n" + server_log[-20000:]
    )
    assert "Traceback" not in server_log, server_log[-20000:]
