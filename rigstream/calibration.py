"""Calibrated cameras and the calibration file every 3D step reads.

A :class:`Calibration` is an ordered set of :class:`CalibratedCamera` (pinhole + OpenCV
distortion, world -> camera extrinsics) in aniposelib's TOML layout, so anipose,
sleap-anipose and rigstream read each other's files::

    [cam_0]
    name = "back"
    size = [1280, 1024]                 # width, height, px
    matrix = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    distortions = [k1, k2, p1, p2, k3]
    rotation = [rx, ry, rz]             # Rodrigues vector, world -> camera
    translation = [tx, ty, tz]          # world -> camera, calibration units (mm for our boards)

    [metadata]
    ...

Lives in the core package because the simulated cameras (acquisition), triangulation
(inference) and the session all read it. Only numpy, OpenCV and the standard library.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tomllib

from rigstream.config import InputError

DIST_LENGTHS = (4, 5, 8, 12, 14)
"""Distortion vector lengths OpenCV's standard (non-fisheye) model accepts."""


UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)
"""OpenCV's default stops after 5 iterations, which leaves up to ~0.05 px of distortion in
strongly distorted corners (k1 = -0.29 on a 1280 px sensor); iterate to convergence."""


class CalibrationError(InputError):
    """A calibration file or camera that cannot be used, with what was wrong and where."""


def _frozen_array(value: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A read-only float64 copy of ``value``; vectors may come as (n,), (n, 1) or (1, n)."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{where}: expected numbers of shape {shape}, got {value!r}") from None
    if len(shape) == 1 and arr.size == shape[0]:
        arr = arr.reshape(shape)
    if arr.shape != shape or not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{where}: expected finite values of shape {shape}, got {np.shape(value)}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class CalibratedCamera:
    """A calibrated pinhole camera with OpenCV distortion (the aniposelib convention)."""

    name: str
    width: int
    """Image width, px."""
    height: int
    """Image height, px."""
    matrix: np.ndarray = field(repr=False)
    """(3, 3) float64 intrinsics, px."""
    dist: np.ndarray = field(repr=False)
    """(D,) float64 OpenCV distortion k1, k2, p1, p2[, k3[, k4, k5, k6[, ...]]], D in DIST_LENGTHS."""
    rvec: np.ndarray = field(repr=False)
    """(3,) float64 Rodrigues rotation, world -> camera."""
    tvec: np.ndarray = field(repr=False)
    """(3,) float64 translation, world -> camera, calibration units (mm)."""

    def __post_init__(self) -> None:
        where = f"camera {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise CalibrationError(f"camera name: expected a non-empty string, got {self.name!r}")
        if not (isinstance(self.width, int) and isinstance(self.height, int)) or min(
            self.width, self.height
        ) <= 0:
            raise CalibrationError(
                f"{where}.size: expected two positive integers, got {self.width}x{self.height}"
            )
        object.__setattr__(self, "matrix", _frozen_array(self.matrix, (3, 3), f"{where}.matrix"))
        dist = np.ravel(np.array(self.dist, dtype=np.float64))
        if dist.size not in DIST_LENGTHS:
            raise CalibrationError(
                f"{where}.distortions: expected {', '.join(map(str, DIST_LENGTHS))} coefficients "
                f"(OpenCV's model), got {dist.size}"
            )
        object.__setattr__(self, "dist", _frozen_array(dist, (dist.size,), f"{where}.distortions"))
        object.__setattr__(self, "rvec", _frozen_array(self.rvec, (3,), f"{where}.rotation"))
        object.__setattr__(self, "tvec", _frozen_array(self.tvec, (3,), f"{where}.translation"))
        rot = cv2.Rodrigues(self.rvec)[0]
        rot.setflags(write=False)
        object.__setattr__(self, "_rotation", rot)
        ext = np.hstack([rot, self.tvec[:, None]])
        ext.setflags(write=False)
        object.__setattr__(self, "_extrinsics", ext)

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) float64 rotation matrix, world -> camera."""
        return self._rotation  # type: ignore[attr-defined]

    @property
    def extrinsics(self) -> np.ndarray:
        """(3, 4) float64 ``[R | t]``, world -> camera (the projection in normalized coordinates)."""
        return self._extrinsics  # type: ignore[attr-defined]

    @property
    def center_mm(self) -> np.ndarray:
        """(3,) float64 camera centre in the world frame, calibration units."""
        return -self.rotation.T @ self.tvec

    def project(self, points_mm: np.ndarray) -> np.ndarray:
        """Project world points. ``points_mm``: (N, 3) float. Returns (N, 2) float64 px,
        distorted (where the camera sees them). Points at or behind the camera plane, and
        non-finite points, are NaN.
        """
        pts = np.array(points_mm, dtype=np.float64).reshape(-1, 3)
        if pts.shape[0] == 0:
            return np.empty((0, 2))
        bad = ~np.all(np.isfinite(pts), axis=1)
        pts[bad] = 0.0
        px = cv2.projectPoints(pts, self.rvec, self.tvec, self.matrix, self.dist)[0]
        px = px.reshape(-1, 2).astype(np.float64)
        depth = pts @ self.rotation[2] + self.tvec[2]
        px[(depth <= 0.0) | bad] = np.nan
        return px

    def undistort(self, points_px: np.ndarray) -> np.ndarray:
        """Pixel coordinates -> normalized image coordinates (x/z, y/z), distortion removed.

        ``points_px``: (..., 2) float px; NaN rows stay NaN. Returns (..., 2) float64.
        """
        pts = np.asarray(points_px, dtype=np.float64)
        flat = pts.reshape(-1, 2)
        out = np.full(flat.shape, np.nan)
        ok = np.all(np.isfinite(flat), axis=1)
        if ok.any():
            out[ok] = cv2.undistortPoints(
                np.ascontiguousarray(flat[ok]).reshape(-1, 1, 2), self.matrix, self.dist, None, None,
                None, UNDISTORT_CRITERIA,
            ).reshape(-1, 2)
        return out.reshape(pts.shape)

    def to_aniposelib_dict(self) -> dict[str, Any]:
        """The camera as an aniposelib ``Camera.get_dict()`` entry (a TOML-able dict)."""
        return {
            "name": self.name,
            "size": [int(self.width), int(self.height)],
            "matrix": self.matrix.tolist(),
            "distortions": self.dist.tolist(),
            "rotation": self.rvec.tolist(),
            "translation": self.tvec.tolist(),
        }

    @classmethod
    def from_aniposelib_dict(cls, entry: dict[str, Any], where: str = "camera") -> CalibratedCamera:
        """Read one ``[cam_i]`` table of an aniposelib calibration file."""
        if not isinstance(entry, dict):
            raise CalibrationError(f"{where}: expected a table, got {type(entry).__name__}")
        if entry.get("fisheye"):
            raise CalibrationError(f"{where}: fisheye cameras are not supported (OpenCV standard model only)")
        missing = [k for k in ("name", "size", "matrix", "distortions", "rotation", "translation")
                   if k not in entry]
        if missing:
            raise CalibrationError(f"{where}: missing {', '.join(missing)}")
        size = entry["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise CalibrationError(f"{where}.size: expected [width, height] integers, got {size!r}")
        name = entry["name"]
        if not isinstance(name, str):
            raise CalibrationError(f"{where}.name: expected a string, got {name!r}")
        try:
            return cls(name, int(size[0]), int(size[1]), entry["matrix"], entry["distortions"],
                       entry["rotation"], entry["translation"])
        except CalibrationError as exc:
            raise CalibrationError(f"{where}: {exc}") from None


@dataclass(frozen=True, eq=False)
class Calibration:
    """Ordered calibrated cameras plus free-form metadata (what made the file, errors)."""

    cameras: tuple[CalibratedCamera, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = "<calibration>"
    """Where it was read from, for messages."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))
        if not self.cameras:
            raise CalibrationError(f"{self.source}: no cameras")
        names = [c.name for c in self.cameras]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise CalibrationError(f"{self.source}: camera names repeated: {', '.join(dup)}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def camera(self, name: str) -> CalibratedCamera:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise CalibrationError(
            f"{self.source}: no camera named {name!r} (cameras: {', '.join(self.names)})"
        )

    def subset(self, names: Sequence[str]) -> Calibration:
        """The cameras named, in that order; an error lists every missing name."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise CalibrationError(
                f"{self.source}: no camera named {', '.join(map(repr, missing))} "
                f"(cameras: {', '.join(self.names)})"
            )
        return Calibration(tuple(self.camera(n) for n in names), dict(self.metadata), self.source)

    def for_rig_cameras(self, cameras: Sequence[Any]) -> Calibration:
        """The calibrated cameras of a rig's ``cameras`` (CameraConfig: name, width, height), in
        the rig's order; an error names any camera missing or calibrated at another size."""
        cal = self.subset([c.name for c in cameras])
        wrong = [f"{c.name} is {c.width}x{c.height} in the rig but {k.width}x{k.height} in the calibration"
                 for c, k in zip(cameras, cal.cameras, strict=True)
                 if (c.width, c.height) != (k.width, k.height)]
        if wrong:
            raise CalibrationError(f"{self.source}: {'; '.join(wrong)} (calibrate at the rig's "
                                   f"image size)")
        return cal

    # ---------------------------------------------------------------- reading and writing

    @classmethod
    def loads(cls, text: str, source: str = "<calibration>") -> Calibration:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CalibrationError(f"{source}: not valid TOML: {exc}") from None
        cams = []
        for key in sorted((k for k in doc if k.startswith("cam_")), key=_cam_order):
            cams.append(CalibratedCamera.from_aniposelib_dict(doc[key], f"{source} [{key}]"))
        if not cams:
            raise CalibrationError(
                f"{source}: no [cam_N] tables (expected an aniposelib calibration file)"
            )
        meta = doc.get("metadata", {})
        return cls(tuple(cams), meta if isinstance(meta, dict) else {}, source)

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise CalibrationError(f"{p}: cannot read calibration file: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CalibrationError(f"{p}: not a text (TOML) file") from None
        return cls.loads(text, str(p))

    def dumps(self) -> str:
        lines: list[str] = []
        for i, cam in enumerate(self.cameras):
            lines.append(f"[cam_{i}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in cam.to_aniposelib_dict().items())
            lines.append("")
        lines.append("[metadata]")
        lines.extend(_toml_table(self.metadata, "metadata"))
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write atomically (a temporary file renamed over ``path``)."""
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(self.dumps())
        tmp.replace(p)
        return p

    @classmethod
    def from_cameras(cls, cameras: Iterable[CalibratedCamera], **metadata: Any) -> Calibration:
        return cls(tuple(cameras), dict(metadata))


def _cam_order(key: str) -> tuple[int, str]:
    suffix = key[4:]
    return (int(suffix), key) if suffix.isdigit() else (1 << 30, key)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return repr(f)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, np.ndarray):
        return _toml_value(v.tolist())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise CalibrationError(f"cannot write {type(v).__name__} to a calibration file")


def _toml_table(table: dict[str, Any], prefix: str) -> list[str]:
    """Scalars and arrays of ``table`` first, then its sub-tables as ``[prefix.key]``."""
    lines = [f"{json.dumps(k) if not k.isidentifier() else k} = {_toml_value(v)}"
             for k, v in table.items() if not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            name = f"{prefix}.{k if k.isidentifier() else json.dumps(k)}"
            lines += ["", f"[{name}]", *_toml_table(v, name)]
    return lines
