"""Where the web app's files are: in a checkout, ``web/`` and the browser packages under
``node_modules/``; in an installed wheel, the copy under ``telemed/_web/`` that the
build made (``setup.py``). The same names serve both, so the pages do not know which.

Standard library only: ``setup.py`` loads this file by path at build time, when
Telemed's dependencies may not be installed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent
PACKAGED_DIR = PACKAGE_DIR / "_web"
"""The wheel's copy: ``web/`` (the app), ``vendor/<name>/`` and ``licences/``."""


@dataclass(frozen=True)
class BrowserPackage:
    """An npm package (``package-lock.json``) whose files the pages load from
    ``/static/vendor/<name>/``."""

    name: str
    npm: str
    root: str
    """The folder of the npm package served as ``/static/vendor/<name>/``."""
    files: tuple[str, ...]
    """Globs, relative to ``root``, of what the pages load: what a wheel carries."""
    licensed: tuple[str, ...]
    """The npm packages whose code these files contain (bundled in), for their licences."""


BROWSER_PACKAGES = (
    # The ES module build bundles the engine.io client, both parsers and the emitter.
    BrowserPackage(
        name="socket.io",
        npm="socket.io-client",
        root="dist",
        files=("socket.io.esm.min.js",),
        licensed=(
            "socket.io-client",
            "engine.io-client",
            "engine.io-parser",
            "socket.io-parser",
            "@socket.io/component-emitter",
        ),
    ),
    # web/app/patient.js: the library, its worker, and the data it fetches on demand.
    BrowserPackage(
        name="pdfjs",
        npm="pdfjs-dist",
        root="",
        files=(
            "build/pdf.min.mjs",
            "build/pdf.worker.min.mjs",
            "cmaps/*",
            "standard_fonts/*",
            "wasm/*",
            "iccs/*",
        ),
        licensed=("pdfjs-dist",),
    ),
)


@dataclass(frozen=True)
class WebFiles:
    """The folders the server serves."""

    app: Path
    vendor: dict[str, Path]
    packaged: bool


def locate() -> WebFiles:
    """The wheel's copy when this is an installed package, else the checkout's files."""
    if (PACKAGED_DIR / "web" / "index.html").is_file():
        return WebFiles(
            app=PACKAGED_DIR / "web",
            vendor={p.name: PACKAGED_DIR / "vendor" / p.name for p in BROWSER_PACKAGES},
            packaged=True,
        )
    modules = CHECKOUT_DIR / "node_modules"
    return WebFiles(
        app=CHECKOUT_DIR / "web",
        vendor={p.name: modules / p.npm / p.root for p in BROWSER_PACKAGES},
        packaged=False,
    )


class MissingWebFiles(Exception):
    """The checkout lacks a file the wheel must carry (``npm ci`` not run)."""


def copy_for_wheel(checkout: Path, target: Path) -> list[Path]:
    """Copy ``web/``, the browser packages' files and their licences from a checkout into
    ``target`` (the wheel's ``telemed/_web``), replacing what was there. Returns the
    files written. Raises ``MissingWebFiles`` when a file is missing, rather than build
    a wheel whose pages cannot load."""
    app = checkout / "web"
    modules = checkout / "node_modules"
    if not (app / "index.html").is_file():
        raise MissingWebFiles(f"{app} has no index.html")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(app, target / "web")
    notice = [
        "Browser libraries in this package, copied from npm (package-lock.json) with "
        "their licences.",
        "",
    ]
    for package in BROWSER_PACKAGES:
        source = modules / package.npm / package.root
        for pattern in package.files:
            found = sorted(path for path in source.glob(pattern) if path.is_file())
            if not found:
                raise MissingWebFiles(
                    f"{source / pattern} not found: install the browser packages "
                    "(npm ci --omit=optional, which ./dev does)"
                )
            for path in found:
                copied = target / "vendor" / package.name / path.relative_to(source)
                copied.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copied)
        for npm in package.licensed:
            meta = json.loads((modules / npm / "package.json").read_text(encoding="utf-8"))
            licences = sorted(
                path
                for path in (modules / npm).iterdir()
                if path.is_file() and path.name.lower().startswith(("license", "licence"))
            )
            if not licences:
                raise MissingWebFiles(f"{modules / npm} has no licence file")
            for path in licences:
                copied = target / "licences" / npm / path.name
                copied.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copied)
            notice.append(
                f"{npm} {meta['version']} ({meta.get('license', 'see its licence')}): "
                f"vendor/{package.name}/, licences/{npm}/"
            )
    (target / "licences" / "README.txt").write_text("\n".join(notice) + "\n", encoding="utf-8")
    return sorted(path for path in target.rglob("*") if path.is_file())
