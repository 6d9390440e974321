"""rigstream doctor and rigstream cameras: the steps on the simulated rig (wiring through a real
session), a missed-trigger fault named by camera and step, the disk check, and no PySpin."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import pytest

from rigstream.app.cli import main
from rigstream.app.doctor import (
    DoctorOptions,
    analyse_camera,
    check_cameras_found,
    check_disk,
    check_settings,
    recording_rate_mb_s,
    run_doctor,
)
from rigstream.app.session import write_rig
from rigstream.config import RecordingConfig, RigConfig, load_rig, with_overrides
from tests.conftest import small_rig

ROOT = Path(__file__).resolve().parents[2]


def doctor_rig(tmp_path: Path, cam1_faults: dict[str, float] | None = None) -> Path:
    """A small, fast simulated rig (160x120 at 50 Hz) written to a file; recording goes to tmp."""
    rig = small_rig(width=160, height=120)
    doc = msgspec.to_builtins(rig)
    doc["trigger"]["rate_hz"] = 50.0
    doc["recording"]["folder"] = str(tmp_path / "recordings")
    if cam1_faults:
        doc["cameras"][1]["faults"] = cam1_faults
    path = tmp_path / "rig.yaml"
    write_rig(msgspec.convert(doc, type=RigConfig, strict=True), path)
    return path


@pytest.mark.slow
def test_doctor_passes_on_a_small_simulated_rig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--config", str(doctor_rig(tmp_path)), "--pulses", "100", "--disk-mb", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    for step in ("cameras found", "settings applied", "trigger: Pi -> cam0", "strobe: cam0 -> cam1",
                 "disk speed"):
        assert f"PASS  {step}:" in out
    assert "100 frames for 100 pulses" in out
    assert "all 5 checks passed" in out
    assert not list((tmp_path / "recordings").iterdir())  # the disk test file is gone


@pytest.mark.slow
def test_doctor_names_a_secondary_that_misses_triggers(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rig = doctor_rig(tmp_path, cam1_faults={"skip_trigger_rate": 0.05})
    code = main(["doctor", "--config", str(rig), "--pulses", "100", "--disk-mb", "2"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "PASS  trigger: Pi -> cam0:" in out  # the Pi -> primary wire is fine
    fail = next(line for line in out.splitlines() if line.startswith("FAIL"))
    assert fail.startswith("FAIL  strobe: cam0 -> cam1: cam1:")
    assert "dropped" in fail
    assert "skip_trigger_rate" in out and "pull-up" in out  # what to check
    assert "1 of 5 checks failed: strobe: cam0 -> cam1" in out


def test_disk_check_passes_a_tiny_rate_and_fails_an_impossible_one_with_numbers(tmp_path: Path) -> None:
    ok = check_disk(tmp_path / "rec", required_mb_s=0.001, test_mb=2)
    assert ok.ok, ok.detail
    assert "MB/s" in ok.detail and "2 MB written" in ok.detail
    bad = check_disk(tmp_path / "rec", required_mb_s=1e9, test_mb=2)
    assert bad.ok is False
    assert "1000000000.0 MB/s" in bad.detail and "short" in bad.detail
    assert "NVMe" in bad.check
    assert list((tmp_path / "rec").iterdir()) == []


def test_recording_rate_is_the_raw_rate_of_every_camera() -> None:
    rig = load_rig(ROOT / "hardware/rigs/blackfly_pair.yaml")
    assert recording_rate_mb_s(rig) == pytest.approx(2 * 1440 * 1080 * 226 / 1e6)  # 703 MB/s


def test_analyse_camera_reports_missing_flagged_and_late_frames() -> None:
    period = 10_000_000

    def row(n: int, **kw: str) -> dict[str, str]:
        base = {"trigger_index": str(n), "t_camera_ns": str(n * period + 5), "t_pi_ns": str(n * period),
                "dropped": "0", "incomplete": "0", "timing_flag": "0", "lost_in_transport": "0"}
        return {**base, **kw}

    rows = [row(n) for n in range(20)]
    problems, summary = analyse_camera(rows, 20, period)
    assert problems == [] and summary.startswith("20 frames for 20 pulses")
    rows[3] = row(3, t_camera_ns=str(3 * period + period // 2), timing_flag="1")
    problems, _ = analyse_camera(rows[:-1], 20, period)
    assert any("no row for 1 pulses" in p for p in problems)
    assert any("timing_flag" in p for p in problems)
    assert any("off their pulses' times" in p for p in problems)


def test_doctor_without_pyspin_fails_the_first_step_and_skips_the_wiring(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PySpin", None)  # import PySpin fails, as on a host without it
    rig = with_overrides(load_rig(ROOT / "hardware/rigs/blackfly_pair.yaml"),
                         recording=RecordingConfig(folder=str(tmp_path), codec="raw"))
    results = run_doctor(rig, DoctorOptions(disk_test_mb=1))
    assert [(r.name, r.status) for r in results] == [
        ("cameras found", "FAIL"), ("settings applied", "SKIP"), ("trigger: Pi -> left", "SKIP"),
        ("strobe: left -> right", "SKIP"), ("disk speed", results[-1].status)]
    assert "PySpin" in results[0].detail and "not installed" in results[0].detail
    assert "703.0 MB/s" in results[-1].detail


def test_cameras_without_pyspin_says_so_and_exits_2(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "PySpin", None)
    assert main(["cameras"]) == 2
    err = capsys.readouterr().err
    assert "PySpin" in err and "not installed" in err and "Spinnaker SDK" in err
    assert "--sim" in err


def test_cameras_sim_lists_the_simulated_rig(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cameras", "--sim"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["SERIAL", "MODEL", "FIRMWARE", "INTERFACE"]
    assert [line.split()[0] for line in out[1:]] == ["SIM0", "SIM1"]


def test_doctor_and_cameras_with_a_fake_pyspin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    fake_pyspin = pytest.importorskip("tests.acquisition.fake_pyspin")
    spin = fake_pyspin.FakePySpin()
    spin.add_camera("21290846")  # the rig's primary; its secondary (21290847) is not plugged in
    monkeypatch.setitem(sys.modules, "PySpin", spin)
    assert main(["cameras"]) == 0
    assert "21290846" in capsys.readouterr().out
    rig = with_overrides(load_rig(ROOT / "hardware/rigs/blackfly_pair.yaml"),
                         recording=RecordingConfig(folder=str(tmp_path), codec="raw"))
    found = run_doctor(rig, DoctorOptions(disk_test_mb=1))[0]
    assert found.status == "FAIL"
    assert found.detail.startswith("not connected: right (serial 21290847); connected: 21290846")
    spin.add_camera("21290847")
    assert check_cameras_found(rig).ok
    settings = check_settings(rig)  # the PySpin driver opens and configures both, then closes
    assert settings.ok, settings.detail
