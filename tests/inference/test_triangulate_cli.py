"""`rigstream triangulate`: one 2D file per camera in, anipose's 3D CSV out; bad input is one
clear line and exit status 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rigstream.acquisition.sim_world import ring_of_cameras
from rigstream.app.cli import main
from rigstream.calibration import Calibration
from rigstream.inference.anipose_csv import read_points3d_csv

KP = ["snout", "ear", "tail"]
CAMS = ["a", "b", "c", "d"]


def write_dlc_csv(path: Path, xy: np.ndarray, score: np.ndarray, keypoints: list[str]) -> Path:
    """(F, K, 2) px and (F, K) likelihood as DeepLabCut writes predictions."""
    cols = pd.MultiIndex.from_tuples(
        [("DLC_resnet50", k, c) for k in keypoints for c in ("x", "y", "likelihood")],
        names=["scorer", "bodyparts", "coords"])
    data = np.concatenate([xy, score[..., None]], axis=-1).reshape(len(xy), -1)
    pd.DataFrame(data, columns=cols).to_csv(path)
    return path


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, np.ndarray, dict[str, np.ndarray]]:
    cal = Calibration(tuple(ring_of_cameras(CAMS, 1280, 1024)))
    cal_path = cal.save(tmp_path / "calibration.toml")
    rng = np.random.default_rng(3)
    truth = rng.uniform([-200, -120, 10], [200, 120, 100], (30, len(KP), 3))  # (F, K, 3) mm
    views = {c.name: c.project(truth.reshape(-1, 3)).reshape(30, len(KP), 2) for c in cal.cameras}
    return cal_path, truth, views


def args(out: Path, cal: Path, files: dict[str, Path]) -> list[str]:
    return ["triangulate", "--calibration", str(cal), "--out", str(out),
            *[f"{c}={p}" for c, p in files.items()]]


def test_dlc_files_to_anipose_csv(tmp_path: Path, scene, capsys) -> None:
    cal, truth, views = scene
    files = {c: write_dlc_csv(tmp_path / f"{c}.csv", views[c], np.full((30, 3), 0.9), KP) for c in CAMS}
    out = tmp_path / "points3d.csv"
    assert main(args(out, cal, files)) == 0
    assert "90 of 90 points triangulated" in capsys.readouterr().out
    pts = read_points3d_csv(out)
    assert list(pts.keypoints) == KP and pts.frames.tolist() == list(range(30))
    np.testing.assert_allclose(pts.xyz, truth, atol=1e-3)
    assert (pts.ncams == 4).all() and np.nanmax(pts.error) < 1e-3
    head = out.read_text().splitlines()[0].split(",")
    assert head[:6] == ["snout_x", "snout_y", "snout_z", "snout_error", "snout_ncams", "snout_score"]
    assert head[-1] == "fnum"


def test_keypoints_that_differ_between_cameras(tmp_path: Path, scene, capsys) -> None:
    cal, _, views = scene
    files = {c: write_dlc_csv(tmp_path / f"{c}.csv", views[c], np.full((30, 3), 0.9), KP) for c in CAMS[:3]}
    files["d"] = write_dlc_csv(tmp_path / "d.csv", views["d"], np.full((30, 3), 0.9), ["snout", "ear", "paw"])
    assert main(args(tmp_path / "o.csv", cal, files)) == 2
    err = capsys.readouterr().err
    assert "keypoints differ" in err and "d.csv" in err and "paw" in err and "Traceback" not in err
    assert not (tmp_path / "o.csv").exists()


def test_nan_everywhere(tmp_path: Path, scene, capsys) -> None:
    cal, _, views = scene
    nan = np.full((30, 3), np.nan)
    files = {c: write_dlc_csv(tmp_path / f"{c}.csv", np.full_like(views[c], np.nan), nan, KP) for c in CAMS}
    assert main(args(tmp_path / "o.csv", cal, files)) == 2
    err = capsys.readouterr().err
    assert "nothing to triangulate" in err and "Traceback" not in err


def test_camera_not_in_the_calibration_and_bad_pairs(tmp_path: Path, scene, capsys) -> None:
    cal, _, views = scene
    a = write_dlc_csv(tmp_path / "a.csv", views["a"], np.full((30, 3), 0.9), KP)
    assert main(args(tmp_path / "o.csv", cal, {"a": a, "zz": a})) == 2
    assert "no camera named 'zz' (cameras: a, b, c, d)" in capsys.readouterr().err
    out = str(tmp_path / "o.csv")
    assert main(["triangulate", "--calibration", str(cal), "--out", out, str(a), "b=x"]) == 2
    assert "expected CAM=FILE" in capsys.readouterr().err
    assert main(args(tmp_path / "o.csv", cal, {"a": a})) == 2
    assert "two or more cameras" in capsys.readouterr().err


def test_low_confidence_views_are_not_used(tmp_path: Path, scene) -> None:
    cal, truth, views = scene
    score = {c: np.full((30, 3), 0.9) for c in CAMS}
    noisy = dict(views)
    noisy["a"] = views["a"] + 60.0  # wrong, but the detector said so
    score["a"][:] = 0.1
    files = {c: write_dlc_csv(tmp_path / f"{c}.csv", noisy[c], score[c], KP) for c in CAMS}
    assert main(args(tmp_path / "o.csv", cal, files)) == 0
    pts = read_points3d_csv(tmp_path / "o.csv")
    assert (pts.ncams == 3).all()
    np.testing.assert_allclose(pts.xyz, truth, atol=1e-3)
