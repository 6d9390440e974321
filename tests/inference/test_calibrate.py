"""Multi-camera calibration on synthetic ChArUco views (fast, no shared data), its error cases,
and on the shared recordings where they are present."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from rigstream.app.cli import main
from rigstream.app.commands import camera_pairs
from rigstream.calibration import CalibratedCamera, Calibration
from rigstream.config import InputError
from rigstream.inference.boards import Board, load_board, parse_board
from rigstream.inference.calibrate import (
    CalibrateError,
    board_error,
    calibrate,
    detect_sources,
)
from tests.conftest import SHARED_DATA

BOARD = Board("charuco", 7, 5, 30.0, 22.0, 4, 50)
WIDTH, HEIGHT = 640, 480
FOCAL_PX = 600.0
PX_PER_MM = 5.0


def _look_at(center_mm: np.ndarray, target_mm: np.ndarray) -> CalibratedCamera:
    z = target_mm - center_mm
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    rot = np.stack([x, np.cross(z, x), z])
    matrix = np.array([[FOCAL_PX, 0, (WIDTH - 1) / 2], [0, FOCAL_PX, (HEIGHT - 1) / 2], [0, 0, 1]])
    return matrix, cv2.Rodrigues(rot)[0].ravel(), -rot @ center_mm


def _truth() -> Calibration:
    target = np.array([0.0, 0.0, 500.0])
    cams = []
    for name, center in (("a", [0.0, 0.0, 0.0]), ("b", [180.0, -20.0, 40.0]), ("c", [-160.0, 30.0, 60.0])):
        matrix, rvec, tvec = _look_at(np.array(center), target)
        cams.append(CalibratedCamera(name, WIDTH, HEIGHT, matrix, np.zeros(5), rvec, tvec))
    return Calibration(tuple(cams))


def _render(cam: CalibratedCamera, board_image: np.ndarray, rot: np.ndarray, t_mm: np.ndarray) -> np.ndarray:
    """The board (pose ``rot``, ``t_mm``: board -> world) seen by ``cam``, by one homography."""
    # Board units -> board image pixels (pixel centres at integers); corner id 0 is one square in.
    s = PX_PER_MM
    offset_px = BOARD.square_length * s - 0.5
    to_image = np.array([[s, 0, offset_px], [0, s, offset_px], [0, 0, 1]])
    r_cam = cam.rotation @ rot
    t_cam = cam.rotation @ t_mm + cam.tvec
    plane_to_px = cam.matrix @ np.column_stack([r_cam[:, 0], r_cam[:, 1], t_cam])
    h = plane_to_px @ np.linalg.inv(to_image)
    img = cv2.warpPerspective(board_image, h, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderValue=160)
    return cv2.GaussianBlur(img, (3, 3), 0.6)


def _board_poses(n: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    centre = np.array([(BOARD.corners_x - 1) / 2, (BOARD.corners_y - 1) / 2, 0.0]) * BOARD.square_length
    poses = []
    for _ in range(n):
        rot = cv2.Rodrigues(np.deg2rad(rng.uniform([-35, -35, -20], [35, 35, 20])))[0]
        where = np.array([0.0, 0.0, 500.0]) + rng.uniform(-40, 40, 3)
        poses.append((rot, where - rot @ centre))
    return poses


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Calibration]:
    """Folders ``a``, ``b``, ``c`` of 14 rendered views each (frame keys 0..13)."""
    root = tmp_path_factory.mktemp("charuco")
    truth = _truth()
    s = PX_PER_MM
    board_image = BOARD.opencv_board().generateImage(
        (int(BOARD.squares_x * BOARD.square_length * s), int(BOARD.squares_y * BOARD.square_length * s)))
    for cam in truth.cameras:
        (root / cam.name).mkdir()
        for k, (rot, t) in enumerate(_board_poses(14)):
            cv2.imwrite(str(root / cam.name / f"{cam.name}-{k}.png"), _render(cam, board_image, rot, t))
    return root, truth


def _sources(root: Path, names: str = "abc") -> dict[str, str]:
    return {n: str(root / n) for n in names}


def test_synthetic_rig_recovers_cameras(synthetic: tuple[Path, Calibration]) -> None:
    root, truth = synthetic
    dets = detect_sources(BOARD, _sources(root), workers=2)
    assert all(len(d.frames) >= 13 for d in dets.values())
    result = calibrate(BOARD, dets)
    cal, report = result.calibration, result.report
    assert cal.names == ["a", "b", "c"]
    assert report["not_placed"] == {}
    # Camera a is the world: the truth's world is camera a's frame too.
    np.testing.assert_allclose(cal.camera("a").rvec, 0, atol=1e-12)
    np.testing.assert_allclose(cal.camera("a").tvec, 0, atol=1e-12)
    for name in "abc":
        mine, true = cal.camera(name), truth.camera(name)
        assert mine.matrix[0, 0] == pytest.approx(FOCAL_PX, rel=0.01)
        assert np.linalg.norm(mine.center_mm - true.center_mm) < 3.0  # mm, cameras ~500 mm from the board
        angle = np.rad2deg(np.arccos(np.clip((np.trace(mine.rotation.T @ true.rotation) - 1) / 2, -1, 1)))
        assert angle < 0.3
        cam = report["cameras"][name]
        assert cam["frames_used"] >= 12 and cam["corners_used"] >= 12 * 20
        assert cam["mean_px"] < 0.3 and cam["triangulated_mean_px"] < 0.3
    assert report["mean_px"] < 0.3
    # The file round-trips with the report in its metadata.
    back = Calibration.loads(cal.dumps())
    assert back.metadata["report"]["cameras"]["b"]["frames_used"] == report["cameras"]["b"]["frames_used"]
    # The truth scores well on the same detections.
    assert board_error(truth, dets, BOARD).point_median_px < 0.3


def test_camera_without_shared_views_is_reported_not_placed(synthetic: tuple[Path, Calibration],
                                                            tmp_path: Path) -> None:
    root, _ = synthetic
    shutil.copytree(root / "a", tmp_path / "a")
    shutil.copytree(root / "b", tmp_path / "b")
    (tmp_path / "c").mkdir()
    for f in sorted((root / "c").iterdir()):  # the same views under other frame numbers
        shutil.copy(f, tmp_path / "c" / f"c-{100 + int(f.stem.split('-')[1])}.png")
    result = calibrate(BOARD, detect_sources(BOARD, _sources(tmp_path), workers=1), model="k1")
    assert result.calibration.names == ["a", "b"]
    assert result.report["not_placed"] == {"c": "could not be placed: no views shared with a, b"}


def test_no_shared_views_at_all_is_an_error(synthetic: tuple[Path, Calibration], tmp_path: Path) -> None:
    root, _ = synthetic
    shutil.copytree(root / "a", tmp_path / "a")
    (tmp_path / "b").mkdir()
    for f in sorted((root / "b").iterdir()):
        shutil.copy(f, tmp_path / "b" / f"b-{100 + int(f.stem.split('-')[1])}.png")
    with pytest.raises(CalibrateError, match="no two cameras saw the board in the same frame"):
        calibrate(BOARD, detect_sources(BOARD, _sources(tmp_path, "ab"), workers=1), model="k1")


def test_wrong_board_says_found_in_zero_images(synthetic: tuple[Path, Calibration]) -> None:
    root, _ = synthetic
    wrong = Board("charuco", 7, 5, 30.0, 22.0, 5, 50)  # 5x5 markers: none decode
    with pytest.raises(CalibrateError, match=r"board 7x5 ChArUco \(DICT_5X5_50\) found in 0 of 14 images of "
                                             r"camera a: check the board definition"):
        calibrate(wrong, detect_sources(wrong, _sources(root, "a"), workers=1))


def test_too_few_views_for_intrinsics(synthetic: tuple[Path, Calibration], tmp_path: Path) -> None:
    root, _ = synthetic
    shutil.copytree(root / "a", tmp_path / "a")
    (tmp_path / "b").mkdir()
    for k in (0, 1):
        shutil.copy(root / "b" / f"b-{k}.png", tmp_path / "b")
    with pytest.raises(CalibrateError, match=r"camera b: board seen well .* in 2 of 2 images; intrinsics"):
        calibrate(BOARD, detect_sources(BOARD, _sources(tmp_path, "ab"), workers=1))


def test_unreadable_sources(tmp_path: Path) -> None:
    with pytest.raises(CalibrateError, match="no such folder or video"):
        detect_sources(BOARD, {"a": str(tmp_path / "missing")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        detect_sources(BOARD, {"a": str(tmp_path / "empty")})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x-1.jpg").write_text("not a jpeg")
    with pytest.raises(CalibrateError, match=r"camera a: .*cannot read image"):
        detect_sources(BOARD, {"a": str(tmp_path / "bad")}, workers=1)
    (tmp_path / "broken.mp4").write_text("not a video")
    with pytest.raises(InputError, match=r"cannot open video|no frames could be decoded"):
        detect_sources(BOARD, {"a": str(tmp_path / "broken.mp4")}, workers=1)


def test_camera_source_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    got = camera_pairs(["back=imgs/back", "mid = m.mp4"], "SOURCE", "")
    assert got == {"back": "imgs/back", "mid": "m.mp4"}
    for bad in (["back"], ["=x"], ["back="], ["a=x", "a=y"]):
        with pytest.raises(InputError, match=r"expected CAM=SOURCE|given twice"):
            camera_pairs(bad, "SOURCE", "back=calib/back")
    assert main(["calibrate", "back", "--board", "checkerboard:9x6:30", "--out", "x.toml"]) == 2
    assert "expected CAM=SOURCE" in capsys.readouterr().err


def test_video_source(synthetic: tuple[Path, Calibration], tmp_path: Path) -> None:
    root, _ = synthetic
    video = tmp_path / "a.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (WIDTH, HEIGHT), False)
    for k in range(10):
        writer.write(cv2.imread(str(root / "a" / f"a-{k}.png"), cv2.IMREAD_GRAYSCALE))
    writer.release()
    dets = detect_sources(BOARD, {"a": str(video)}, every=2, workers=1)
    assert dets["a"].n_images == 5
    assert sorted(dets["a"].frames) == [0, 2, 4, 6, 8]


def test_cli(synthetic: tuple[Path, Calibration], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = synthetic
    out = tmp_path / "calibration.toml"
    assert main(["calibrate", f"a={root / 'a'}", f"b={root / 'b'}", "--board", "charuco:7x5:30:22:4x4_50",
                 "--out", str(out), "--model", "k1"]) == 0
    cal = Calibration.load(out)
    assert cal.names == ["a", "b"]
    report = json.loads((tmp_path / "calibration.report.json").read_text())
    assert report["model"] == "k1" and set(report["cameras"]) == {"a", "b"}
    printed = capsys.readouterr().out
    assert "camera" in printed and "mean px" in printed and "wrote" in printed
    assert main(["calibrate", f"a={root / 'a'}", "--board", "charuco:7x5:30:22:4x4_50", "--out", str(out),
                 "--model", "fisheye"]) == 2
    assert "--model: expected one of auto" in capsys.readouterr().err


def test_an_output_that_cannot_be_written_fails_before_the_detection(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The calibration and its report are written after minutes of detection: a report folder
    that is missing, or an --out that is a folder, fails at once with one line."""
    from rigstream.app import calibrate_cmd

    def no_detection(*args: object, **kwargs: object) -> None:
        raise AssertionError("detection started before the outputs were checked")

    monkeypatch.setattr(calibrate_cmd, "detect_sources", no_detection)
    (tmp_path / "a").mkdir()
    args = ["calibrate", f"a={tmp_path / 'a'}", "--board", "charuco:7x5:30:22:4x4_50"]
    report = tmp_path / "gone" / "r.json"
    assert main([*args, "--out", str(tmp_path / "c.toml"), "--report", str(report)]) == 2
    assert capsys.readouterr().err == f"rigstream: --report {report}: folder {report.parent} does not exist\n"
    folder = tmp_path / "a"
    assert main([*args, "--out", str(folder)]) == 2
    assert capsys.readouterr().err == f"rigstream: --out {folder}: is a folder (expected a file name)\n"


# ---------------------------------------------------------------------- shared recordings

STEREO = SHARED_DATA / "stereo_checkerboard"
MOUSE = SHARED_DATA / "multicam_mouse"


@pytest.mark.skipif(not STEREO.is_dir(), reason="shared data absent")
def test_stereo_checkerboard_matches_bouguet(tmp_path: Path) -> None:
    """Intrinsics within 3 sigma of the Bouguet toolbox's (fc, cc, kc[:2]) for both cameras."""
    io = pytest.importorskip("scipy.io")
    for side in ("left", "right"):
        (tmp_path / side).mkdir()
        for f in STEREO.glob(f"{side}*.jpg"):
            (tmp_path / side / f.name).symlink_to(f)
    board = parse_board("checkerboard:9x6:30")
    dets = detect_sources(board, _sources(tmp_path, ["left", "right"]))
    result = calibrate(board, dets, model="k1k2")
    for cam in result.calibration.cameras:
        ref = io.loadmat(str(STEREO / f"Calib_Results_{cam.name}.mat"))
        fc, cc, kc = ref["fc"].ravel(), ref["cc"].ravel() - 1, ref["kc"].ravel()  # Bouguet: 1-based pixels
        fc_e, cc_e, kc_e = ref["fc_error"].ravel(), ref["cc_error"].ravel(), ref["kc_error"].ravel()
        ours = np.r_[cam.matrix[0, 0], cam.matrix[1, 1], cam.matrix[0, 2], cam.matrix[1, 2], cam.dist[:2]]
        np.testing.assert_array_less(np.abs(ours - np.r_[fc, cc, kc[:2]]), 3 * np.r_[fc_e, cc_e, kc_e[:2]])
    assert result.report["mean_px"] < 0.5
    assert result.report["triangulated"]["point_median_px"] < 0.3


@pytest.mark.slow
@pytest.mark.skipif(not MOUSE.is_dir(), reason="shared data absent")
def test_multicam_mouse_beats_the_recalibrated_file() -> None:
    board = load_board(MOUSE / "board.toml")
    names = ["back", "mid", "side", "top"]
    dets = detect_sources(board, {n: str(MOUSE / n / "calibration_images") for n in names})
    result = calibrate(board, dets)
    assert result.calibration.names == names
    assert result.report["mean_px"] < 0.4
    ours = board_error(result.calibration, dets, board)
    theirs = board_error(Calibration.load(MOUSE / "calibration_recalibrated.toml"), dets, board)
    assert ours.point_median_px < theirs.point_median_px
    assert ours.point_median_px < 0.2
