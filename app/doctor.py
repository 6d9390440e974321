"""``rigstream doctor``: check a rig step by step, each step PASS or FAIL with what to check.

1. cameras found: every camera of the rig file is connected (simulated ones always are);
2. settings applied: every camera opens and takes the rig file's settings;
3. trigger and strobe wiring: a short session of real pulses through the real components
   (trigger daemon, camera nodes, recorder); from its ``frames.csv`` every camera must have
   one frame per pulse, none dropped or flagged, each at its pulse's time (camera clock vs Pi
   clock through a linear fit). The primary's result tests the Pi -> primary wire
   (``trigger: Pi -> cam0``), each secondary's the primary's strobe to it
   (``strobe: cam0 -> cam1``);
4. disk speed: a test file written with fsync to the recording folder, against the data rate
   of the rig's cameras as raw frames (an upper bound for the compressed codecs).

Nothing is printed here: results go to a callback, the CLI prints them.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.config import CameraConfig, RecordingConfig, RigConfig, RingBufferConfig, with_overrides

logger = logging.getLogger(__name__)

HARDWARE_BACKENDS = ("pyspin",)
"""Backends whose cameras must be found on a bus; the simulated one always exists."""

MIN_WIRING_PULSES = 100
WIRING_SECONDS = 2.0
RESIDUAL_FRACTION = 0.25
"""A frame more than this fraction of the trigger period off the fitted camera->Pi clock line
fails the wiring step (the camera node itself flags frames half a period off)."""
DISK_TEST_MB = 256.0
DISK_TEST_MB_SIM = 16.0
"""Default size of the disk test file, MB (1 MB = 10^6 bytes); smaller for simulated rigs."""
DISK_CHUNK_BYTES = 8 << 20

BCM_TO_HEADER_PIN = {2: 3, 3: 5, 4: 7, 17: 11, 27: 13, 22: 15, 10: 19, 9: 21, 11: 23, 0: 27, 5: 29,
                     6: 31, 13: 33, 19: 35, 26: 37, 14: 8, 15: 10, 18: 12, 23: 16, 24: 18, 25: 22,
                     8: 24, 7: 26, 1: 28, 12: 32, 16: 36, 20: 38, 21: 40}
"""Raspberry Pi 40-pin header: BCM GPIO number -> physical pin (firmware/README.md)."""


@dataclass
class StepResult:
    """One checked step. ``ok`` is None for a step that was skipped."""

    name: str
    ok: bool | None
    detail: str
    check: str = ""
    """What to check when the step failed (or why it was skipped)."""

    @property
    def status(self) -> str:
        return "SKIP" if self.ok is None else "PASS" if self.ok else "FAIL"


@dataclass
class DoctorOptions:
    pulses: int | None = None
    """Pulses of the wiring session (default: WIRING_SECONDS at the rig's rate, at least
    MIN_WIRING_PULSES)."""
    disk_test_mb: float | None = None
    """Size of the disk test file (default DISK_TEST_MB; DISK_TEST_MB_SIM for a simulated rig)."""
    keep: Path | None = None
    """Keep the wiring session's folder here (default: a temporary folder, removed)."""
    residual_fraction: float = RESIDUAL_FRACTION
    progress: Callable[[str], None] | None = None
    """Progress lines of the wiring session."""


def _is_sim(rig: RigConfig) -> bool:
    return all(c.backend not in HARDWARE_BACKENDS for c in rig.cameras)


def header_pin(bcm: int) -> str:
    pin = BCM_TO_HEADER_PIN.get(bcm)
    return f"GPIO{bcm} (header pin {pin})" if pin else f"GPIO{bcm}"


# -- 1. cameras found ------------------------------------------------------------------------


def pyspin_installed() -> bool:
    """Whether ``import PySpin`` can work, without importing it (loading the SDK is slow)."""
    if "PySpin" in sys.modules:  # imported already, or set (None: blocked; a test's fake)
        return sys.modules["PySpin"] is not None
    try:
        return importlib.util.find_spec("PySpin") is not None
    except (ImportError, ValueError):
        return False


PYSPIN_MISSING = ("PySpin (FLIR's Spinnaker SDK for Python) is not installed: install the Spinnaker "
                  "SDK and the spinnaker_python wheel that matches it and this Python version, from "
                  "FLIR's (Teledyne's) download page")


def list_connected_cameras() -> list[dict[str, Any]]:
    """The connected FLIR cameras (serial, model, firmware, interface), through the PySpin
    driver. Raises CameraError when PySpin or the driver is unavailable or fails."""
    from rigstream.acquisition.camera import CameraError

    if not pyspin_installed():
        raise CameraError(PYSPIN_MISSING)
    try:
        from rigstream.acquisition.pyspin_camera import list_cameras
    except ImportError as exc:
        raise CameraError(f"the PySpin camera driver cannot be loaded: {exc}") from None
    try:
        return list_cameras()
    except ImportError as exc:
        raise CameraError(f"PySpin cannot be loaded: {exc}") from None


def check_cameras_found(rig: RigConfig) -> StepResult:
    from rigstream.acquisition.camera import CameraError

    hardware = [c for c in rig.cameras if c.backend in HARDWARE_BACKENDS]
    others = [f"{c.name} ({c.backend})" for c in rig.cameras if c.backend not in HARDWARE_BACKENDS]
    found: list[str] = []
    if hardware:
        try:
            connected = list_connected_cameras()
        except CameraError as exc:
            return StepResult("cameras found", False, str(exc),
                              "PySpin and the Spinnaker SDK on this host (`rigstream cameras` lists what "
                              "they see)")
        by_serial = {str(c.get("serial", "")): c for c in connected}
        missing = [c for c in hardware if str(c.serial) not in by_serial]
        if missing:
            seen = ", ".join(f"{s} ({c.get('model', '?')})" for s, c in by_serial.items()) or "none"
            names = ", ".join(f"{c.name} (serial {c.serial or '-'})" for c in missing)
            return StepResult(
                "cameras found", False, f"not connected: {names}; connected: {seen}",
                "the USB3 cable and port of each missing camera (its LED), that the serial in the rig "
                "file is the one on the camera's label, and `rigstream cameras`; one USB3 host "
                "controller per camera at full rate (hardware/README.md)")
        found = [f"{c.name} (serial {c.serial}, {by_serial[str(c.serial)].get('model', '?')})"
                 for c in hardware]
    return StepResult("cameras found", True, ", ".join(found + others))


# -- 2. settings applied ----------------------------------------------------------------------


def check_settings(rig: RigConfig) -> StepResult:
    """Open and configure every camera with the rig's settings, then close it."""
    import zmq

    from rigstream.acquisition.backends import make_camera
    from rigstream.acquisition.camera import CameraError

    failed: list[str] = []
    ok: list[str] = []
    ctx = zmq.Context()
    run = tempfile.mkdtemp(prefix="rigstream-doctor-")
    try:
        for cam in rig.cameras:
            camera = None
            try:
                camera = make_camera(cam, rig, run, ctx)
                camera.open()
                camera.configure()
                ok.append(f"{cam.name} ({cam.width}x{cam.height} {cam.pixel_format}, "
                          f"exposure {cam.exposure_us} us)")
            except (CameraError, OSError, zmq.ZMQError) as exc:
                failed.append(f"{cam.name}: {exc}")
            finally:
                if camera is not None:
                    try:
                        camera.close()
                    except (CameraError, OSError, zmq.ZMQError) as exc:
                        logger.warning("camera %s: close failed: %s", cam.name, exc)
    finally:
        ctx.destroy(linger=0)
        shutil.rmtree(run, ignore_errors=True)
    if failed:
        return StepResult("settings applied", False, "; ".join(failed),
                          "the values in the rig file against the camera's model (size, pixel format, "
                          "exposure shorter than the trigger period), and that no other program "
                          "(SpinView) has the camera open")
    return StepResult("settings applied", True, ", ".join(ok))


# -- 3. trigger and strobe wiring --------------------------------------------------------------


def wiring_pulses(rig: RigConfig, pulses: int | None = None) -> int:
    if pulses is not None:
        return pulses
    return max(MIN_WIRING_PULSES, math.ceil(WIRING_SECONDS * rig.trigger.rate_hz))


def wiring_rig(rig: RigConfig, folder: Path) -> RigConfig:
    """The rig a wiring session runs: no pose engine (so no rules), no neural clock, a minimal
    ring buffer, raw recording (the fastest, so the recorder cannot be what loses frames)."""
    return with_overrides(
        rig, pose=None, neural_clock=None, rules=[],
        ring_buffer=RingBufferConfig(pre_s=0.0, post_s=0.0, margin_s=0.1),
        recording=RecordingConfig(folder=str(folder), codec="raw",
                                  flush_interval_s=rig.recording.flush_interval_s))


def step_name(rig: RigConfig, cam: CameraConfig) -> str:
    return f"trigger: Pi -> {cam.name}" if cam.role == "primary" else \
        f"strobe: {rig.primary.name} -> {cam.name}"


LINE_PINS = {"Line0": "pin 2, black, opto-isolated in", "Line1": "pin 4, white, opto-isolated out",
             "Line2": "pin 3, red", "Line3": "pin 1, green"}
"""Blackfly S (cased, Hirose HR10A) GPIO line -> connector pin and FLIR GPIO-cable wire colour."""


def _line(line: str) -> str:
    return f"{line} ({LINE_PINS[line]})" if line in LINE_PINS else line


def _wiring_check(rig: RigConfig, cam: CameraConfig, primary_failed: bool) -> str:
    primary = rig.primary
    trigger_line = getattr(cam, "trigger_line", "Line3")
    ground = "opto GND (pin 5, blue)" if trigger_line == "Line0" else "GND (pin 6, brown)"
    if cam.role == "primary":
        text = (f"the wire from the Pi's {header_pin(rig.trigger.camera_pin)} to {cam.name}'s "
                f"{_line(trigger_line)} and from a Pi ground to the camera's {ground}; "
                f"trigger.camera_pin, trigger.backend and cameras[{cam.name}].trigger_line in the rig "
                f"file; the camera's TriggerSource ({trigger_line}, rising edge); a Pi whose pulses are "
                f"late (no real-time priority, firmware/README.md)")
    else:
        strobe_line = getattr(primary, "strobe_line", "Line2")
        pull_up = ("a pull-up resistor from Line1 to the primary's Line2 3.3 V output (strobe_3v3: "
                   "V3_3Enable) and its opto GND (pin 5) tied to GND (pin 6)" if strobe_line == "Line1"
                   else f"the pull-up resistor from {strobe_line} to 3.3 V (an open-drain output: "
                        f"without it the secondary sees no edge)")
        text = (f"the wire from {primary.name}'s {_line(strobe_line)} to {cam.name}'s "
                f"{_line(trigger_line)}, the ground between the cameras ({ground}); {pull_up}; "
                f"{primary.name}'s LineSource ExposureActive on {strobe_line}; {cam.name}'s TriggerSource "
                f"{trigger_line}, rising edge (hardware/README.md)")
        if primary_failed:
            text = f"{primary.name} failed too: fix its trigger first, it drives the strobe. Then " + text
    if cam.backend == "sim":
        faults = {k: v for k, v in _builtins(cam.faults).items() if v not in (0, 0.0, None) and k != "seed"}
        if faults:
            text = f"simulated camera with faults {faults} in the rig file. On hardware: " + text
    return text


def _builtins(obj: Any) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(obj)


def read_frames_csv(folder: Path) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    with open(folder / "frames.csv", newline="") as f:
        for row in csv.DictReader(f):
            out[row["camera"]].append(row)
    return out


def analyse_camera(rows: list[dict[str, str]], pulses: int, period_ns: int,
                   residual_fraction: float = RESIDUAL_FRACTION) -> tuple[list[str], str]:
    """Problems with one camera's rows of a wiring session (empty when sound), and a summary.

    Every pulse index 0..pulses-1 must have exactly one row, with a frame (not dropped,
    incomplete or lost) and no timing flag, and the frames' camera times must sit on a line
    through their pulses' Pi times within ``residual_fraction`` of the period."""
    problems: list[str] = []
    indices = [int(r["trigger_index"]) for r in rows]
    missing = sorted(set(range(pulses)) - set(indices))
    extra = len(indices) - len(set(indices))
    if missing:
        problems.append(f"no row for {len(missing)} pulses (first {missing[:5]})")
    if extra:
        problems.append(f"{extra} duplicated rows")
    counts = {key: [int(r["trigger_index"]) for r in rows if r[key] == "1"]
              for key in ("dropped", "incomplete", "timing_flag", "lost_in_transport")}
    for key, what in (("dropped", "dropped"), ("incomplete", "incomplete"),
                      ("timing_flag", "off their pulse's time (timing_flag)"),
                      ("lost_in_transport", "lost in transport")):
        if counts[key]:
            problems.append(f"{len(counts[key])} frames {what} (trigger indices {counts[key][:5]}"
                            f"{'...' if len(counts[key]) > 5 else ''})")
    frames = sum(1 for r in rows if r["dropped"] == "0")
    kept = [(int(r["t_camera_ns"]), int(r["t_pi_ns"])) for r in rows
            if r["dropped"] == "0" and int(r["t_camera_ns"]) >= 0 and int(r["t_pi_ns"]) >= 0]
    fit = ""
    if len(kept) >= 3:
        t = np.array(kept, dtype=np.int64)
        x = (t[:, 0] - t[0, 0]).astype(np.float64)
        y = (t[:, 1] - t[0, 1]).astype(np.float64)
        slope, offset = np.polyfit(x, y, 1)
        residual_ns = y - (offset + slope * x)
        worst = float(np.max(np.abs(residual_ns)))
        limit = residual_fraction * period_ns
        fit = (f"; camera->Pi clock residual RMS {np.sqrt(np.mean(residual_ns ** 2)) / 1e3:.1f} us, "
               f"max {worst / 1e3:.1f} us (limit {limit / 1e3:.0f} us)")
        if worst > limit:
            problems.append(f"frames up to {worst / 1e3:.0f} us off their pulses' times (limit "
                            f"{limit / 1e3:.0f} us = {residual_fraction:g} period)")
    elif frames:
        problems.append(f"only {len(kept)} frames with both clocks: cannot check their timing")
    return problems, f"{frames} frames for {pulses} pulses{fit}"


def check_wiring(rig: RigConfig, options: DoctorOptions) -> list[StepResult]:
    """Run a short session and check every camera's frames against the pulses."""
    from rigstream.acquisition.camera import CameraError
    from rigstream.app.session import Session, SessionError, SessionPlan

    pulses = wiring_pulses(rig, options.pulses)
    tmp = None
    if options.keep is not None:
        out = Path(options.keep)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="rigstream-doctor-")
        out = Path(tmp.name) / "session"
    try:
        session_rig = wiring_rig(rig, out.parent)
        try:
            summary = Session(SessionPlan(session_rig, out, pulses), progress=options.progress).run()
        except (SessionError, CameraError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return [StepResult(step_name(rig, cam), False, f"the wiring session failed: {first}",
                               f"the logs in {out / 'logs'} (use --keep DIR to keep them); "
                               + _wiring_check(rig, cam, False)) for cam in rig.cameras]
        sent = int(summary.get("pulses_sent", pulses))
        rows = read_frames_csv(out)
        failed_components = summary.get("failed_components", {})
        results: list[StepResult] = []
        primary_failed = False
        for cam in [rig.primary, *[c for c in rig.cameras if c.role != "primary"]]:
            problems, text = analyse_camera(rows.get(cam.name, []), sent, rig.trigger.period_ns,
                                            options.residual_fraction)
            why = failed_components.get(f"camera:{cam.name}")
            if why:
                problems.insert(0, f"its camera node failed: {why}")
            ok = not problems
            if cam.role == "primary":
                primary_failed = not ok
            detail = text if ok else f"{cam.name}: " + "; ".join(problems) + f" ({text})"
            results.append(StepResult(step_name(rig, cam), ok, detail,
                                      "" if ok else _wiring_check(rig, cam, primary_failed)))
        return results
    finally:
        if tmp is not None:
            tmp.cleanup()


# -- 4. disk speed ----------------------------------------------------------------------------


def recording_rate_mb_s(rig: RigConfig) -> float:
    """Data rate of the rig's cameras as raw frames, MB/s (10^6 bytes): the sum over cameras of
    width * height * channels * trigger rate. The compressed codecs write less than this."""
    return sum(c.width * c.height * c.channels for c in rig.cameras) * rig.trigger.rate_hz / 1e6


def measure_write_mb_s(folder: Path, test_mb: float) -> tuple[float, float]:
    """Write ``test_mb`` MB to a temporary file in ``folder`` and fsync it; returns (MB/s,
    seconds). The data is random (a compressing file system cannot cheat) and the file is
    removed afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    total = max(int(test_mb * 1e6), 1)
    chunk = np.random.default_rng(0).integers(0, 256, min(total, DISK_CHUNK_BYTES), dtype=np.uint8)
    view = memoryview(chunk.data)
    fd, name = tempfile.mkstemp(prefix=".rigstream-doctor-", suffix=".tmp", dir=folder)
    try:
        t0 = time.perf_counter()
        left = total
        while left > 0:
            n = os.write(fd, view[:min(left, len(view))])
            left -= n
        os.fsync(fd)
        seconds = time.perf_counter() - t0
    finally:
        os.close(fd)
        os.unlink(name)
    return total / 1e6 / max(seconds, 1e-9), seconds


def check_disk(folder: str | Path, required_mb_s: float, test_mb: float,
               codec: str = "raw") -> StepResult:
    """Pass when ``folder`` takes at least ``required_mb_s`` in a ``test_mb`` MB fsynced write."""
    folder = Path(folder)
    try:
        speed, seconds = measure_write_mb_s(folder, test_mb)
    except OSError as exc:
        return StepResult("disk speed", False, f"cannot write a test file to {folder}: {exc.strerror or exc}",
                          "that recording.folder exists or can be created, is writable by this user and "
                          "has free space")
    basis = "raw frames" if codec == "raw" else f"raw frames; {codec} writes less, so this is an upper bound"
    detail = (f"{folder}: {test_mb:g} MB written with fsync in {seconds:.2f} s = {speed:.0f} MB/s; the "
              f"recording needs {required_mb_s:.1f} MB/s ({basis})")
    if speed >= required_mb_s:
        return StepResult("disk speed", True, detail + f"; margin {speed / max(required_mb_s, 1e-9):.1f}x")
    return StepResult("disk speed", False, detail + f": {required_mb_s - speed:.0f} MB/s short",
                      "record to a faster disk (an NVMe SSD whose sustained write, after its cache, "
                      "exceeds the rate), lower the frame size or rate, or use a compressed codec "
                      "(recording.codec); a longer test (--disk-mb) shows the sustained speed")


# -- all of it ----------------------------------------------------------------------------------


def run_doctor(rig: RigConfig, options: DoctorOptions | None = None,
               report: Callable[[StepResult], None] | None = None) -> list[StepResult]:
    """Every step in order; ``report`` is called with each result as it comes. The wiring
    session is skipped when a camera is missing or cannot be configured."""
    options = options or DoctorOptions()
    results: list[StepResult] = []

    def done(result: StepResult) -> None:
        results.append(result)
        logger.info("doctor: %s %s: %s", result.status, result.name, result.detail)
        if report is not None:
            report(result)

    found = check_cameras_found(rig)
    done(found)
    settings = check_settings(rig) if found.ok else StepResult(
        "settings applied", None, "skipped", "a camera is missing (step 1)")
    done(settings)
    if found.ok and settings.ok:
        for result in check_wiring(rig, options):
            done(result)
    else:
        for cam in rig.cameras:
            done(StepResult(step_name(rig, cam), None, "skipped",
                            "the cameras must be found and configured first (steps 1 and 2)"))
    test_mb = options.disk_test_mb or (DISK_TEST_MB_SIM if _is_sim(rig) else DISK_TEST_MB)
    done(check_disk(rig.recording.folder, recording_rate_mb_s(rig), test_mb, rig.recording.codec))
    return results
