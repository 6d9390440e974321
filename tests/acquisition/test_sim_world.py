"""The simulated world: animal motion, virtual cameras and the renderer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rigstream.acquisition import sim_world
from rigstream.calibration import CalibratedCamera

K = len(sim_world.KEYPOINTS)
KP = {name: i for i, name in enumerate(sim_world.KEYPOINTS)}
TAIL = [KP["tail_mid"], KP["tail_tip"]]


@pytest.fixture(scope="module")
def motion() -> sim_world.AnimalMotion:
    return sim_world.AnimalMotion(seed=0)


@pytest.fixture(scope="module")
def poses_120s(motion: sim_world.AnimalMotion) -> np.ndarray:
    """(12000, K, 3) mm: two minutes at 100 Hz."""
    return motion.poses_at(np.arange(0.0, 120.0, 0.01))


@pytest.fixture(scope="module")
def ring4() -> list[CalibratedCamera]:
    return sim_world.ring_of_cameras(["a", "b", "c", "d"], 320, 240)


@pytest.fixture(scope="module")
def renderers(ring4: list[CalibratedCamera]) -> list[sim_world.ViewRenderer]:
    return [sim_world.ViewRenderer(cam) for cam in ring4]


def test_names_are_consistent() -> None:
    assert 10 <= K <= 16
    assert len(set(sim_world.KEYPOINTS)) == K
    for a, b in sim_world.SKELETON + sim_world.LEFT_RIGHT:
        assert a in KP and b in KP
    for left, right in sim_world.LEFT_RIGHT:
        assert left.startswith("left_") and right == "right_" + left[len("left_") :]


# -- motion ---------------------------------------------------------------------------


def test_pose_is_a_pure_function_of_seed_and_time(motion: sim_world.AnimalMotion) -> None:
    other = sim_world.AnimalMotion(seed=0)
    for t in (0.0, 1.234, 37.5, 1000.0 / 226.0, 3600.25):
        pose = motion.pose_at(t)
        assert pose.shape == (K, 3) and pose.dtype == np.float64
        np.testing.assert_array_equal(pose, other.pose_at(t))
        np.testing.assert_array_equal(pose, motion.pose_at(t))  # no hidden state
    times = np.array([5.0, 0.5, 61.0, 2.0])
    batch = motion.poses_at(times)
    assert batch.shape == (4, K, 3)
    for t, pose in zip(times, batch, strict=True):
        np.testing.assert_allclose(pose, motion.pose_at(t), rtol=0, atol=1e-9)
    assert not np.allclose(sim_world.AnimalMotion(seed=1).pose_at(1.0), motion.pose_at(1.0))
    assert np.all(np.isfinite(sim_world.AnimalMotion(seed=-3).pose_at(-2.0)))


def test_pose_is_smooth(poses_120s: np.ndarray, motion: sim_world.AnimalMotion) -> None:
    fine = motion.poses_at(np.arange(0.0, 30.0, 0.001))
    step_mm = np.linalg.norm(np.diff(fine, axis=0), axis=2)
    assert step_mm.max() < 3.0  # < 3 m/s for any keypoint, including paws and tail tip
    coarse_step = np.linalg.norm(np.diff(poses_120s, axis=0), axis=2)
    assert coarse_step.max() < 20.0


def test_body_has_rat_proportions(poses_120s: np.ndarray) -> None:
    length = np.linalg.norm(poses_120s[:, KP["snout"]] - poses_120s[:, KP["tail_base"]], axis=1)
    walking = poses_120s[:, :, 2].max(axis=1) < 80.0
    assert 150.0 <= np.median(length[walking]) <= 200.0


def test_animal_stays_inside_arena(poses_120s: np.ndarray) -> None:
    arena = sim_world.Arena()
    assert np.all(np.abs(poses_120s[..., 0]) <= arena.width_mm / 2)
    assert np.all(np.abs(poses_120s[..., 1]) <= arena.depth_mm / 2)
    assert np.all(poses_120s[..., 2] >= 0.0)
    assert np.all(poses_120s[..., 2] < arena.wall_mm)
    body = np.delete(poses_120s, TAIL, axis=1)
    assert np.all(np.abs(body[..., :2]) <= arena.width_mm / 2 - 40.0)  # steers off the walls
    # ... and it explores: it visits all four quadrants.
    centre = poses_120s[:, KP["spine_mid"], :2]
    for sx in (-1, 1):
        for sy in (-1, 1):
            assert np.any((centre[:, 0] * sx > 50) & (centre[:, 1] * sy > 50))


def test_left_is_on_the_animals_left(poses_120s: np.ndarray) -> None:
    forward = poses_120s[:, KP["neck"], :2] - poses_120s[:, KP["tail_base"], :2]
    for left, right in sim_world.LEFT_RIGHT:
        across = poses_120s[:, KP[left], :2] - poses_120s[:, KP[right], :2]
        # z component of forward x across: positive when `left` is to the animal's left.
        assert np.all(forward[:, 0] * across[:, 1] - forward[:, 1] * across[:, 0] > 0), left


def test_animal_walks_with_alternating_paws(poses_120s: np.ndarray) -> None:
    centre = poses_120s[:, KP["spine_mid"], :2]
    speed_mm_s = np.linalg.norm(np.diff(centre, axis=0), axis=1) / 0.01
    assert 30.0 < np.median(speed_mm_s) < 250.0
    walking = poses_120s[:, :, 2].max(axis=1) < 80.0
    lf = poses_120s[walking, KP["left_forepaw"], 2] > 3.0
    rf = poses_120s[walking, KP["right_forepaw"], 2] > 3.0
    assert 0.2 < lf.mean() < 0.8 and 0.2 < rf.mean() < 0.8
    assert (lf & rf).mean() < 0.05  # the two forepaws are not lifted together
    # 3-5 steps per second: count the left forepaw's lift-offs over the walking time.
    liftoffs = np.count_nonzero(np.diff(lf.astype(np.int8)) == 1)
    assert 3.0 < liftoffs / (walking.sum() * 0.01) < 5.0


def test_animal_rears_within_a_minute(poses_120s: np.ndarray) -> None:
    minute = poses_120s[:6000]
    top_mm = minute[:, :, 2].max(axis=1)
    assert top_mm.max() > 120.0
    assert minute[:, KP["snout"], 2].max() > 150.0
    assert np.mean(top_mm > 120.0) < 0.3  # it mostly walks


# -- cameras --------------------------------------------------------------------------


def test_project_matches_hand_computation(ring4: list[CalibratedCamera]) -> None:
    cam = ring4[1]
    rot = cam.rotation
    center = -rot.T @ cam.tvec
    np.testing.assert_allclose(center, cam.center_mm)
    # A point on the optical axis lands on the principal point.
    on_axis = center + 800.0 * rot[2]
    np.testing.assert_allclose(cam.project(on_axis[None])[0], cam.matrix[:2, 2], atol=1e-6)
    # An off-axis point, through the pinhole and the distortion polynomial by hand.
    point = np.array([40.0, -25.0, 30.0])
    x, y, z = rot @ point + cam.tvec
    xn, yn = x / z, y / z
    k1, k2, p1, p2, k3 = cam.dist
    r2 = xn * xn + yn * yn
    radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2**3
    xd = xn * radial + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn * xn)
    yd = yn * radial + p1 * (r2 + 2 * yn * yn) + 2 * p2 * xn * yn
    expected = [cam.matrix[0, 0] * xd + cam.matrix[0, 2], cam.matrix[1, 1] * yd + cam.matrix[1, 2]]
    np.testing.assert_allclose(cam.project(point[None])[0], expected, atol=1e-6)
    # Behind the camera: NaN, no crash.
    assert np.all(np.isnan(cam.project((center - 100.0 * rot[2])[None])))


def test_ring_geometry(ring4: list[CalibratedCamera]) -> None:
    centers = np.array([cam.center_mm for cam in ring4])
    np.testing.assert_allclose(np.hypot(centers[:, 0], centers[:, 1]), 900.0)
    np.testing.assert_allclose(centers[0, 1], 0.0, atol=1e-9)
    assert centers[0, 0] > 0  # first camera at azimuth 0
    assert np.ptp(centers[:, 2]) > 50.0  # alternating heights
    for cam in ring4:
        assert -0.1 <= cam.dist[0] <= -0.05
        assert abs(cam.matrix[0, 2] - 160) < 16 and abs(cam.matrix[1, 2] - 120) < 12
        forward = cam.rotation[2]
        to_centre = -cam.center_mm / np.linalg.norm(cam.center_mm)
        assert forward @ to_centre > 0.99


def test_aniposelib_dict(ring4: list[CalibratedCamera]) -> None:
    d = ring4[2].to_aniposelib_dict()
    assert d["name"] == "c" and d["size"] == [320, 240]
    assert np.array(d["matrix"]).shape == (3, 3)
    assert len(d["distortions"]) == 5 and len(d["rotation"]) == 3 and len(d["translation"]) == 3
    rebuilt = CalibratedCamera(
        d["name"], *d["size"], d["matrix"], d["distortions"], d["rotation"], d["translation"]
    )
    point = np.array([[10.0, 20.0, 30.0]])
    np.testing.assert_allclose(rebuilt.project(point), ring4[2].project(point))


@pytest.mark.parametrize("size", [(320, 240), (1440, 1080), (1280, 720)])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_whole_arena_is_visible(size: tuple[int, int], count: int) -> None:
    arena = sim_world.Arena()
    hw, hd = arena.width_mm / 2, arena.depth_mm / 2
    box = np.array([[x, y, z] for x in (-hw, hw) for y in (-hd, hd) for z in (0, arena.wall_mm)])
    width, height = size
    for cam in sim_world.ring_of_cameras([f"cam{i}" for i in range(count)], width, height):
        px = cam.project(box)
        assert np.all((px >= 0) & (px < [width, height])), cam.name


def test_keypoints_project_inside_every_view(
    poses_120s: np.ndarray, ring4: list[CalibratedCamera]
) -> None:
    poses = poses_120s[::10]  # 10 Hz
    for cam in ring4:
        px = cam.project(poses.reshape(-1, 3)).reshape(len(poses), K, 2)
        inside = np.all((px >= 0) & (px < [cam.width, cam.height]), axis=(1, 2))
        assert inside.mean() > 0.95, cam.name


# -- rendering ------------------------------------------------------------------------


def test_render_is_deterministic_and_in_place(
    renderers: list[sim_world.ViewRenderer], motion: sim_world.AnimalMotion
) -> None:
    renderer = renderers[0]
    pose = motion.pose_at(2.5)
    out = np.zeros((240, 320), np.uint8)
    address = out.__array_interface__["data"][0]
    keypoints = renderer.render(pose, out)
    assert out.__array_interface__["data"][0] == address
    assert keypoints.shape == (K, 2) and keypoints.dtype == np.float64
    np.testing.assert_allclose(keypoints, renderer.camera.project(pose), atol=1e-6)
    assert np.count_nonzero(out != renderer.background) > 200  # the animal was drawn
    again = np.full_like(out, 7)
    renderer.render(pose, again)
    np.testing.assert_array_equal(again, out)
    # Another renderer of the same camera (another process) draws the same bytes.
    twin = sim_world.ViewRenderer(renderer.camera)
    third = np.empty_like(out)
    twin.render(sim_world.AnimalMotion(seed=0).pose_at(2.5), third)
    np.testing.assert_array_equal(third, out)


def test_keypoints_land_on_the_drawn_animal(
    renderers: list[sim_world.ViewRenderer], motion: sim_world.AnimalMotion
) -> None:
    out = np.empty((240, 320), np.uint8)
    changed = []
    for t in np.arange(0.0, 60.0, 0.75):
        pose = motion.pose_at(t)
        for renderer in renderers:
            keypoints = renderer.render(pose, out)
            diff = np.abs(out.astype(np.int16) - renderer.background)
            cols, rows = np.rint(keypoints).astype(int).T
            assert np.all((cols >= 1) & (cols < 319) & (rows >= 1) & (rows < 239))
            changed.append(diff[rows, cols] > 8)
            # Every keypoint is on the drawing: its pixel or a neighbour was painted.
            near = np.max(
                [diff[rows + dy, cols + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0
            )
            assert np.all(near > 8), (t, renderer.camera.name, near)
    # ... and almost always right under it (a thin edge of another part may cover it).
    assert np.mean(changed) > 0.98


def test_colour_render(
    ring4: list[CalibratedCamera], motion: sim_world.AnimalMotion
) -> None:
    renderer = sim_world.ViewRenderer(ring4[3], channels=3)
    out = np.empty((240, 320, 3), np.uint8)
    pose = motion.pose_at(7.0)
    keypoints = renderer.render(pose, out)
    ij = np.rint(keypoints).astype(int)
    diff = np.abs(out[ij[:, 1], ij[:, 0]].astype(int) - renderer.background[ij[:, 1], ij[:, 0]])
    assert np.all(diff.max(axis=1) > 8)


def test_render_checks_its_buffer(renderers: list[sim_world.ViewRenderer]) -> None:
    pose = sim_world.AnimalMotion().pose_at(0.0)
    with pytest.raises(ValueError, match="expected out of shape"):
        renderers[0].render(pose, np.empty((240, 320, 3), np.uint8))
    with pytest.raises(ValueError, match="expected out of shape"):
        renderers[0].render(pose, np.empty((240, 640), np.uint8)[:, ::2])
    with pytest.raises(ValueError, match="pose_mm"):
        renderers[0].render(pose[:5], np.empty((240, 320), np.uint8))


def test_points_behind_the_camera_do_not_crash(renderers: list[sim_world.ViewRenderer]) -> None:
    renderer = renderers[0]
    cam = renderer.camera
    pose = sim_world.AnimalMotion().pose_at(0.0)
    behind = cam.center_mm + (pose - pose.mean(axis=0)) - 300.0 * cam.rotation[2]
    out = np.empty((240, 320), np.uint8)
    keypoints = renderer.render(behind, out)
    assert np.all(np.isnan(keypoints))
    np.testing.assert_array_equal(out, renderer.background)
    straddling = cam.center_mm + (pose - pose.mean(axis=0)) * 4.0
    renderer.render(straddling, out)  # partly behind, partly in front


def test_preview() -> None:
    images = sim_world.preview(camera_count=2, width=160, height=120, t_s=3.0)
    assert len(images) == 2
    for image in images:
        assert image.shape == (120, 160) and image.dtype == np.uint8
        assert image.std() > 5.0


def test_arena_and_renderer_validate_arguments(ring4: list[CalibratedCamera]) -> None:
    with pytest.raises(ValueError, match="width_mm"):
        sim_world.Arena(width_mm=100.0)
    with pytest.raises(ValueError, match="channels"):
        sim_world.ViewRenderer(ring4[0], channels=2)
    with pytest.raises(ValueError, match="radius_mm"):
        sim_world.ring_of_cameras(["a"], 64, 48, radius_mm=100.0)
    assert math.isclose(sim_world.Arena().wall_mm, 300.0)
