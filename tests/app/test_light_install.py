"""A Raspberry Pi's install: ``pip install rigstream[pi]`` in a fresh venv brings what the trigger
daemon needs and none of the host's libraries, and the daemon runs in it (it installs from the
package index, as .ci/run does; about 10-30 s)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rigstream.app.cli import HOST_MODULES

ROOT = Path(__file__).resolve().parents[2]
HOST_DISTRIBUTIONS = {"onnxruntime", "numba", "pandas", "tables", "h5py", "av", "opencv-python-headless",
                      "opencv-python", "aiohttp", "scipy", "torch"}


@pytest.mark.slow
def test_a_pi_install_is_light_and_runs_the_trigger(tmp_path: Path) -> None:
    src = tmp_path / "src"  # built from a copy: pip builds in the source tree and leaves build/ there
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("rigstream", "app", "acquisition", "firmware", "inference", "sync"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{src}[pi]"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True,
                            text=True, check=True).stdout
    installed = {d["name"].lower() for d in json.loads(listed)}
    assert "rigstream" in installed and "rpi.gpio" in installed
    assert not installed & HOST_DISTRIBUTIONS, installed & HOST_DISTRIBUTIONS

    helped = subprocess.run([str(venv / "bin" / "rigstream"), "trigger", "--help"], capture_output=True,
                            text=True)
    assert helped.returncode == 0 and "usage: rigstream trigger" in helped.stdout, helped.stderr
    # a host command says in one line what is missing, before it starts anything
    refused = subprocess.run([str(venv / "bin" / "rigstream"), "demo", "--seconds", "1"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode == 2 and not (tmp_path / "sessions").exists()
    (line,) = refused.stderr.strip().splitlines()
    assert "rigstream[host]" in line and all(m in line for m in HOST_MODULES)
    # the daemon itself, on the simulated pins: 20 pulses
    script = textwrap.dedent("""
        import tempfile, zmq
        from rigstream.config import load_rig
        from rigstream.firmware.pins import SimPins
        from rigstream.firmware.trigger import TriggerDaemon
        with tempfile.TemporaryDirectory() as run, zmq.Context() as ctx, SimPins() as pins:
            with TriggerDaemon(load_rig(), pins, ctx, run) as daemon:
                daemon.start(max_pulses=20)
                assert daemon.wait(10.0)
                print(daemon.pulses_sent)
        """)
    ran = subprocess.run([str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0 and ran.stdout.split() == ["20"], ran.stderr[-3000:]
