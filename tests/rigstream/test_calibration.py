"""The calibration file every 3D step reads: aniposelib's TOML layout, both ways."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rigstream.acquisition.sim_world import ring_of_cameras
from rigstream.app.cli import main
from rigstream.calibration import CalibratedCamera, Calibration, CalibrationError
from rigstream.config import load_rig
from tests.conftest import SHARED_DATA

# As aniposelib writes it (the `toml` package: spaces inside brackets, trailing commas).
ANIPOSELIB_TEXT = """\
[cam_0]
name = "back"
size = [ 1280, 1024,]
matrix = [ [ 765.99, 0.0, 639.5,], [ 0.0, 765.99, 511.5,], [ 0.0, 0.0, 1.0,],]
distortions = [ -0.286, 0.0, 0.0, 0.0, 0.0,]
rotation = [ -0.0647, 0.0409, 0.0082,]
translation = [ -18.58, -30.63, -110.83,]

[cam_1]
name = "mid"
size = [ 1280, 1024,]
matrix = [ [ 759.5, 0.0, 639.5,], [ 0.0, 759.5, 511.5,], [ 0.0, 0.0, 1.0,],]
distortions = [ -0.304, 0.0, 0.0, 0.0, 0.0,]
rotation = [ -0.5457, -1.3767, -2.6415,]
translation = [ -102.71, -313.20, 67.15,]

[metadata]
"""


def test_reads_aniposelib_layout() -> None:
    cal = Calibration.loads(ANIPOSELIB_TEXT, "mouse.toml")
    assert cal.names == ["back", "mid"]
    back = cal.camera("back")
    assert (back.width, back.height) == (1280, 1024)
    assert back.matrix[0, 0] == 765.99 and back.dist[0] == -0.286
    np.testing.assert_array_equal(back.rvec, [-0.0647, 0.0409, 0.0082])
    np.testing.assert_array_equal(back.extrinsics[:, 3], back.tvec)


def test_round_trip_is_exact(tmp_path: Path) -> None:
    cams = ring_of_cameras(["a", "b", "c"], 1440, 1080)
    meta = {"made_by": "test", "error_px": 0.2712345678901234, "per_camera": {"a": {"frames": 12}},
            "cameras_not_placed": []}
    path = Calibration(tuple(cams), meta).save(tmp_path / "calibration.toml")
    back = Calibration.load(path)
    assert back.names == ["a", "b", "c"] and back.metadata == meta
    for a, b in zip(cams, back.cameras, strict=True):
        for field in ("matrix", "dist", "rvec", "tvec"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_cameras_are_ordered_by_index_not_text() -> None:
    text = "\n".join(
        f'[cam_{i}]\nname = "c{i}"\nsize = [64, 48]\nmatrix = [[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]\n'
        f"distortions = [0, 0, 0, 0, 0]\nrotation = [0, 0, 0]\ntranslation = [0, 0, {i + 1}]\n"
        for i in (10, 2, 1)
    )
    assert Calibration.loads(text).names == ["c1", "c2", "c10"]


def test_projection_and_undistortion_agree_with_opencv() -> None:
    cam = CalibratedCamera("x", 1280, 1024, [[900.0, 0, 650], [0, 905, 500], [0, 0, 1]],
                           [-0.28, 0.09, 0.001, -0.0005, -0.01], [0.1, -0.2, 0.05], [10.0, -20.0, 600.0])
    pts = np.random.default_rng(0).uniform([-150, -120, -50], [150, 120, 50], (200, 3))
    px = cam.project(pts)
    ref = cv2.projectPoints(pts, cam.rvec, cam.tvec, cam.matrix, cam.dist)[0].reshape(-1, 2)
    np.testing.assert_allclose(px, ref, atol=1e-9)
    norm = cam.undistort(px)
    cam_pts = pts @ cam.rotation.T + cam.tvec
    np.testing.assert_allclose(norm, cam_pts[:, :2] / cam_pts[:, 2:], atol=1e-10)
    assert np.isnan(cam.undistort(np.array([[np.nan, 3.0]]))).all()
    behind = -cam.rotation.T @ (cam.tvec + np.array([0, 0, 100]))  # 100 mm behind the camera
    assert np.isnan(cam.project(behind[None])).all()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[cam_0\nname = 1", "not valid TOML"),
        ("[metadata]\n", "no [cam_N] tables"),
        ('[cam_0]\nname = "a"\nsize = [64, 48]\n', "missing matrix, distortions, rotation, translation"),
        (ANIPOSELIB_TEXT.replace(" [ 0.0, 0.0, 1.0,],]", "]", 1),
         "matrix: expected finite values of shape (3, 3)"),
        (ANIPOSELIB_TEXT.replace("-0.286, 0.0, 0.0, 0.0, 0.0,", "-0.286, 0.0, 0.0, 0.0, 0.0, 0.0,", 1),
         "distortions: expected 4, 5, 8, 12, 14 coefficients (OpenCV's model), got 6"),
        (ANIPOSELIB_TEXT.replace('name = "mid"', 'name = "back"'), "camera names repeated: back"),
        (ANIPOSELIB_TEXT.replace("size = [ 1280, 1024,]", "size = [ 1280,]", 1),
         "size: expected [width, height]"),
        (ANIPOSELIB_TEXT.replace('name = "back"', 'name = "back"\nfisheye = true'), "fisheye cameras"),
    ],
)
def test_bad_files_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(CalibrationError) as err:
        Calibration.loads(text, "rig/calibration.toml")
    assert "rig/calibration.toml" in str(err.value) and message in str(err.value)


def test_subset_and_rig_cameras_name_what_is_missing_or_wrong() -> None:
    cal = Calibration.loads(ANIPOSELIB_TEXT, "c.toml")
    assert cal.subset(["mid", "back"]).names == ["mid", "back"]
    with pytest.raises(CalibrationError, match=r"no camera named 'top', 'side' \(cameras: back, mid\)"):
        cal.subset(["top", "back", "side"])
    rig = load_rig()  # cam0, cam1 at 640x480
    with pytest.raises(CalibrationError, match="no camera named 'cam0'"):
        cal.for_rig_cameras(rig.cameras)
    ring = Calibration(tuple(ring_of_cameras(["cam0", "cam1"], 1280, 960)))
    with pytest.raises(CalibrationError, match="cam0 is 640x480 in the rig but 1280x960 in the calibration"):
        ring.for_rig_cameras(rig.cameras)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="cannot read calibration file"):
        Calibration.load(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CalibrationError, match="not a text"):
        Calibration.load(tmp_path / "bin.toml")


def test_shipped_sim_calibration_places_the_demo_cameras() -> None:
    from rigstream.acquisition.sim_camera import rig_calibration, ring_calibration

    rig = load_rig()
    assert rig.calibration is not None and Path(rig.calibration).is_file()
    shipped, ring = rig_calibration(rig), ring_calibration(rig)
    for a, b in zip(shipped.cameras, ring.cameras, strict=True):
        np.testing.assert_allclose(a.matrix, b.matrix, rtol=1e-12)
        np.testing.assert_allclose(a.tvec, b.tvec, atol=1e-9)


def test_rig_with_a_calibration_that_does_not_fit_is_refused_before_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cal = Calibration(tuple(ring_of_cameras(["cam0", "camX"], 640, 480)))
    cal.save(tmp_path / "cal.toml")
    rig_text = (Path(__file__).resolve().parents[2] / "hardware/rigs/sim.yaml").read_text()
    rig_file = tmp_path / "rig.yaml"
    rig_file.write_text(rig_text.replace("calibration: sim_calibration.toml", "calibration: cal.toml"))
    assert main(["check", "--config", str(rig_file)]) == 2
    assert "no camera named 'cam1'" in capsys.readouterr().err
    out = tmp_path / "s"
    assert main(["demo", "--config", str(rig_file), "--seconds", "1", "--out", str(out)]) == 2
    assert "no camera named 'cam1'" in capsys.readouterr().err
    assert not (out / "frames.csv").exists()


@pytest.mark.skipif(not (SHARED_DATA / "multicam_mouse").is_dir(), reason="shared data absent")
def test_reads_a_real_aniposelib_file() -> None:
    cal = Calibration.load(SHARED_DATA / "multicam_mouse" / "calibration_recalibrated.toml")
    assert cal.names == ["back", "mid", "side", "top"]
    assert all((c.width, c.height) == (1280, 1024) for c in cal.cameras)
