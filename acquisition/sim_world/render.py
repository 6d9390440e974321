"""Rendering of the simulated scene as one virtual camera sees it.

:class:`ViewRenderer` ray-casts the empty arena (textured floor, room floor, clear walls,
vignetting) once per camera, then per frame copies it into the caller's buffer and draws the
rat of :mod:`.body` with OpenCV primitives back to front, returning the ground-truth keypoints
(the exact distorted projection of the pose). :func:`preview` renders a few frames of the
default scene for eyeballing.
"""

from __future__ import annotations

import logging
import math
import time

import cv2
import numpy as np

from rigstream.acquisition.sim_world.body import _KP, _N_KP, _PAW_INDEX, Arena
from rigstream.acquisition.sim_world.cameras import ring_of_cameras
from rigstream.acquisition.sim_world.motion import AnimalMotion
from rigstream.calibration import CalibratedCamera

logger = logging.getLogger(__name__)

# Colours: (mono8 grey level, BGR). The animal is a dark (hooded) rat on light bedding (grey
# 130-210); ears and paws are brighter than any floor pixel, so every keypoint stands out.
_PALETTE: dict[str, tuple[int, tuple[int, int, int]]] = {
    "body": (48, (38, 48, 62)),
    "body_light": (68, (54, 68, 88)),
    "head": (56, (44, 55, 70)),
    "head_light": (76, (62, 76, 96)),
    "ear": (228, (200, 208, 252)),
    "paw": (248, (228, 234, 255)),
    "leg": (70, (58, 68, 86)),
    "tail": (98, (96, 104, 132)),
    "eye": (12, (10, 10, 12)),
    "shadow": (118, (112, 118, 120)),
    "wall_top": (238, (236, 236, 232)),
    "wall_edge": (210, (205, 205, 200)),
}
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT
_NEAR_MM = 30.0  # primitives closer to the camera than this are not drawn

# Spine samples (keypoint a, keypoint b, fraction, radius mm), tail base to snout: the body
# is drawn as overlapping spheres along them, the head as a tapering run of smaller ones.
_SPINE: list[tuple[str, str, float, float]] = []
for _a, _b, _r0, _r1, _count in (
    ("tail_base", "spine_mid", 26.0, 35.0, 3),
    ("spine_mid", "neck", 35.0, 23.0, 3),
    ("neck", "snout", 21.0, 7.0, 4),
):
    for _j in range(_count):
        _f = _j / _count
        _SPINE.append((_a, _b, _f, _r0 + (_r1 - _r0) * _f))
_SPINE.append(("snout", "snout", 0.0, 6.0))
_SPINE_R_MM = np.array([s[3] for s in _SPINE])
_N_SPINE = len(_SPINE)
_N_TRUNK = 6  # spine samples [0, 6) are the trunk, the rest the head
_SHADOW_N = 16
_SHADOW_ANGLE = np.linspace(0.0, 2 * np.pi, _SHADOW_N, endpoint=False)
_SHADOW_COS, _SHADOW_SIN = np.cos(_SHADOW_ANGLE), np.sin(_SHADOW_ANGLE)

# Layout of the per-render 3D point batch (rows of ViewRenderer._points).
_P_KP = 0  # keypoints
_P_SPINE = _P_KP + _N_KP  # sphere centres
_P_KNEE = _P_SPINE + _N_SPINE  # upper ends of the legs, one per paw
_P_EYE = _P_KNEE + 4  # left, right eye
_P_TAIL0 = _P_EYE + 2  # where the tail leaves the body
_P_LIGHT = _P_TAIL0 + 1  # highlight centres, one per sphere
_P_SHADOW = _P_LIGHT + _N_SPINE  # floor polygon
_P_TOTAL = _P_SHADOW + _SHADOW_N


def _blend_matrix() -> np.ndarray:
    """(_P_LIGHT, K) weights: rows [0, _P_LIGHT) of the point batch as linear combinations
    of the keypoints (pose_mm (K, 3) -> W @ pose_mm)."""
    w = np.zeros((_P_LIGHT, _N_KP))
    w[_P_KP:_P_SPINE] = np.eye(_N_KP)
    for i, (a, b, f, _) in enumerate(_SPINE):
        w[_P_SPINE + i, _KP[a]] += 1.0 - f
        w[_P_SPINE + i, _KP[b]] += f
    # Legs reach 45% of the way from each paw to the shoulders / the hips.
    for j, paw in enumerate(_PAW_INDEX):
        w[_P_KNEE + j, paw] += 0.55
        joint = ("neck", "spine_mid") if j < 2 else ("tail_base", "spine_mid")
        for name in joint:
            w[_P_KNEE + j, _KP[name]] += 0.45 * 0.5
    # Eyes: halfway from the snout to the ears' midpoint, 10 mm out to each side (the ears
    # are 28 mm apart in every pose), 3 mm down (added in _fill_points).
    for j, sign in enumerate((1.0, -1.0)):
        row = w[_P_EYE + j]
        row[_KP["snout"]] += 0.5
        row[_KP["left_ear"]] += 0.25 + sign * 10.0 / 28.0
        row[_KP["right_ear"]] += 0.25 - sign * 10.0 / 28.0
    w[_P_TAIL0, _KP["tail_base"]] = 0.7
    w[_P_TAIL0, _KP["tail_mid"]] = 0.3
    return w


_BLEND = _blend_matrix()
# Highlight offset from each sphere centre, in units of its radius: up (light from above).
_LIGHT_UP_MM = np.outer(_SPINE_R_MM, [0.0, 0.0, 0.35])


def _value_noise(rng: np.random.Generator, size: int, blur_px: float) -> np.ndarray:
    """(size, size) float32 smooth noise, zero mean, unit std, tileable-ish."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    pad = math.ceil(4 * blur_px)
    noise = cv2.GaussianBlur(np.pad(noise, pad, mode="wrap"), (0, 0), blur_px)[pad:-pad, pad:-pad]
    noise -= noise.mean()
    noise /= max(float(noise.std()), 1e-6)
    return noise


def _sample_tiled(
    noise: np.ndarray, x_mm: np.ndarray, y_mm: np.ndarray, cell_mm: float
) -> np.ndarray:
    """Sample a tiled noise image at world points (bilinear). Returns float32, shaped like
    ``x_mm``."""
    size = noise.shape[0]
    map_x = np.mod(x_mm / cell_mm, size).astype(np.float32)
    map_y = np.mod(y_mm / cell_mm, size).astype(np.float32)
    return cv2.remap(noise, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


class ViewRenderer:
    """Renders the arena and the animal as one virtual camera sees them.

    The background (floor, room, wall edges, vignetting) is ray-cast once in the
    constructor; :meth:`render` copies it into the caller's frame and draws the animal on
    top with OpenCV primitives, sorted back to front. Same pose, same bytes.

    ``seed`` picks the floor texture. :meth:`render` reuses a small internal point buffer,
    so use one renderer per thread.
    """

    def __init__(
        self, camera: CalibratedCamera, arena: Arena = Arena(), channels: int = 1, seed: int = 0  # noqa: B008 (Arena is frozen)
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"ViewRenderer: expected channels 1 or 3, got {channels!r}")
        self.camera = camera
        self.arena = arena
        self.channels = channels
        self.shape: tuple[int, ...] = (
            (camera.height, camera.width) if channels == 1 else (camera.height, camera.width, 3)
        )
        self._rot = camera.rotation
        self._center_mm = camera.center_mm
        self._focal_px = float(np.sqrt(camera.matrix[0, 0] * camera.matrix[1, 1]))
        self._colors = {
            name: ((grey,) if channels == 1 else tuple(bgr))
            for name, (grey, bgr) in _PALETTE.items()
        }
        self._points = np.zeros((_P_TOTAL, 3))  # per-render 3D point batch, mm
        started = time.perf_counter()
        self._background = self._build_background(seed)
        self._background.setflags(write=False)
        logger.debug(
            "background for %s (%dx%d) built in %.0f ms",
            camera.name,
            camera.width,
            camera.height,
            1e3 * (time.perf_counter() - started),
        )

    @property
    def background(self) -> np.ndarray:
        """The empty scene: (H, W) or (H, W, 3) uint8, read-only."""
        return self._background

    # -- background ---------------------------------------------------------------

    def _build_background(self, seed: int) -> np.ndarray:
        cam, arena = self.camera, self.arena
        h, w = cam.height, cam.width
        rng = np.random.default_rng([0xB6, int(seed) % (1 << 64)])
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        pix = np.stack([u, v], axis=-1).reshape(-1, 1, 2)
        norm = cv2.undistortPoints(pix, cam.matrix, cam.dist).reshape(h, w, 2)
        del pix, u, v
        # Ray directions in the world, one per pixel: R^T (xn, yn, 1). float32 from here on
        # (Python-float coefficients keep it so): ample for a texture, and twice as fast.
        xn, yn = norm[..., 0].astype(np.float32), norm[..., 1].astype(np.float32)
        del norm
        rt = self._rot.T.tolist()
        dx = rt[0][0] * xn + rt[0][1] * yn + rt[0][2]
        dy = rt[1][0] * xn + rt[1][1] * yn + rt[1][2]
        dz = rt[2][0] * xn + rt[2][1] * yn + rt[2][2]
        del xn, yn
        cx, cy, cz = self._center_mm.tolist()
        hits_floor = dz < -1e-9
        lam = np.where(hits_floor, -cz / np.where(hits_floor, dz, -1.0), np.inf)
        fx = np.where(hits_floor, cx + lam * dx, 0.0)
        fy = np.where(hits_floor, cy + lam * dy, 0.0)
        half_w, half_d = 0.5 * arena.width_mm, 0.5 * arena.depth_mm
        in_arena = hits_floor & (np.abs(fx) <= half_w) & (np.abs(fy) <= half_d)
        room = hits_floor & ~in_arena

        # Bedding texture: fine grain plus larger blotches; a 100 mm grid on the floor.
        fine = _sample_tiled(_value_noise(rng, 256, 1.2), fx, fy, 2.0)
        coarse = _sample_tiled(_value_noise(rng, 128, 2.0), fx, fy, 12.0)
        ray_len = np.sqrt(dx * dx + dy * dy + dz * dz)
        footprint_mm = np.where(
            hits_floor, lam * ray_len / self._focal_px / np.maximum(-dz / ray_len, 0.05), 1.0
        )
        grain = np.clip(3.0 / footprint_mm, 0.25, 1.0)  # fine grain fades when unresolved
        sigma = np.maximum(1.5, 0.6 * footprint_mm)
        gx = np.abs(np.mod(fx + 50.0, 100.0) - 50.0)
        gy = np.abs(np.mod(fy + 50.0, 100.0) - 50.0)
        line = np.exp(-0.5 * (np.minimum(gx, gy) / sigma) ** 2) * np.clip(2.5 / sigma, 0.3, 1.0)
        floor = 162.0 + 8.0 * grain * fine + 6.0 * coarse - 28.0 * line
        room_grey = 120.0 + 6.0 * coarse + 3.0 * grain * fine
        grey = np.where(in_arena, floor, np.where(room, room_grey, 104.0))

        # Clear walls: each wall a ray passes through brightens it slightly (glare).
        for axis, const, other_half in (
            (0, half_w, half_d),
            (0, -half_w, half_d),
            (1, half_d, half_w),
            (1, -half_d, half_w),
        ):
            d_axis = dx if axis == 0 else dy
            d_other = dy if axis == 0 else dx
            c_axis, c_other = (cx, cy) if axis == 0 else (cy, cx)
            with np.errstate(divide="ignore", invalid="ignore"):
                lw = (const - c_axis) / d_axis
            z = cz + lw * dz
            o = c_other + lw * d_other
            through = (lw > 0) & (lw < lam) & (z >= 0) & (z <= arena.wall_mm)
            through &= np.abs(o) <= other_half
            grey = np.where(through, grey * 1.03 + 3.0, grey)

        # Lens vignetting.
        k = cam.matrix
        rx = (np.arange(w) - k[0, 2]) / (0.5 * w)
        ry = (np.arange(h) - k[1, 2]) / (0.5 * w)
        grey *= 1.0 - 0.12 * (rx[None, :] ** 2 + ry[:, None] ** 2)

        if self.channels == 1:
            image = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        else:
            tint = np.where(
                in_arena[..., None],
                np.array([0.93, 0.98, 1.0]),
                np.where(room[..., None], np.array([1.0, 0.97, 0.94]), np.array([0.9, 0.9, 0.9])),
            )
            image = np.clip(np.rint(grey[..., None] * tint), 0, 255).astype(np.uint8)
        self._draw_walls(image)
        return np.ascontiguousarray(image)

    def _draw_walls(self, image: np.ndarray) -> None:
        """Wall edges (top rim, corner posts, floor seam) as distorted polylines."""
        half_w, half_d, top = (
            0.5 * self.arena.width_mm,
            0.5 * self.arena.depth_mm,
            self.arena.wall_mm,
        )
        corners = [(half_w, half_d), (-half_w, half_d), (-half_w, -half_d), (half_w, -half_d)]
        thick = max(1, round(self.camera.width / 500))
        samples = np.linspace(0.0, 1.0, 48)[:, None]
        for i, (x0, y0) in enumerate(corners):
            x1, y1 = corners[(i + 1) % 4]
            edges = [
                ((x0, y0, top), (x1, y1, top), "wall_top", thick + 1),
                ((x0, y0, 0.0), (x1, y1, 0.0), "wall_edge", thick),
                ((x0, y0, 0.0), (x0, y0, top), "wall_edge", thick),
            ]
            for a, b, color, t in edges:
                pts = np.array(a) + samples * (np.array(b) - np.array(a))
                px = self.camera.project(pts)
                ok = np.isfinite(px[:, 0])
                if ok.sum() < 2:
                    continue
                poly = np.rint(np.clip(px[ok], -1e5, 1e5) * _ONE).astype(np.int32)
                cv2.polylines(image, [poly], False, self._colors[color], t, cv2.LINE_AA, _SHIFT)

    # -- per frame ----------------------------------------------------------------

    def render(self, pose_mm: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Draw the scene with the animal at ``pose_mm`` into ``out``.

        ``pose_mm``: (K, 3) float mm, world frame, :data:`KEYPOINTS` order.
        ``out``: preallocated C-contiguous uint8 frame, (H, W) for 1 channel or (H, W, 3).
        Returns (K, 2) float64 px, the ground-truth keypoints (distorted projection; NaN for
        a point at or behind the camera plane).
        """
        if out.shape != self.shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(
                f"ViewRenderer[{self.camera.name}].render: expected out of shape {self.shape}, "
                f"uint8, C-contiguous; got shape {out.shape}, {out.dtype}, "
                f"contiguous={out.flags.c_contiguous}"
            )
        pose = np.asarray(pose_mm, dtype=np.float64)
        if pose.shape != (_N_KP, 3):
            raise ValueError(
                f"ViewRenderer[{self.camera.name}].render: expected pose_mm of shape "
                f"({_N_KP}, 3), got {pose.shape}"
            )
        np.copyto(out, self._background)
        pts = self._fill_points(pose)
        cam = self.camera
        depth = pts @ self._rot[2] + cam.tvec[2]
        px = cv2.projectPoints(pts, cam.rvec, cam.tvec, cam.matrix, cam.dist)[0].reshape(-1, 2)
        keypoints = px[:_N_KP].astype(np.float64)
        keypoints[depth[:_N_KP] <= 0.0] = np.nan
        self._draw_animal(out, px, depth)
        return keypoints

    def _fill_points(self, pose: np.ndarray) -> np.ndarray:
        """All 3D points one frame needs, in one (P, 3) float64 mm batch (rows laid out by
        the ``_P_*`` offsets), so that one projection call serves them all."""
        p = self._points
        np.matmul(_BLEND, pose, out=p[:_P_LIGHT])
        p[_P_EYE:_P_TAIL0, 2] -= 3.0
        # Highlights: up and towards the camera from each sphere centre.
        spine = p[_P_SPINE:_P_KNEE]
        to_cam = self._center_mm - pose[4]
        to_cam *= 0.3 / math.sqrt(float(to_cam @ to_cam))
        np.add(spine, _LIGHT_UP_MM, out=p[_P_LIGHT:_P_SHADOW])
        p[_P_LIGHT:_P_SHADOW] += np.outer(_SPINE_R_MM, to_cam)
        # Shadow: an ellipse on the floor under the body.
        hx, hy = pose[0, 0], pose[0, 1]
        tx, ty = pose[5, 0], pose[5, 1]
        ax, ay = hx - tx, hy - ty
        length = math.hypot(ax, ay)
        if length > 1e-6:
            ax, ay = ax / length, ay / length
        else:
            ax, ay = 1.0, 0.0
        along = (0.5 * length + 28.0) * _SHADOW_COS
        across = 40.0 * _SHADOW_SIN
        p[_P_SHADOW:, 0] = 0.5 * (hx + tx) + along * ax - across * ay
        p[_P_SHADOW:, 1] = 0.5 * (hy + ty) + along * ay + across * ax
        p[_P_SHADOW:, 2] = 0.5
        return p

    def _draw_animal(self, out: np.ndarray, px: np.ndarray, depth: np.ndarray) -> None:
        """Draw the animal from the projected batch: ``px`` (P, 2) px, ``depth`` (P,) mm.

        Painter's order: shadow; legs and tail behind the body; trunk and head (the farther
        first), each as spheres then highlights; ears and visible eyes; legs and tail in
        front of the body.
        """
        colors = self._colors
        aa = cv2.LINE_AA
        zs = depth.tolist()
        if min(zs[_P_KP:_P_SHADOW]) <= _NEAR_MM:
            logger.debug("animal too close to camera %s: not drawn", self.camera.name)
            return
        fixed = np.rint(np.clip(px, -1e5, 1e5) * _ONE).astype(np.int32)
        xy = fixed.tolist()
        f_px = self._focal_px
        scale = f_px * _ONE

        if min(zs[_P_SHADOW:]) > _NEAR_MM:
            cv2.fillPoly(out, [fixed[_P_SHADOW:]], colors["shadow"], aa, _SHIFT)

        # Limbs: (depth, kind, index); kind 0 = leg + paw, 1 = tail segment.
        limbs = [(zs[8 + j], 0, j) for j in range(4)]
        limbs.append((0.5 * (zs[5] + zs[6]), 1, 0))
        limbs.append((0.5 * (zs[6] + zs[7]), 1, 1))
        limbs.sort(reverse=True)
        body_z = zs[4]
        back = [limb for limb in limbs if limb[0] > body_z]
        front = [limb for limb in limbs if limb[0] <= body_z]

        def draw_limbs(items: list[tuple[float, int, int]]) -> None:
            for _, kind, j in items:
                if kind == 0:
                    paw = 8 + j
                    z_paw = zs[paw]
                    thick = max(round(f_px * 8.0 / z_paw), 2)
                    cv2.line(out, xy[_P_KNEE + j], xy[paw], colors["leg"], thick, aa, _SHIFT)
                    radius = max(int(scale * 7.0 / z_paw), 2 * _ONE)
                    cv2.circle(out, xy[paw], radius, colors["paw"], -1, aa, _SHIFT)
                elif j == 0:
                    thick = max(round(f_px * 9.0 / zs[5]), 2)
                    cv2.line(out, xy[_P_TAIL0], xy[6], colors["tail"], thick, aa, _SHIFT)
                else:
                    thick = max(round(f_px * 5.0 / zs[7]), 2)
                    cv2.line(out, xy[6], xy[7], colors["tail"], thick, aa, _SHIFT)

        # Sphere radii (1/16 px) and highlight ridge widths (px), for the whole spine at once.
        spine_z = depth[_P_SPINE:_P_KNEE]
        sphere_r = np.maximum((scale * _SPINE_R_MM / spine_z).astype(np.int64), _ONE).tolist()
        light_z = depth[_P_LIGHT:_P_SHADOW]
        ridge = (0.6 * f_px) * (_SPINE_R_MM[:-1] + _SPINE_R_MM[1:]) / (light_z[:-1] + light_z[1:])
        ridge_w = np.maximum(np.rint(ridge), 1).astype(np.int64).tolist()

        def draw_spheres(first: int, stop: int, base: tuple, light: tuple) -> None:
            # Spheres far to near, then a highlight ridge along their lit tops.
            for i in sorted(range(first, stop), key=lambda i: -zs[_P_SPINE + i]):
                cv2.circle(out, xy[_P_SPINE + i], sphere_r[i], base, -1, aa, _SHIFT)
            for i in range(first, stop - 1):
                j = _P_LIGHT + i
                cv2.line(out, xy[j], xy[j + 1], light, ridge_w[i], cv2.LINE_8, _SHIFT)

        def draw_head() -> None:
            draw_spheres(_N_TRUNK, _N_SPINE, colors["head"], colors["head_light"])
            for ear in (1, 2):
                radius = max(int(scale * 9.0 / zs[ear]), 2 * _ONE)
                cv2.circle(out, xy[ear], radius, colors["ear"], -1, aa, _SHIFT)
            head_z = zs[_P_SPINE + _N_TRUNK + 2]
            for eye in (_P_EYE, _P_EYE + 1):
                if zs[eye] < head_z:
                    radius = max(int(scale * 2.5 / zs[eye]), _ONE)
                    cv2.circle(out, xy[eye], radius, colors["eye"], -1, aa, _SHIFT)

        draw_limbs(back)
        if zs[3] < body_z:  # head nearer than the trunk: trunk first
            draw_spheres(0, _N_TRUNK, colors["body"], colors["body_light"])
            draw_head()
        else:
            draw_head()
            draw_spheres(0, _N_TRUNK, colors["body"], colors["body_light"])
        draw_limbs(front)


def preview(
    camera_count: int = 2, width: int = 640, height: int = 480, t_s: float = 1.0
) -> list[np.ndarray]:
    """Mono8 frames of the default scene at ``t_s`` from a ring of ``camera_count`` cameras.
    Returns a list of (height, width) uint8 images, for eyeballing the simulation."""
    names = [f"cam{i}" for i in range(camera_count)]
    pose = AnimalMotion().pose_at(t_s)
    images = []
    for cam in ring_of_cameras(names, width, height):
        image = np.empty((height, width), dtype=np.uint8)
        ViewRenderer(cam).render(pose, image)
        images.append(image)
    return images
