"""The wheel's one build step: copy the web app (``web/``) and the browser packages it
loads (from ``node_modules/``, with their licences) into ``telemed/_web``, so that an
installed Telemed serves the whole app (docs/architecture.md, "The package").

Everything else is in pyproject.toml.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _web_files():
    # By path: importing the telemed package would need its dependencies at build time.
    spec = importlib.util.spec_from_file_location(
        "_telemed_web_files", HERE / "telemed" / "web_files.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class BuildPyWithWeb(build_py):
    def run(self) -> None:
        super().run()
        # An editable install serves the checkout's own files (telemed/web_files.py).
        if self.dry_run or getattr(self, "editable_mode", False):
            return
        web_files = _web_files()
        target = Path(self.build_lib) / "telemed" / "_web"
        try:
            written = web_files.copy_for_wheel(HERE, target)
        except web_files.MissingWebFiles as exc:
            raise SystemExit(f"telemed: cannot build the package: {exc}") from None
        self.announce(f"copied {len(written)} web files into {target}", level=2)


setup(cmdclass={"build_py": BuildPyWithWeb})
