"""Triangulation (inference/triangulate.py): exactness on noise-free views, equality with a
textbook DLT written here, OpenCV's distortion model, which views count, the worst-view
re-solve, shapes and errors, and real four-camera data from the shared folder.

Observations are made with ``CalibratedCamera.project`` (OpenCV's ``projectPoints``), never
with the module's own projection, so a shared mistake cannot cancel out.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from rigstream.acquisition.sim_world import ring_of_cameras
from rigstream.calibration import CalibratedCamera, Calibration
from rigstream.config import InputError
from rigstream.inference.triangulate import (
    Points3D,
    TriangulationConfig,
    TriangulationError,
    Triangulator,
    triangulate_rig,
)
from tests.conftest import SHARED_DATA

CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-15)
"""Run OpenCV's undistortion to convergence (its default stops after 5 steps)."""
KEEP_ALL = 1e9
"""A ``max_error_px`` no point reaches: no view is ever dropped for its error."""


def ring(n: int = 4) -> Calibration:
    return Calibration(tuple(ring_of_cameras("abcdef"[:n], 1280, 1024)))


def triangulator(n: int = 4, **config: float | bool) -> Triangulator:
    return Triangulator(ring(n), TriangulationConfig(**config))


def arena_points(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) mm, spread over the arena (x, y in [-300, 300], z in [0, 150])."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(-300, 300, (n, 2)), rng.uniform(0, 150, n)])


def observe(cal: Calibration, xyz_mm: np.ndarray) -> np.ndarray:
    """(C, ..., 2) px through OpenCV's projection (independent of the module under test)."""
    pts = np.asarray(xyz_mm, dtype=np.float64)
    return np.stack([c.project(pts.reshape(-1, 3)).reshape(*pts.shape[:-1], 2) for c in cal.cameras])


def reference_dlt(cal: Calibration, xy_px: np.ndarray, weight: np.ndarray,
                  use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Textbook DLT, one point at a time: rows ``w (u P[2] - P[0])``, ``w (v P[2] - P[1])`` on
    OpenCV-undistorted points, smallest right singular vector of ``A``. ``xy_px`` (C, N, 2),
    ``weight`` and ``use`` (C, N). Returns xyz (N, 3) mm and the mean reprojection error (N,)
    px over the views used (OpenCV's projection)."""
    und = np.stack([
        cv2.undistortPoints(np.nan_to_num(xy_px[i]).reshape(-1, 1, 2), c.matrix, c.dist, None, None,
                            None, CRITERIA).reshape(-1, 2)
        for i, c in enumerate(cal.cameras)
    ])
    n = xy_px.shape[1]
    xyz = np.full((n, 3), np.nan)
    error = np.full(n, np.nan)
    for j in range(n):
        rows = []
        for i, cam in enumerate(cal.cameras):
            if use[i, j]:
                p, (u, v), w = cam.extrinsics, und[i, j], weight[i, j]
                rows += [w * (u * p[2] - p[0]), w * (v * p[2] - p[1])]
        if len(rows) < 4:
            continue
        h = np.linalg.svd(np.array(rows))[2][-1]
        xyz[j] = h[:3] / h[3]
        error[j] = np.mean([np.linalg.norm(cam.project(xyz[j])[0] - xy_px[i, j])
                            for i, cam in enumerate(cal.cameras) if use[i, j]])
    return xyz, error


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)


# ------------------------------------------------------------------ exactness and the reference


@pytest.mark.parametrize("cameras", [2, 3, 4, 6])
def test_noise_free_points_are_recovered_exactly(cameras: int) -> None:
    tri = triangulator(cameras)
    truth = arena_points(100)
    xy = observe(tri.calibration, truth)
    assert np.isfinite(xy).all()

    got = tri.triangulate(xy)

    assert isinstance(got, Points3D)
    assert np.abs(got.xyz - truth).max() < 1e-6
    assert got.error.max() < 1e-6
    assert got.ncams.dtype.kind == "i"
    np.testing.assert_array_equal(got.ncams, cameras)
    np.testing.assert_array_equal(got.score, 1.0)


@pytest.mark.parametrize("weights", ["equal", "confidence", "unweighted"])
def test_matches_textbook_dlt_with_noise(weights: str) -> None:
    """1 px noise, a few missing and under-threshold views, no view dropped for its error:
    the same point as a plain SVD of the (weighted) DLT system."""
    rng = np.random.default_rng(7)
    n = 150
    tri = Triangulator(ring(4), TriangulationConfig(min_score=0.3, max_error_px=KEEP_ALL,
                                                    weighted=weights != "unweighted"))
    truth = arena_points(n, seed=1)
    xy = observe(tri.calibration, truth) + rng.normal(0.0, 1.0, (4, n, 2))
    xy[rng.integers(0, 4, 20), rng.integers(0, n, 20)] = np.nan
    if weights == "equal":
        score = None
        conf = np.ones((4, n))
    else:
        conf = rng.uniform(0.3, 1.0, (4, n))
        conf[rng.integers(0, 4, 20), rng.integers(0, n, 20)] = 0.1  # under min_score
        score = conf
    use = np.isfinite(xy).all(-1) & (conf >= 0.3)
    assert (use.sum(0) >= 2).all()

    got = tri.triangulate(xy, score)
    ref_xyz, ref_error = reference_dlt(tri.calibration, xy, conf if weights == "confidence" else
                                       np.ones((4, n)), use)

    assert np.abs(got.xyz - ref_xyz).max() < 1e-6
    assert np.abs(got.error - ref_error).max() < 1e-6
    np.testing.assert_array_equal(got.ncams, use.sum(0))
    expected_score = np.where(use, conf, 0.0).sum(0) / use.sum(0)
    np.testing.assert_allclose(got.score, expected_score, rtol=1e-12)
    # The noise really is there (the comparison is not between two exact answers).
    assert np.median(distance(got.xyz, truth)) > 0.05


def test_confidence_weights_pull_towards_confident_views() -> None:
    """One noisy, barely confident view moves the weighted point less than the unweighted one."""
    truth = np.array([[40.0, -60.0, 50.0]])
    cal = ring(4)
    xy = observe(cal, truth)
    xy[2] += [6.0, -4.0]
    score = np.array([[1.0], [1.0], [0.35], [1.0]])
    weighted = Triangulator(cal, TriangulationConfig(max_error_px=KEEP_ALL)).triangulate(xy, score)
    plain = Triangulator(cal, TriangulationConfig(max_error_px=KEEP_ALL, weighted=False))
    plain = plain.triangulate(xy, score)
    assert distance(weighted.xyz, truth)[0] < 0.5 * distance(plain.xyz, truth)[0]


# ------------------------------------------------------------------------ OpenCV's lens model

DISTORTIONS = {
    5: [-0.12, 0.04, 8e-4, -6e-4, -0.01],
    8: [-0.12, 0.04, 8e-4, -6e-4, -0.01, 0.03, -0.01, 0.004],
    12: [-0.12, 0.04, 8e-4, -6e-4, -0.01, 0.03, -0.01, 0.004, 1.5e-3, -4e-4, -1e-3, 3e-4],
    14: [-0.12, 0.04, 8e-4, -6e-4, -0.01, 0.03, -0.01, 0.004, 1.5e-3, -4e-4, -1e-3, 3e-4, 0.0, 0.0],
}


def with_distortion(dist: list[float]) -> Calibration:
    cams = ring_of_cameras(["a", "b", "c"], 1280, 1024)
    scale = [1.0, 0.8, 1.2]  # each camera a slightly different lens
    return Calibration(tuple(
        CalibratedCamera(c.name, c.width, c.height, c.matrix, np.array(dist) * s, c.rvec, c.tvec)
        for c, s in zip(cams, scale, strict=True)
    ))


@pytest.mark.parametrize("coefficients", sorted(DISTORTIONS))
def test_undistort_matches_opencv(coefficients: int) -> None:
    cal = with_distortion(DISTORTIONS[coefficients])
    tri = Triangulator(cal)
    u, v = np.meshgrid(np.linspace(0, 1279, 33), np.linspace(0, 1023, 27))
    px = np.stack([u, v], axis=-1)  # (27, 33, 2): the whole sensor, corners included
    xy = np.broadcast_to(px, (3, *px.shape)).copy()

    got = tri.undistort(xy)

    assert got.shape == xy.shape
    for i, cam in enumerate(cal.cameras):
        ref = cv2.undistortPoints(px.reshape(-1, 1, 2), cam.matrix, cam.dist, None, None, None,
                                  CRITERIA).reshape(px.shape)
        # The model is invertible over the sensor: OpenCV's answer projects back to the pixel.
        back = cv2.projectPoints(np.column_stack([ref.reshape(-1, 2), np.ones(ref.size // 2)]),
                                 np.zeros(3), np.zeros(3), cam.matrix, cam.dist)[0].reshape(px.shape)
        assert np.abs(back - px).max() < 1e-8
        assert np.abs(got[i] - ref).max() < 1e-10


@pytest.mark.parametrize("coefficients", sorted(DISTORTIONS))
def test_project_matches_opencv(coefficients: int) -> None:
    cal = with_distortion(DISTORTIONS[coefficients])
    tri = Triangulator(cal)
    pts = arena_points(200, seed=3).reshape(10, 20, 3)

    got = tri.project(pts)

    assert got.shape == (3, 10, 20, 2)
    for i, cam in enumerate(cal.cameras):
        ref = cv2.projectPoints(pts.reshape(-1, 3), cam.rvec, cam.tvec, cam.matrix,
                                cam.dist)[0].reshape(10, 20, 2)
        assert np.abs(got[i] - ref).max() < 1e-9


@pytest.mark.parametrize("coefficients", sorted(DISTORTIONS))
def test_distorted_views_triangulate_exactly(coefficients: int) -> None:
    cal = with_distortion(DISTORTIONS[coefficients])
    truth = arena_points(60, seed=4)
    got = Triangulator(cal).triangulate(observe(cal, truth))
    assert np.abs(got.xyz - truth).max() < 1e-6
    assert got.error.max() < 1e-6


def test_nan_in_nan_out_and_points_behind_a_camera_project_to_nan() -> None:
    tri = triangulator(4)
    a = tri.calibration.cameras[0]
    aim = np.array([0.0, 0.0, 60.0])
    behind_a = a.center_mm + 50.0 * (a.center_mm - aim) / np.linalg.norm(a.center_mm - aim)
    pts = np.array([[10.0, 20.0, 30.0], [np.nan, 0.0, 0.0], behind_a])

    px = tri.project(pts)

    assert np.isfinite(px[:, 0]).all()
    assert np.isnan(px[:, 1]).all()
    assert np.isnan(px[0, 2]).all()
    assert np.isfinite(px[2, 2]).all()  # the opposite camera sees it

    xy = np.array([[[640.0, 512.0], [np.nan, np.nan], [np.nan, 3.0]]] * 4)
    und = tri.undistort(xy)
    assert np.isfinite(und[:, 0]).all()
    assert np.isnan(und[:, 1:]).all()


def test_tilted_sensor_model_is_refused() -> None:
    dist = [*DISTORTIONS[12], 0.01, 0.0]
    with pytest.raises(TriangulationError, match="tauX"):
        Triangulator(with_distortion(dist))


# -------------------------------------------------------------------------- which views count


def test_low_score_and_missing_views_are_not_used() -> None:
    tri = Triangulator(ring(4), TriangulationConfig(min_score=0.3, max_error_px=KEEP_ALL))
    truth = arena_points(6, seed=5)
    xy = observe(tri.calibration, truth)
    score = np.full((4, 6), 0.9)
    xy[0, 0] += 200.0
    score[0, 0] = 0.1                 # 0: under the threshold (and far off): ignored
    xy[1, 1] = np.nan                 # 1: no detection
    xy[2, 2, 0] = np.nan              # 2: half a detection
    xy[3, 3] += 200.0
    score[3, 3] = np.nan              # 3: a NaN score
    score[1, 4] = 0.3                 # 4: exactly at the threshold: used
    score[:2, 5] = 0.0                # 5: only two views left
    score[2, 5] = 0.5

    got = tri.triangulate(xy, score)

    np.testing.assert_array_equal(got.ncams, [3, 3, 3, 3, 4, 2])
    assert np.abs(got.xyz - truth).max() < 1e-6
    assert got.error.max() < 1e-6
    np.testing.assert_allclose(got.score, [0.9, 0.9, 0.9, 0.9, 0.75, 0.7], rtol=1e-12)


def test_fewer_than_two_usable_views_give_no_point() -> None:
    tri = triangulator(4)
    xy = observe(tri.calibration, arena_points(3, seed=6))
    score = np.full((4, 3), 0.9)
    xy[1:, 0] = np.nan        # one view
    score[:3, 1] = 0.2        # one view above the threshold
    xy[:, 2] = np.nan         # none

    got = tri.triangulate(xy, score)

    assert np.isnan(got.xyz).all()
    assert np.isnan(got.error).all()
    np.testing.assert_array_equal(got.ncams, 0)
    np.testing.assert_array_equal(got.score, 0.0)


def test_all_nan_input_gives_nan_without_a_warning() -> None:
    tri = triangulator(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = tri.triangulate(np.full((4, 120, 15, 2), np.nan), np.full((4, 120, 15), np.nan))
        nothing = tri.triangulate(np.full((4, 120, 15, 2), np.nan))
    for p in (got, nothing):
        assert p.xyz.shape == (120, 15, 3)
        assert np.isnan(p.xyz).all()
        assert np.isnan(p.error).all()
        assert (p.ncams == 0).all()
        assert (p.score == 0.0).all()


# ------------------------------------------------------------------------ worst-view re-solve

CLEAN_POINTS = np.array([[200.0, -150.0, 40.0], [120.0, 260.0, 10.0], [-180.0, -220.0, 80.0]])


@pytest.mark.parametrize("shift_px", [(80.0, 0.0), (0.0, 80.0), (-80.0, 0.0), (0.0, -80.0)])
@pytest.mark.parametrize("camera", range(4))
def test_an_outlier_view_is_dropped(camera: int, shift_px: tuple[float, float]) -> None:
    cal = ring(4)
    xy = observe(cal, CLEAN_POINTS)
    xy[camera] += shift_px
    conf = np.full(4, 0.9)
    conf[camera] = 0.6  # the outlier is the least confident view
    score = np.repeat(conf[:, None], len(CLEAN_POINTS), axis=1)

    got = Triangulator(cal, TriangulationConfig(max_error_px=15.0)).triangulate(xy, score)
    kept = Triangulator(cal, TriangulationConfig(max_error_px=KEEP_ALL)).triangulate(xy, score)

    np.testing.assert_array_equal(got.ncams, 3)
    np.testing.assert_allclose(got.score, np.delete(conf, camera).mean(), rtol=1e-12)
    assert distance(got.xyz, CLEAN_POINTS).max() < 0.5
    assert got.error.max() < 0.1
    np.testing.assert_array_equal(kept.ncams, 4)
    assert distance(kept.xyz, CLEAN_POINTS).min() > 5.0
    assert kept.error.min() > 15.0


@pytest.mark.parametrize(("truth", "shift_px", "outlier_score"), [
    ([0.0, 0.0, 60.0], [80.0, 0.0], 1.0),         # arena centre: 77 mm off, 2 views, 19.8 px
    ([-250.0, 100.0, 120.0], [80.0, 0.0], 1.0),   # 95 mm off, 2 views, 14.0 px
    ([200.0, -150.0, 40.0], [0.0, 80.0], 0.9),    # a confident outlier: 64 mm off, 2 views, 5.1 px
], ids=["centre", "side", "confident"])
def test_an_outlier_view_is_dropped_wherever_the_point_is(
    truth: list[float], shift_px: list[float], outlier_score: float,
) -> None:
    """Three exact views and one 80 px off (camera a): leaving the outlier out gives a zero
    error, so the re-solve should always find that answer."""
    cal = ring(4)
    xy = observe(cal, np.array(truth))
    xy[0] += shift_px
    score = np.array([outlier_score, 0.6, 0.6, 0.6]) if outlier_score < 1.0 else None
    got = Triangulator(cal, TriangulationConfig(max_error_px=15.0)).triangulate(xy, score)
    assert got.ncams == 3
    assert distance(got.xyz, truth) < 0.5


@pytest.mark.parametrize("shift_px", [40.0, 80.0, 150.0])
def test_one_outlier_view_anywhere_in_the_arena_is_left_out(shift_px: float) -> None:
    """Random points, one random view of each pushed ``shift_px`` in a random direction: the
    re-solve finds the three exact views every time (the worst-reprojecting view is often a
    good one, pulled off by the outlier)."""
    rng = np.random.default_rng(7)
    cal = ring(4)
    truth = rng.uniform([-250.0, -150.0, 0.0], [250.0, 150.0, 120.0], (500, 3))
    xy = observe(cal, truth)  # (4, 500, 2)
    bad = rng.integers(0, 4, 500)
    angle = rng.uniform(0, 2 * np.pi, 500)
    xy[bad, np.arange(500)] += shift_px * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    score = np.full((4, 500), 0.6)
    score[bad, np.arange(500)] = 0.9  # a confidently wrong detection (a swapped paw)
    got = Triangulator(cal, TriangulationConfig(max_error_px=15.0)).triangulate(xy, score)
    np.testing.assert_array_equal(got.ncams, 3)
    assert distance(got.xyz, truth).max() < 0.5


def test_two_views_are_never_reduced() -> None:
    cal = ring(4).subset(["a", "b"])
    xy = observe(cal, CLEAN_POINTS)
    xy[1] += [80.0, 0.0]
    got = Triangulator(cal, TriangulationConfig(max_error_px=15.0)).triangulate(xy)
    np.testing.assert_array_equal(got.ncams, 2)
    assert np.isfinite(got.xyz).all()
    assert got.error.min() > 15.0


def test_a_view_placing_the_point_behind_a_camera_does_not_crash() -> None:
    """Camera a's mirrored projection of a point behind it satisfies the (sign-blind) DLT."""
    cal = ring(4)
    a = cal.cameras[0]
    aim = np.array([0.0, 0.0, 60.0])
    behind_a = a.center_mm + 50.0 * (a.center_mm - aim) / np.linalg.norm(a.center_mm - aim)
    xy = observe(cal, behind_a)
    assert np.isnan(xy[0]).all()
    xy[0] = cv2.projectPoints(behind_a[None], a.rvec, a.tvec, a.matrix, a.dist)[0].ravel()

    four = Triangulator(cal).triangulate(xy)
    two = Triangulator(cal.subset(["a", "c"])).triangulate(xy[[0, 2]])

    assert four.ncams == 3  # camera a, which cannot see the point, is dropped
    assert distance(four.xyz, behind_a) < 1e-6
    assert four.error < 1e-6
    assert two.ncams == 2
    assert np.isfinite(two.xyz).all()
    assert not np.isnan(two.error)  # finite, or inf where a used view cannot see the point


# ----------------------------------------------------------------------- shapes and bad input


def test_batched_shapes() -> None:
    tri = triangulator(4)
    truth = arena_points(5 * 7, seed=8).reshape(5, 7, 3)
    xy = observe(tri.calibration, truth)
    score = np.full((4, 5, 7), 0.8)

    got = tri.triangulate(xy, score)

    assert got.xyz.shape == (5, 7, 3)
    assert got.error.shape == got.ncams.shape == got.score.shape == (5, 7)
    assert np.abs(got.xyz - truth).max() < 1e-6
    assert tri.project(truth).shape == (4, 5, 7, 2)
    assert tri.undistort(xy).shape == (4, 5, 7, 2)
    flat = tri.triangulate(xy.reshape(4, 35, 2), score.reshape(4, 35))
    np.testing.assert_array_equal(flat.xyz, got.xyz.reshape(35, 3))


def test_a_single_point_gives_scalar_outputs() -> None:
    """(C, 2) in: one point, shape () outputs (xyz (3,))."""
    tri = triangulator(4)
    truth = np.array([12.0, -34.0, 56.0])
    xy = observe(tri.calibration, truth)
    assert xy.shape == (4, 2)

    got = tri.triangulate(xy, np.full(4, 0.9))

    assert got.xyz.shape == (3,)
    assert got.error.shape == got.ncams.shape == got.score.shape == ()
    assert distance(got.xyz, truth) < 1e-6
    assert int(got.ncams) == 4
    assert tri.project(truth).shape == (4, 2)


def test_non_contiguous_and_float32_input() -> None:
    tri = triangulator(4)
    truth = arena_points(12, seed=9).reshape(3, 4, 3)
    xy = observe(tri.calibration, truth)
    strided = np.ascontiguousarray(xy.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    assert not strided.flags.c_contiguous
    before = strided.copy()
    a = tri.triangulate(strided)
    np.testing.assert_array_equal(strided, before)  # the input is not modified
    np.testing.assert_array_equal(a.xyz, tri.triangulate(xy).xyz)
    b = tri.triangulate(xy.astype(np.float32))
    assert distance(b.xyz, truth).max() < 1.0  # float32 pixels: ~1e-4 px of rounding


def test_empty_batches() -> None:
    tri = triangulator(4)
    got = tri.triangulate(np.zeros((4, 0, 15, 2)), np.zeros((4, 0, 15)))
    assert got.xyz.shape == (0, 15, 3)
    assert got.ncams.shape == (0, 15)


@pytest.mark.parametrize("shape", [(3, 10, 2), (5, 10, 2), (4, 10, 3), (4,), (4, 10, 1)])
def test_wrong_point_shape_names_the_expected_one(shape: tuple[int, ...]) -> None:
    tri = triangulator(4)
    with pytest.raises(TriangulationError, match=r"\(4 cameras, \.\.\., 2\)") as info:
        tri.triangulate(np.zeros(shape))
    assert str(shape) in str(info.value)


@pytest.mark.parametrize("score_shape", [(4, 9), (3, 10), (4, 10, 1), (10,)])
def test_wrong_score_shape(score_shape: tuple[int, ...]) -> None:
    tri = triangulator(4)
    with pytest.raises(TriangulationError, match=r"\(4, 10\)"):
        tri.triangulate(np.zeros((4, 10, 2)), np.ones(score_shape))


def test_one_camera_is_refused() -> None:
    with pytest.raises(TriangulationError, match="at least two cameras"):
        Triangulator(ring(4).subset(["b"]))


def test_triangulate_rig_orders_cameras_and_names_missing_ones() -> None:
    cal = ring(4)
    tri = triangulate_rig(cal, ["c", "a", "d"], TriangulationConfig(min_score=0.5))
    assert tri.names == ["c", "a", "d"]
    assert tri.config.min_score == 0.5
    truth = np.array([[-20.0, 70.0, 90.0]])
    xy = observe(cal, truth)[[2, 0, 3]]
    np.testing.assert_allclose(tri.project(truth), xy, atol=1e-9)
    assert distance(tri.triangulate(xy).xyz, truth).max() < 1e-6

    with pytest.raises(InputError, match="'top'") as info:
        triangulate_rig(cal, ["a", "top"])
    assert "cameras: a, b, c, d" in str(info.value)


def test_warm_up() -> None:
    tri = triangulator(3)
    assert tri.warm_up() is None


# ---------------------------------------------------------------------------------- real data

MOUSE = SHARED_DATA / "multicam_mouse"
MOUSE_CAMERAS = ["back", "mid", "side", "top"]


@pytest.fixture(scope="module")
def mouse() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Proofread SLEAP predictions: xy (4, 120, 15, 2) px, scores (4, 120, 15), node names."""
    h5py = pytest.importorskip("h5py")
    files = [MOUSE / c / f"minimal_{c}_proofread.analysis.h5" for c in MOUSE_CAMERAS]
    if not all(f.is_file() for f in [*files, MOUSE / "calibration_recalibrated.toml"]):
        pytest.skip(f"shared data not found in {MOUSE}")
    xy, score = [], []
    for f in files:
        with h5py.File(f, "r") as h:
            xy.append(h["tracks"][0].transpose(2, 1, 0))   # (2, 15, 120) -> (120, 15, 2)
            score.append(h["point_scores"][0].T)          # (15, 120) -> (120, 15)
            nodes = [n.decode() for n in h["node_names"][:]]
    return np.stack(xy), np.stack(score), nodes


def test_real_four_camera_mouse(mouse: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    xy, score, nodes = mouse
    cal = Calibration.load(MOUSE / "calibration_recalibrated.toml")
    tri = triangulate_rig(cal, MOUSE_CAMERAS, TriangulationConfig(min_score=0.3, max_error_px=15.0))

    got = tri.triangulate(xy, score)

    assert got.xyz.shape == (120, 15, 3)
    usable = (np.isfinite(xy).all(-1) & (score >= 0.3)).sum(0) >= 2
    found = np.isfinite(got.xyz).all(-1)
    assert usable.sum() > 1000
    assert found[usable].mean() >= 0.8
    assert not found[~usable].any()
    # Measured 3.3 px (the side view reprojects worst, ~12 px median, with this calibration).
    assert np.median(got.error[found]) < 5.0
    # Scale: nose to head is about 2 cm on a mouse (measured 21 mm).
    nose_head = distance(got.xyz[:, nodes.index("Nose")], got.xyz[:, nodes.index("Head")])
    assert 5.0 < np.nanmedian(nose_head) < 40.0


def test_undistort_and_project_check_their_shapes() -> None:
    tri = Triangulator(ring(4))
    with pytest.raises(TriangulationError, match=r"undistort: expected points of shape \(4 cameras"):
        tri.undistort(np.zeros((4, 10, 3)))
    with pytest.raises(TriangulationError, match="undistort"):
        tri.undistort(np.zeros((3, 10, 2)))
    with pytest.raises(TriangulationError, match=r"project: expected points of shape \(\.\.\., 3\)"):
        tri.project(np.zeros((10, 2)))
