"""Inverted (white-on-black) boards, caliscope's board files, the found-nowhere error, and the
report's RMSE (synthetic images, no shared data)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rigstream.app.calibrate_cmd import format_report
from rigstream.inference.boards import Board, BoardError, board_from_dict, detect, load_board, parse_board
from rigstream.inference.calibrate import CalibrateError, CameraDetections, calibrate, detect_sources
from tests.inference.test_calibrate import BOARD, PX_PER_MM, _board_poses, _render, _truth

# ---------------------------------------------------------------------- detection


def _flat_image(board: Board) -> np.ndarray:
    """The board face-on with a white margin, as printed (positive), slightly blurred like a photo."""
    px = 20
    img = board.opencv_board().generateImage((board.squares_x * px + 80, board.squares_y * px + 80),
                                             marginSize=40)
    return cv2.GaussianBlur(img, (3, 3), 0.6)


def test_inverted_image_is_found_when_the_board_says_inverted() -> None:
    plain = Board("charuco", 7, 5, 30.0, 22.0, 4, 50)
    negative = Board("charuco", 7, 5, 30.0, 22.0, 4, 50, inverted=True)
    image = _flat_image(plain)
    positive = detect(plain, image)
    assert positive is not None and len(positive) == plain.n_corners and not positive.inverted
    found = detect(negative, 255 - image, both_polarities=False)
    assert found is not None and found.inverted
    np.testing.assert_array_equal(found.ids, positive.ids)
    np.testing.assert_allclose(found.image_points_px, positive.image_points_px, atol=0.05)


def test_inverted_image_is_found_through_the_fallback_and_recorded() -> None:
    plain = Board("charuco", 7, 5, 30.0, 22.0, 4, 50)
    negative = 255 - _flat_image(plain)
    # ArUco markers decode dark on light only: without the retry a negative print is not found.
    assert detect(plain, negative, both_polarities=False) is None
    found = detect(plain, negative)
    assert found is not None and found.inverted and len(found) == plain.n_corners
    # And the other way round: a board marked inverted that was printed positive.
    back = detect(Board("charuco", 7, 5, 30.0, 22.0, 4, 50, inverted=True), _flat_image(plain))
    assert back is not None and not back.inverted


def test_inline_inverted_flag_and_flat_file_round_trip() -> None:
    board = parse_board("charuco:5x7:30:22:4x4_50:inverted")
    assert board == Board("charuco", 5, 7, 30.0, 22.0, 4, 50, inverted=True)
    assert parse_board("charuco:5x7:30:22:inverted") == board
    assert parse_board("checkerboard:9x6:30:inverted").inverted
    assert not parse_board("charuco:5x7:30:22").inverted
    assert board.describe() == "5x7 ChArUco (DICT_4X4_50, inverted)"
    assert board.to_dict()["inverted"] is True
    assert board_from_dict(board.to_dict()) == board
    with pytest.raises(BoardError, match=r"\[:inverted\]"):
        parse_board("charuco:5x7:30:22:upside")


# ---------------------------------------------------------------------- caliscope's files

CALISCOPE_CONFIG = """\
creation_date = 2024-03-01T10:12:00
camera_count = 3
save_tracked_points_video = true
fps_sync_stream_processing = 100

[charuco]
columns = 4
rows = 5
board_height = 11.0
board_width = 8.5
dictionary = "DICT_4X4_50"
units = "inch"
aruco_scale = 0.75
square_size_overide_cm = 5.4
inverted = true

[cam_0]
port = 0
size = [1280, 720]
"""


def test_caliscope_config_loads_in_mm(tmp_path: Path) -> None:
    p = tmp_path / "config.toml"
    p.write_text(CALISCOPE_CONFIG)
    board = load_board(p)
    # 5.4 cm squares -> 54 mm; markers 0.75 of a square; columns/rows are squares across/down.
    assert board == Board("charuco", 4, 5, 54.0, 40.5, 4, 50, None, True)
    assert parse_board(str(p)) == board
    # Without the measured square size caliscope fits the largest square on the page:
    # min(11 in / 5 rows, 8.5 in / 4 columns) = 2.125 in = 53.975 mm.
    p.write_text(CALISCOPE_CONFIG.replace("square_size_overide_cm = 5.4\n", "")
                 .replace("inverted = true", "inverted = false"))
    board = load_board(p)
    assert board.square_length == pytest.approx(53.975)
    assert board.marker_length == pytest.approx(0.75 * 53.975)
    assert not board.inverted


def test_caliscope_flat_target_file(tmp_path: Path) -> None:
    # Newer caliscope: calibration/targets/intrinsic_charuco.toml holds the same keys at the top.
    p = tmp_path / "intrinsic_charuco.toml"
    p.write_text('columns = 7\nrows = 5\nboard_height = 20\nboard_width = 28\ndictionary = "DICT_5X5_100"\n'
                 'units = "cm"\naruco_scale = 0.7\nsquare_size_overide_cm = 3.0\ninverted = false\n'
                 "legacy_pattern = false\n")
    assert load_board(p) == Board("charuco", 7, 5, 30.0, 21.0, 5, 100, False, False)


@pytest.mark.parametrize(("old", "new", "key"), [
    ('dictionary = "DICT_4X4_50"', 'dictionary = "DICT_APRILTAG_36h11"', "dictionary"),
    ("columns = 4", 'columns = "4"', "columns"),
    ("rows = 5", "rows = 2", "rows"),
    ("aruco_scale = 0.75", "aruco_scale = 1.2", "aruco_scale"),
    ("square_size_overide_cm = 5.4", "square_size_overide_cm = -5.4", "square_size_overide_cm"),
    ("square_size_overide_cm = 5.4", 'square_size_overide_cm = "5.4cm"', "square_size_overide_cm"),
    ("inverted = true", 'inverted = "yes"', "inverted"),
    ("columns = 4", "columns = 40", "dictionary"),  # 100 squares need 100 markers, DICT_4X4_50 has 50
])
def test_bad_caliscope_file_names_the_file_and_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    p = tmp_path / "config.toml"
    assert old in CALISCOPE_CONFIG
    p.write_text(CALISCOPE_CONFIG.replace(old, new))
    with pytest.raises(BoardError) as err:
        load_board(p)
    message = str(err.value)
    assert f"{p} [charuco].{key}:" in message
    assert "\n" not in message


def test_caliscope_without_any_size_names_the_missing_key(tmp_path: Path) -> None:
    p = tmp_path / "config.toml"
    p.write_text(CALISCOPE_CONFIG.replace("square_size_overide_cm = 5.4\n", "")
                 .replace("board_width = 8.5\n", ""))
    with pytest.raises(BoardError, match=r"\[charuco\]: missing board_width"):
        load_board(p)


# ---------------------------------------------------------------------- calibration


def test_found_nowhere_mentions_inversion_and_size() -> None:
    board = Board("charuco", 7, 5, 30.0, 22.0, 5, 50)
    cams = {n: CameraDetections(n, f"/data/{n}", 640, 480, 12, {}, both_polarities=True) for n in "ab"}
    with pytest.raises(CalibrateError) as err:
        calibrate(board, cams)
    message = str(err.value)
    assert message.startswith("board 7x5 ChArUco (DICT_5X5_50) found in 0 of 12 images of camera a")
    assert "7x5 squares of 30 mm, markers 22 mm, DICT_5X5_50" in message
    assert "searched as given and inverted" in message
    assert "\n" not in message
    cams = {n: CameraDetections(n, f"/data/{n}", 640, 480, 12, {}, both_polarities=False) for n in "ab"}
    with pytest.raises(CalibrateError, match=r"not inverted .* needs the inverted flag"):
        calibrate(board, cams)
    checker = parse_board("checkerboard:9x6:30")
    with pytest.raises(CalibrateError,
                       match=r"9x6 inner corners \(10x7 squares\) of 30 mm; .*either polarity"):
        calibrate(checker, cams)


@pytest.fixture(scope="module")
def negative_rig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folders ``a``, ``b``, ``c`` of 8 rendered views each of the board printed in negative."""
    root = tmp_path_factory.mktemp("negative")
    s = PX_PER_MM
    board_image = BOARD.opencv_board().generateImage(
        (int(BOARD.squares_x * BOARD.square_length * s), int(BOARD.squares_y * BOARD.square_length * s)))
    for cam in _truth().cameras:
        (root / cam.name).mkdir()
        for k, (rot, t) in enumerate(_board_poses(8, seed=3)):
            cv2.imwrite(str(root / cam.name / f"{cam.name}-{k}.png"), 255 - _render(cam, board_image, rot, t))
    return root


def test_negative_print_calibrates_and_the_report_has_rmse(negative_rig: Path) -> None:
    sources = {n: str(negative_rig / n) for n in "abc"}
    dets = detect_sources(BOARD, sources, workers=2)  # not marked inverted: found through the retry
    assert all(len(d.frames) >= 7 and d.n_inverted == len(d.frames) for d in dets.values())
    result = calibrate(BOARD, dets, model="k1")
    report = result.report
    for name in "abc":
        cam, res = report["cameras"][name], result.residuals_px[name]
        assert cam["frames_found_inverted"] == cam["frames_detected"] == len(dets[name].frames)
        assert len(res) == cam["corners_used"] + cam["corners_dropped"]
        assert cam["mean_px"] == pytest.approx(float(np.mean(res)), abs=1e-4)
        assert cam["median_px"] == pytest.approx(float(np.median(res)), abs=1e-4)
        assert cam["rmse_px"] == pytest.approx(float(np.sqrt(np.mean(res ** 2))), abs=1e-4)
        assert cam["mean_px"] <= cam["rmse_px"] < 0.5
    everything = np.concatenate(list(result.residuals_px.values()))
    assert report["rmse_px"] == pytest.approx(float(np.sqrt(np.mean(everything ** 2))), abs=1e-4)
    text = format_report(report)
    assert "rmse px" in text.splitlines()[1] and "3D px" in text.splitlines()[1]
    assert f"{report['cameras']['b']['rmse_px']:.3f}" in text.splitlines()[3]
    assert "views found inverted (white on black): a 8 of 8" in text
    assert "not marked inverted" in text
    assert f"rmse {report['rmse_px']:.3f} px" in text
