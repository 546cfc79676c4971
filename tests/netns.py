"""A test host of its own: a network namespace joined to this one by a veth pair, whose
link a test can shape (``tc`` ``tbf``: this kernel has no ``netem``), cut and restore,
and a Chromium that runs inside it.

The namespace has one address and no route: it reaches the test's own address on the
other end of the link, nothing else. Needs root (``ip netns``, ``tc``), as this
project's machines and CI give.
"""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import Browser, async_playwright

from tests.browser import ARGS, CHROMIUM


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


@dataclass(frozen=True)
class Namespace:
    name: str
    outer: str
    """The veth end on the test's side."""
    inner: str
    """The veth end inside the namespace."""
    host_address: str
    """The test's address on the link (servers the namespace reaches listen here)."""
    address: str
    """The namespace's own address."""

    def run(self, *command: str) -> None:
        _run("ip", "netns", "exec", self.name, *command)

    def shape(self, kbit: int | None) -> None:
        """Limit the link to ``kbit`` kbit/s each way (``None``: no limit). Packets over
        what a 150 ms queue holds are dropped, as on a mobile link."""
        for device, inside in ((self.outer, False), (self.inner, True)):
            run = self.run if inside else _run
            if kbit is None:
                subprocess.run(
                    [*(["ip", "netns", "exec", self.name] if inside else []), "tc", "qdisc",
                     "del", "dev", device, "root"],
                    capture_output=True,
                    check=False,
                )  # fmt: skip
                continue
            burst = max(1600, kbit * 1000 // 8 // 50)  # 20 ms of the rate, at least a packet
            run(
                "tc", "qdisc", "replace", "dev", device, "root", "tbf",
                "rate", f"{kbit}kbit", "burst", str(burst), "latency", "150ms",
            )  # fmt: skip

    def cut(self) -> None:
        """The namespace's link goes down (as a phone's network does): nothing passes
        either way. The test's end keeps its address, reachable from this side."""
        self.run("ip", "link", "set", self.inner, "down")

    def restore(self) -> None:
        self.run("ip", "link", "set", self.inner, "up")

    def readdress(self) -> str:
        """The namespace moves to another address on its link (as a phone that changes
        networks); returns it. Its connections from the old address are dead."""
        new = self.address.rsplit(".", 1)[0] + "." + str(int(self.address.rsplit(".", 1)[1]) + 1)
        # Removed first: removing a primary address would take its secondaries with it.
        self.run("ip", "addr", "del", f"{self.address}/29", "dev", self.inner)
        self.run("ip", "addr", "add", f"{new}/29", "dev", self.inner)
        return new

    def wrapper(self, directory: Path) -> Path:
        """An executable that runs Chromium inside the namespace (for Playwright's
        ``executable_path``: it talks to the browser over pipes, which cross)."""
        path = directory / f"chromium-in-{self.name}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} {CHROMIUM} "$@"\n')
        path.chmod(0o755)
        return path


@contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh namespace and link (10.213.N.0/29), removed after."""
    assert os.geteuid() == 0, "network namespaces need root (this project's machines give it)"
    tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
    net = random.randrange(1, 250)
    found = Namespace(
        name=f"telemed-{tag}",
        outer=f"tmo{tag}",
        inner=f"tmi{tag}",
        host_address=f"10.213.{net}.1",
        address=f"10.213.{net}.2",
    )
    _run("ip", "netns", "add", found.name)
    try:
        _run("ip", "link", "add", found.outer, "type", "veth", "peer", "name", found.inner)
        _run("ip", "link", "set", found.inner, "netns", found.name)
        _run("ip", "addr", "add", f"{found.host_address}/29", "dev", found.outer)
        _run("ip", "link", "set", found.outer, "up")
        found.run("ip", "addr", "add", f"{found.address}/29", "dev", found.inner)
        found.run("ip", "link", "set", found.inner, "up")
        found.run("ip", "link", "set", "lo", "up")
        yield found
    finally:
        subprocess.run(["ip", "link", "del", found.outer], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", found.name], capture_output=True, check=False)


@asynccontextmanager
async def chromium_for(
    origin: str, *, inside: Namespace | None = None, directory: Path
) -> AsyncIterator[Browser]:
    """A Chromium of its own (inside ``inside``, or here) that takes ``origin``, a plain
    HTTP address other than localhost, as a secure context (the camera needs one)."""
    executable = inside.wrapper(directory) if inside is not None else CHROMIUM
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(executable),
            args=[*ARGS, f"--unsafely-treat-insecure-origin-as-secure={origin}"],
        )
        try:
            yield launched
        finally:
            await launched.close()
