"""Tests for rigstream.inference.keypoint_files: DeepLabCut/SLEAP 2D readers, camera alignment and the
anipose 3D points CSV. DeepLabCut files are written here with pandas the way DeepLabCut writes them;
SLEAP analysis files are written with h5py in both of SLEAP's layouts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rigstream.inference.anipose_csv import points3d_columns, read_points3d_csv, write_points3d_csv
from rigstream.inference.keypoint_files import (
    KeypointFileError,
    Keypoints2D,
    align_cameras,
    read_keypoints_2d,
)
from tests.conftest import SHARED_DATA

pd = pytest.importorskip("pandas")

BODYPARTS = ["nose", "ear_l", "ear_r"]
SCORER = "DLC_resnet50_mouseJan1shuffle1_100000"
MOUSE = SHARED_DATA / "multicam_mouse"
MOUSE_CAMS = ("back", "mid", "side", "top")


def dlc_frame(n: int = 6, individuals: list[str] | None = None, seed: int = 0,
              first_frame: int = 0) -> pd.DataFrame:
    """A DeepLabCut prediction table: x, y, likelihood per bodypart; one NaN (filtered) point."""
    rng = np.random.default_rng(seed)
    if individuals is None:
        cols = pd.MultiIndex.from_product([[SCORER], BODYPARTS, ["x", "y", "likelihood"]],
                                          names=["scorer", "bodyparts", "coords"])
    else:
        cols = pd.MultiIndex.from_product([[SCORER], individuals, BODYPARTS, ["x", "y", "likelihood"]],
                                          names=["scorer", "individuals", "bodyparts", "coords"])
    values = rng.uniform(0, 640, size=(n, len(cols)))
    values[:, 2::3] = rng.uniform(0, 1, size=(n, len(cols) // 3))
    df = pd.DataFrame(values, columns=cols, index=np.arange(first_frame, first_frame + n))
    df.iloc[1, 0:2] = np.nan  # first bodypart of the first animal missing in row 1
    return df


def write_dlc(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".h5":
        df.to_hdf(path, key="df_with_missing", format="table", mode="w")
    else:
        df.to_csv(path)
    return path


def expected_from(df: pd.DataFrame, individual: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    sub = df[SCORER] if individual is None else df[SCORER][individual]
    xy = np.stack([sub[bp][["x", "y"]].to_numpy() for bp in BODYPARTS], axis=1)
    score = np.stack([sub[bp]["likelihood"].to_numpy() for bp in BODYPARTS], axis=1)
    score[np.isnan(xy).any(axis=2)] = np.nan
    return xy, score


# ---------------------------------------------------------------------------------------------
# DeepLabCut


@pytest.mark.parametrize("suffix", [".h5", ".csv"])
def test_dlc_single_animal_round_trip(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("tables")
    df = dlc_frame(first_frame=100)
    path = write_dlc(df, tmp_path / f"videoDLC_resnet50{suffix}")
    kp = read_keypoints_2d(path)
    assert isinstance(kp, Keypoints2D)
    assert kp.keypoints == tuple(BODYPARTS)
    xy, score = expected_from(df)
    np.testing.assert_array_equal(kp.xy, xy)
    np.testing.assert_array_equal(kp.score, score)
    np.testing.assert_array_equal(kp.frames, np.arange(100, 106))
    assert kp.xy.dtype == np.float64 and kp.score.dtype == np.float64 and kp.frames.dtype == np.int64
    assert np.isnan(kp.xy[1, 0]).all() and np.isnan(kp.score[1, 0])
    assert kp.source == str(path)


def test_dlc_csv_header_rows_match_deeplabcut(tmp_path: Path) -> None:
    path = write_dlc(dlc_frame(), tmp_path / "v.csv")
    first_cells = [line.split(",")[0] for line in path.read_text().splitlines()[:4]]
    assert first_cells == ["scorer", "bodyparts", "coords", "0"]


@pytest.mark.parametrize("suffix", [".h5", ".csv"])
def test_dlc_multi_animal_track_selection(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("tables")
    df = dlc_frame(individuals=["mouse1", "mouse2"])
    path = write_dlc(df, tmp_path / f"v_el{suffix}")
    by_name = read_keypoints_2d(path, track="mouse2")
    xy, score = expected_from(df, "mouse2")
    np.testing.assert_array_equal(by_name.xy, xy)
    np.testing.assert_array_equal(by_name.score, score)
    assert "mouse2" in by_name.source
    by_index = read_keypoints_2d(path, track=0)
    np.testing.assert_array_equal(by_index.xy, expected_from(df, "mouse1")[0])

    with pytest.raises(KeypointFileError, match=r"2 individuals \['mouse1', 'mouse2'\].*track="):
        read_keypoints_2d(path)
    with pytest.raises(KeypointFileError, match=r"no individual 'mouse3'.*mouse1"):
        read_keypoints_2d(path, track="mouse3")
    with pytest.raises(KeypointFileError, match="index 2 out of range"):
        read_keypoints_2d(path, track=2)


def test_dlc_multi_animal_single_individual_needs_no_track(tmp_path: Path) -> None:
    df = dlc_frame(individuals=["only"])
    kp = read_keypoints_2d(write_dlc(df, tmp_path / "v.csv"))
    np.testing.assert_array_equal(kp.xy, expected_from(df, "only")[0])


def test_dlc_single_animal_rejects_a_track(tmp_path: Path) -> None:
    path = write_dlc(dlc_frame(), tmp_path / "v.csv")
    with pytest.raises(KeypointFileError, match="single-animal"):
        read_keypoints_2d(path, track="mouse1")


@pytest.mark.parametrize("suffix", [".h5", ".csv"])
def test_dlc_without_likelihood_is_named(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("tables")
    df = dlc_frame().drop(columns="likelihood", level="coords")
    path = write_dlc(df, tmp_path / f"CollectedData_me{suffix}")
    with pytest.raises(KeypointFileError,
                       match=r"missing coordinate columns.*'nose/likelihood'.*labeled-data"):
        read_keypoints_2d(path)


def test_dlc_csv_wrong_header_rows(tmp_path: Path) -> None:
    path = tmp_path / "v.csv"
    path.write_text("frame,nose_x,nose_y\n0,1,2\n")
    with pytest.raises(KeypointFileError, match=r"v\.csv: expected the DeepLabCut header rows "
                                                 r"scorer/bodyparts/coords.*\['frame', '0'"):
        read_keypoints_2d(path)


def test_dlc_csv_non_number_names_line_and_column(tmp_path: Path) -> None:
    path = write_dlc(dlc_frame(), tmp_path / "v.csv")
    lines = path.read_text().splitlines()
    cells = lines[5].split(",")
    cells[4] = "oops"  # ear_l x of frame 2
    lines[5] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(KeypointFileError, match=r"line 6 \(frame 2\): 'oops' in column ear_l/x"):
        read_keypoints_2d(path)


def test_dlc_csv_with_named_index_and_empty_body(tmp_path: Path) -> None:
    df = dlc_frame()
    df.index.name = "frame"
    kp = read_keypoints_2d(write_dlc(df, tmp_path / "named.csv"))
    np.testing.assert_array_equal(kp.frames, np.arange(6))
    empty = read_keypoints_2d(write_dlc(dlc_frame().iloc[:0], tmp_path / "empty.csv"))
    assert empty.xy.shape == (0, 3, 2) and empty.keypoints == tuple(BODYPARTS)


def test_dlc_all_nan_is_not_an_error(tmp_path: Path) -> None:
    df = dlc_frame()
    df.iloc[:, :] = np.nan
    kp = read_keypoints_2d(write_dlc(df, tmp_path / "v.csv"))
    assert np.isnan(kp.xy).all() and np.isnan(kp.score).all()
    assert kp.missing_fraction == 1.0


def test_dlc_unsorted_index_is_sorted_and_duplicates_rejected(tmp_path: Path) -> None:
    df = dlc_frame()
    shuffled = df.iloc[[3, 0, 5, 1, 4, 2]]
    kp = read_keypoints_2d(write_dlc(shuffled, tmp_path / "v.csv"))
    np.testing.assert_array_equal(kp.frames, np.arange(6))
    np.testing.assert_array_equal(kp.xy, expected_from(df)[0])
    dup = df.copy()
    dup.index = [0, 1, 2, 2, 3, 4]
    with pytest.raises(KeypointFileError, match=r"frame numbers repeat.*\[2\]"):
        read_keypoints_2d(write_dlc(dup, tmp_path / "dup.csv"))


# ---------------------------------------------------------------------------------------------
# SLEAP


def write_sleap(path: Path, xy: np.ndarray, scores: np.ndarray, nodes: list[str], tracks: list[str],
                transpose: bool = True) -> Path:
    """A SLEAP analysis file from xy (n_frames, n_nodes, 2, n_tracks) and scores
    (n_frames, n_nodes, n_tracks), in SLEAP's native order or transposed (its default)."""
    h5py = pytest.importorskip("h5py")
    occupancy = (~np.isnan(xy).all(axis=(1, 2))).astype(np.uint8).T  # (n_tracks, n_frames)
    instance_scores = np.nanmean(scores, axis=1)  # (n_frames, n_tracks)
    with h5py.File(path, "w") as f:
        f["tracks"] = xy.T if transpose else xy
        f["point_scores"] = scores.T if transpose else scores
        f["track_occupancy"] = occupancy.T if transpose else occupancy
        f["instance_scores"] = instance_scores.T if transpose else instance_scores
        f["node_names"] = np.array([n.encode() for n in nodes], dtype="S")
        f["track_names"] = np.array([t.encode() for t in tracks], dtype="S")
        f["video_path"] = "video.mp4"
    return path


def sleap_arrays(n_frames: int = 7, n_nodes: int = 3, n_tracks: int = 1,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 500, size=(n_frames, n_nodes, 2, n_tracks))
    scores = rng.uniform(0, 1, size=(n_frames, n_nodes, n_tracks))
    xy[2, 1, :, 0] = np.nan
    scores[2, 1, 0] = 0.0  # SLEAP writes 0 for a missing point's score
    return xy, scores


@pytest.mark.parametrize("transpose", [True, False], ids=["transposed", "untransposed"])
@pytest.mark.parametrize("n_nodes", [3, 2])  # 2 nodes: both layouts fit the node count
def test_sleap_layouts(tmp_path: Path, transpose: bool, n_nodes: int) -> None:
    xy, scores = sleap_arrays(n_nodes=n_nodes)
    nodes = ["head", "thorax", "abdomen"][:n_nodes]
    path = write_sleap(tmp_path / "v.analysis.h5", xy, scores, nodes, ["track_0"], transpose)
    kp = read_keypoints_2d(path)
    assert kp.keypoints == tuple(nodes)
    np.testing.assert_array_equal(kp.xy, xy[..., 0])
    expected_scores = scores[..., 0].copy()
    expected_scores[2, 1] = np.nan
    np.testing.assert_array_equal(kp.score, expected_scores)
    np.testing.assert_array_equal(kp.frames, np.arange(7))
    assert kp.source == str(path)


@pytest.mark.parametrize("transpose", [True, False], ids=["transposed", "untransposed"])
def test_sleap_multi_track(tmp_path: Path, transpose: bool) -> None:
    xy, scores = sleap_arrays(n_tracks=3)
    names = ["female", "male", "pup"]
    path = write_sleap(tmp_path / "v.analysis.h5", xy, scores, ["a", "b", "c"], names, transpose)
    male = read_keypoints_2d(path, track="male")
    np.testing.assert_array_equal(male.xy, xy[..., 1])
    np.testing.assert_array_equal(male.score, scores[..., 1])
    assert "male" in male.source
    pup = read_keypoints_2d(path, track=2)
    np.testing.assert_array_equal(pup.xy, xy[..., 2])
    with pytest.raises(KeypointFileError, match=r"3 tracks \['female', 'male', 'pup'\]; choose one"):
        read_keypoints_2d(path)
    with pytest.raises(KeypointFileError, match=r"no track 'dad'"):
        read_keypoints_2d(path, track="dad")


def test_sleap_tracks_shape_fits_no_layout(tmp_path: Path) -> None:
    xy, scores = sleap_arrays()
    path = write_sleap(tmp_path / "v.analysis.h5", xy, scores, ["a", "b", "c", "d"], ["t"])
    with pytest.raises(KeypointFileError, match=r"fits neither SLEAP layout.*4 node_names"):
        read_keypoints_2d(path)


@pytest.mark.skipif(not MOUSE.is_dir(), reason=f"shared data {MOUSE} not present")
@pytest.mark.parametrize("cam", MOUSE_CAMS)
def test_real_multicam_mouse_sleap_files(cam: str) -> None:
    pytest.importorskip("h5py")
    kp = read_keypoints_2d(MOUSE / cam / f"minimal_{cam}_proofread.analysis.h5")
    assert kp.xy.shape == (120, 15, 2) and kp.score.shape == (120, 15)
    assert kp.keypoints[:2] == ("Nose", "Ear_R")
    np.testing.assert_array_equal(kp.frames, np.arange(120))
    # Missing points: x, y and score NaN together.
    missing = np.isnan(kp.xy[..., 0])
    assert (np.isnan(kp.xy[..., 1]) == missing).all() and (np.isnan(kp.score) == missing).all()
    assert 0.0 <= kp.missing_fraction < 0.3
    if cam == "back":
        assert kp.missing_fraction == pytest.approx(0.2, abs=0.05)


@pytest.mark.skipif(not MOUSE.is_dir(), reason=f"shared data {MOUSE} not present")
def test_real_multicam_mouse_aligns() -> None:
    pytest.importorskip("h5py")
    per = {cam: read_keypoints_2d(MOUSE / cam / f"minimal_{cam}_proofread.analysis.h5") for cam in MOUSE_CAMS}
    keypoints, xy, score, frames = align_cameras(per)
    assert xy.shape == (4, 120, 15, 2) and score.shape == (4, 120, 15) and frames.shape == (120,)
    assert keypoints[0] == "Nose"


# ---------------------------------------------------------------------------------------------
# Bad files


def test_unsupported_extension_lists_supported(tmp_path: Path) -> None:
    path = tmp_path / "v.slp"
    path.write_bytes(b"")
    with pytest.raises(KeypointFileError, match=r"v\.slp: unsupported .*'\.slp'.*\.h5, \.csv"):
        read_keypoints_2d(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeypointFileError, match=r"nope\.h5: keypoint file not found"):
        read_keypoints_2d(tmp_path / "nope.h5")


def test_h5_that_is_neither_dlc_nor_sleap(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "calib.h5"
    with h5py.File(path, "w") as f:
        f["intrinsics"] = np.eye(3)
        f.create_group("extrinsics")
    with pytest.raises(KeypointFileError, match=r"calib\.h5: neither a DeepLabCut.*nor a SLEAP.*"
                                                 r"\['extrinsics', 'intrinsics'\]"):
        read_keypoints_2d(path)


def test_h5_that_is_not_hdf5(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    path = tmp_path / "v.h5"
    path.write_text("not hdf5")
    with pytest.raises(KeypointFileError, match=r"v\.h5: cannot read as HDF5"):
        read_keypoints_2d(path)


def test_pandas_h5_that_is_not_dlc(tmp_path: Path) -> None:
    pytest.importorskip("tables")
    path = tmp_path / "v.h5"
    pd.DataFrame({"a": [1.0, 2.0]}).to_hdf(path, key="df_with_missing", format="table", mode="w")
    with pytest.raises(KeypointFileError, match=r"not DeepLabCut predictions: expected column levels"):
        read_keypoints_2d(path)


# ---------------------------------------------------------------------------------------------
# align_cameras


def make_kp(keypoints: list[str], frames: list[int], source: str, seed: int = 0) -> Keypoints2D:
    rng = np.random.default_rng(seed)
    n, k = len(frames), len(keypoints)
    return Keypoints2D(keypoints=tuple(keypoints), xy=rng.uniform(0, 100, (n, k, 2)),
                       score=rng.uniform(0, 1, (n, k)), frames=np.asarray(frames, dtype=np.int64),
                       source=source)


def test_align_reorders_keypoints_to_the_first_camera() -> None:
    a = make_kp(["nose", "ear_l", "ear_r"], [0, 1, 2], "a.h5", seed=1)
    b = make_kp(["ear_r", "nose", "ear_l"], [0, 1, 2], "b.h5", seed=2)
    keypoints, xy, score, frames = align_cameras({"camA": a, "camB": b})
    assert keypoints == ["nose", "ear_l", "ear_r"]
    np.testing.assert_array_equal(xy[0], a.xy)
    np.testing.assert_array_equal(xy[1], b.xy[:, [1, 2, 0]])
    np.testing.assert_array_equal(score[1], b.score[:, [1, 2, 0]])
    np.testing.assert_array_equal(frames, [0, 1, 2])


def test_align_keypoint_mismatch_message() -> None:
    a = make_kp(["nose", "ear_l", "ear_r"], [0, 1], "/data/a.h5")
    b = make_kp(["nose", "ear_l", "tail"], [0, 1], "/data/b.h5")
    with pytest.raises(KeypointFileError) as info:
        align_cameras({"camA": a, "camB": b})
    msg = str(info.value)
    assert msg.startswith("/data/b.h5")
    assert "keypoints differ from /data/a.h5" in msg
    assert "missing ['ear_r'], extra ['tail']" in msg


def test_align_pads_the_frame_union(caplog: pytest.LogCaptureFixture) -> None:
    a = make_kp(["p", "q"], [0, 1, 2, 3], "a.h5", seed=1)
    b = make_kp(["p", "q"], [2, 3, 4], "b.h5", seed=2)
    with caplog.at_level(logging.WARNING, logger="rigstream.inference.keypoint_files"):
        _, xy, score, frames = align_cameras({"camA": a, "camB": b})
    np.testing.assert_array_equal(frames, [0, 1, 2, 3, 4])
    assert frames.dtype == np.int64
    assert xy.shape == (2, 5, 2, 2) and score.shape == (2, 5, 2)
    np.testing.assert_array_equal(xy[0, :4], a.xy)
    assert np.isnan(xy[0, 4]).all() and np.isnan(score[0, 4]).all()
    assert np.isnan(xy[1, :2]).all() and np.isnan(score[1, :2]).all()
    np.testing.assert_array_equal(xy[1, 2:], b.xy)
    messages = [r.getMessage() for r in caplog.records]
    assert any("'camA'" in m and "1 of 5 frames missing" in m for m in messages)
    assert any("'camB'" in m and "2 of 5 frames missing" in m for m in messages)


def test_align_needs_a_camera() -> None:
    with pytest.raises(KeypointFileError, match="at least one camera"):
        align_cameras({})


# ---------------------------------------------------------------------------------------------
# 3D points CSV


def points3d(n_f: int = 5, keypoints: tuple[str, ...] = ("nose", "Tail_0"), seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    k = len(keypoints)
    xyz = rng.normal(0, 50, (n_f, k, 3))
    error = rng.uniform(0, 3, (n_f, k))
    ncams = rng.integers(0, 4, (n_f, k))
    score = rng.uniform(0, 1, (n_f, k))
    xyz[ncams < 2] = np.nan
    error[ncams < 2] = np.nan
    score[ncams == 0] = np.nan
    return dict(keypoints=list(keypoints), frames=np.arange(10, 10 + n_f), xyz=xyz, error=error,
                ncams=ncams, score=score)


def test_points3d_columns_are_anipose_layout(tmp_path: Path) -> None:
    path = write_points3d_csv(tmp_path / "out" / "pose3d.csv", **points3d())
    header = path.read_text().splitlines()[0].split(",")
    assert header == [
        "nose_x", "nose_y", "nose_z", "nose_error", "nose_ncams", "nose_score",
        "Tail_0_x", "Tail_0_y", "Tail_0_z", "Tail_0_error", "Tail_0_ncams", "Tail_0_score",
        "M_00", "M_01", "M_02", "M_10", "M_11", "M_12", "M_20", "M_21", "M_22",
        "center_0", "center_1", "center_2", "fnum",
    ]
    assert header == points3d_columns(["nose", "Tail_0"])
    df = pd.read_csv(path)
    assert df["nose_ncams"].dtype.kind == "i" and df["fnum"].dtype.kind == "i"
    np.testing.assert_array_equal(df[["M_00", "M_11", "M_22"]].to_numpy(), 1.0)
    np.testing.assert_array_equal(df[["M_01", "center_0"]].to_numpy(), 0.0)


def test_points3d_round_trip(tmp_path: Path) -> None:
    data = points3d()
    extra = {"speed_mm_s": np.linspace(0, 1, 5)}
    path = write_points3d_csv(tmp_path / "p.csv", **data, extra=extra)
    back = read_points3d_csv(path)
    assert back.keypoints == data["keypoints"]
    np.testing.assert_array_equal(back.frames, data["frames"])
    np.testing.assert_array_equal(back.xyz, data["xyz"])  # pandas writes floats exactly
    np.testing.assert_array_equal(back.error, data["error"])
    np.testing.assert_array_equal(back.ncams, data["ncams"])
    np.testing.assert_array_equal(back.score, data["score"])
    assert back.ncams.dtype == np.int64 and back.frames.dtype == np.int64
    assert list(back.extra) == ["speed_mm_s"]
    np.testing.assert_array_equal(back.extra["speed_mm_s"], extra["speed_mm_s"])
    np.testing.assert_array_equal(back.rotation, np.eye(3))
    np.testing.assert_array_equal(back.center, np.zeros(3))
    # Tuple order follows write_points3d_csv's arguments.
    keypoints, frames, xyz, *_ = back
    assert keypoints == data["keypoints"] and xyz is back.xyz and frames is back.frames


def test_points3d_nan_written_as_empty_cells(tmp_path: Path) -> None:
    data = points3d(n_f=1, keypoints=("a",))
    data["xyz"][:] = np.nan
    data["error"][:] = np.nan
    data["score"][:] = np.nan
    data["ncams"][:] = 0
    path = write_points3d_csv(tmp_path / "p.csv", **data)
    assert path.read_text().splitlines()[1].startswith(",,,,0,,1.0,")


def test_points3d_reads_anipose_float_ncams_with_empty_cells(tmp_path: Path) -> None:
    path = tmp_path / "anipose.csv"
    cols = points3d_columns(["a"])
    rows = ["1.5,2.5,3.5,0.7,3.0,0.9," + ",".join(["1.0", "0.0", "0.0", "0.0", "1.0", "0.0", "0.0", "0.0",
                                                     "1.0"]) + ",5.0,6.0,7.0,0",
            ",,,,,," + ",".join(["1.0", "0.0", "0.0", "0.0", "1.0", "0.0", "0.0", "0.0", "1.0"])
            + ",5.0,6.0,7.0,1"]
    path.write_text(",".join(cols) + "\n" + "\n".join(rows) + "\n")
    back = read_points3d_csv(path)
    np.testing.assert_array_equal(back.ncams, [[3], [0]])
    np.testing.assert_array_equal(back.xyz[0, 0], [1.5, 2.5, 3.5])
    assert np.isnan(back.xyz[1]).all()
    np.testing.assert_array_equal(back.center, [5.0, 6.0, 7.0])


def test_points3d_write_rejects_bad_arrays(tmp_path: Path) -> None:
    data = points3d()
    with pytest.raises(ValueError, match=r"xyz must have shape \(5, 2, 3\)"):
        write_points3d_csv(tmp_path / "p.csv", **{**data, "xyz": data["xyz"][:, :, :2]})
    with pytest.raises(ValueError, match="ncams must be integers"):
        write_points3d_csv(tmp_path / "p.csv", **{**data, "ncams": data["ncams"].astype(float)})
    with pytest.raises(ValueError, match="extra column 'com_x' clashes"):
        write_points3d_csv(tmp_path / "p.csv", **data, extra={"com_x": np.zeros(5)})


@pytest.mark.parametrize(("text", "match"), [
    ("", "empty file"),
    ("a_x,a_y\n1,2\n", "no 'fnum' column"),
    ("fnum,speed\n0,1\n", r"no '<keypoint>_x' columns"),
    ("a_x,a_y,a_z,a_error,a_score,fnum\n1,2,3,4,5,0\n", r"missing columns \['a_ncams'\]"),
    ("a_x,a_y,a_z,a_error,a_ncams,a_score,fnum\n1,two,3,4,2,5,0\n", r"line 2: 'two' in column 'a_y'"),
    ("a_x,a_y,a_z,a_error,a_ncams,a_score,fnum\n1,2,3,4,2,5,0.5\n", "fnum must be an integer"),
    ("a_x,a_y,a_z,a_error,a_ncams,a_score,fnum\n1,2,3,4,2.5,5,0\n", "must hold counts"),
])
def test_points3d_read_malformed(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(KeypointFileError, match=match):
        read_points3d_csv(path)


def test_points3d_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeypointFileError, match="3D points file not found"):
        read_points3d_csv(tmp_path / "nope.csv")
