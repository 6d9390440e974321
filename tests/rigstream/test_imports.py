"""Every module imports on its own, first, in a fresh interpreter (no import cycle hides behind
the order the test suite happens to import them in)."""

from __future__ import annotations

import subprocess
import sys

import pytest

MODULES = ["rigstream.basics", "rigstream.rules", "rigstream.config", "rigstream.protocol",
           "rigstream.transport", "rigstream.clock", "rigstream.health", "rigstream.app.session",
           "rigstream.app.summary", "rigstream.app.demo", "rigstream.app.monitor", "rigstream.app.cli",
           "rigstream.app.commands", "rigstream.app.report", "rigstream.app.doctor", "rigstream.app.bench",
           "rigstream.app.verify", "rigstream.latency", "rigstream.inference.rules",
           "rigstream.inference.actions", "rigstream.inference.backends", "rigstream.inference.dlc_files",
           "rigstream.acquisition.ringbuffer",
           "rigstream.acquisition.backends", "rigstream.firmware.trigger", "rigstream.firmware.backends",
           "rigstream.sync.session_align"]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_first(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
