"""Camera frame -> model input, and model-input keypoints -> full-frame pixels.

Each camera view has a fixed crop (x, y, width, height; default the whole frame) and a resize
to the model's input size. The crop's aspect ratio must match the model's within 2%, so
keypoints are not distorted. Coordinates: pixel centres at integer coordinates, so a point u
in the model input maps back to ``x = x0 + (u + 0.5) / scale - 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


class ViewError(ValueError):
    """A camera view the model cannot take; the message names the camera and the sizes."""


@dataclass(frozen=True)
class ViewTransform:
    camera: str
    frame_wh: tuple[int, int]
    crop: tuple[int, int, int, int]
    """x, y, width, height in frame pixels."""
    input_wh: tuple[int, int]

    @classmethod
    def make(cls, camera: str, frame_wh: tuple[int, int], input_wh: tuple[int, int],
             crop: tuple[int, int, int, int] | None = None) -> ViewTransform:
        fw, fh = frame_wh
        x, y, w, h = crop if crop is not None else (0, 0, fw, fh)
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > fw or y + h > fh:
            raise ViewError(f"camera {camera}: crop {list(crop or ())} does not fit its {fw}x{fh} frame")
        iw, ih = input_wh
        if abs((w / h) / (iw / ih) - 1) > 0.02:
            raise ViewError(
                f"camera {camera}: the model takes {iw}x{ih} images (aspect {iw / ih:.3f}) but the "
                f"camera gives {w}x{h}{' after its crop' if crop else ''} (aspect {w / h:.3f}); "
                f"set pose.crop for this camera to a region with the model's aspect ratio")
        return cls(camera, (fw, fh), (x, y, w, h), (iw, ih))

    @property
    def scale(self) -> tuple[float, float]:
        return self.input_wh[0] / self.crop[2], self.input_wh[1] / self.crop[3]

    @property
    def identity(self) -> bool:
        return self.crop == (0, 0, *self.frame_wh) and self.input_wh == self.frame_wh

    def apply(self, frame: np.ndarray, out: np.ndarray) -> None:
        """Write the frame's crop, resized, as float32 into ``out`` (C, H, W) of the batch.

        Mono frames feed a 3-channel model as gray in every channel; RGB frames feed a mono
        model as their luma."""
        x, y, w, h = self.crop
        view = frame[y:y + h, x:x + w]
        channels = out.shape[0]
        if view.ndim == 3 and channels == 1:
            view = cv2.cvtColor(view, cv2.COLOR_RGB2GRAY)
        if not self.identity:
            view = cv2.resize(view, self.input_wh, interpolation=cv2.INTER_AREA)
        if view.ndim == 2:
            out[:] = view  # broadcasts over 1 or 3 channels
        else:
            out[:] = view.transpose(2, 0, 1)

    def to_frame(self, keypoints: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(K, 3) x, y, confidence in model-input pixels -> frame pixels (confidence kept)."""
        out = np.array(keypoints, dtype=np.float32, copy=True) if out is None else out
        if out is not keypoints:
            out[...] = keypoints
        sx, sy = self.scale
        x0, y0 = self.crop[:2]
        out[..., 0] = x0 + (keypoints[..., 0] + 0.5) / sx - 0.5
        out[..., 1] = y0 + (keypoints[..., 1] + 0.5) / sy - 0.5
        return out

    def to_input(self, keypoints_xy: np.ndarray) -> np.ndarray:
        """(…, 2) frame pixels -> model-input pixels (the inverse of :meth:`to_frame`)."""
        sx, sy = self.scale
        x0, y0 = self.crop[:2]
        out = np.empty_like(keypoints_xy, dtype=np.float64)
        out[..., 0] = (keypoints_xy[..., 0] - x0 + 0.5) * sx - 0.5
        out[..., 1] = (keypoints_xy[..., 1] - y0 + 0.5) * sy - 0.5
        return out
