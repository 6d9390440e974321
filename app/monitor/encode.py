"""JPEG encoding: a camera's frame as the image a tile shows, at most MAX_FPS new ones a second.

:func:`encode_frame` makes the JPEG of a :class:`~.state.ShownFrame` (8-bit, demosaiced,
downscaled to MAX_WIDTH_PX) with the headers that go with it, its keypoints scaled to the image.
:class:`FrameEncoder` keeps each camera's newest JPEG and shares it among every browser that
asks, encoding anew no sooner than 1 / MAX_FPS after the last, on a small thread pool off the
web server's event loop; a slow browser only asks less often, nothing queues for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import time
from dataclasses import dataclass

import numpy as np

from rigstream.app.monitor.state import MonitorState, ShownFrame
from rigstream.config import RigConfig

MAX_FPS = 15.0
"""New JPEGs encoded per camera and second, at most (however many browsers ask)."""
MAX_WIDTH_PX = 640
"""JPEGs wider than this are downscaled."""
JPEG_QUALITY = 80


@dataclass
class Encoded:
    """A JPEG of one frame, the headers it is served with, and when it was made (monotonic s)."""

    trigger_index: int
    pose_index: int | None
    jpeg: bytes
    headers: dict[str, str]
    t_encoded: float


def to_display(pixels: np.ndarray, pixel_format: str) -> np.ndarray:
    """8-bit grey or BGR for JPEG: uint16 scaled down, Bayer demosaiced, RGB reordered."""
    import cv2

    img = pixels
    if img.dtype != np.uint8:
        img = (img >> 8).astype(np.uint8)
    if pixel_format == "bayer_rg8" and img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_BayerBG2BGR)  # OpenCV's name for an RGGB sensor
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    return img


def encode_frame(shown: ShownFrame, pixel_format: str, max_width: int = MAX_WIDTH_PX,
                 quality: int = JPEG_QUALITY) -> Encoded:
    """JPEG of ``shown`` (downscaled to ``max_width``) and its headers, keypoints scaled to it."""
    import cv2

    img = to_display(shown.pixels, pixel_format)
    h, w = img.shape[:2]
    scale = min(1.0, max_width / w)
    if scale < 1.0:
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {shown.header.camera} frame {shown.header.frame_id}")
    head = shown.header
    headers = {
        "X-Camera": head.camera, "X-Trigger-Index": str(head.trigger_index),
        "X-T-Pi-Ns": str(head.t_pi_ns), "X-Frame-Size": f"{w}x{h}",
        "X-Image-Size": f"{img.shape[1]}x{img.shape[0]}",
    }
    if shown.pose_index is not None and shown.keypoints is not None:
        headers["X-Pose-Index"] = str(shown.pose_index)
        headers["X-Keypoints"] = json.dumps(
            [[round(x * scale, 1), round(y * scale, 1), round(c, 3)]
             if math.isfinite(x) and math.isfinite(y) else None for x, y, c in shown.keypoints],
            separators=(",", ":"))
    return Encoded(head.trigger_index, shown.pose_index, buf.tobytes(), headers, time.monotonic())


class FrameEncoder:
    """Each camera's newest JPEG, shared by the requests that ask for it (see the module)."""

    def __init__(self, state: MonitorState, rig: RigConfig) -> None:
        self.state = state
        self.rig = rig
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="monitor-jpeg")
        self._cache: dict[str, Encoded] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def newer_than(self, camera: str, after: int) -> Encoded | None:
        """The JPEG for a request: the cached one if it is newer than ``after`` and young,
        else a new encode no sooner than 1 / MAX_FPS after the last."""
        lock = self._locks.setdefault(camera, asyncio.Lock())
        async with lock:
            cached = self._cache.get(camera)
            interval = 1.0 / MAX_FPS
            if cached is not None:
                age = time.monotonic() - cached.t_encoded
                if cached.trigger_index > after and age < interval:
                    return cached
                if age < interval:
                    await asyncio.sleep(interval - age)
            shown = self.state.pick_frame(camera, after)
            if shown is None:
                return cached if cached is not None and cached.trigger_index > after else None
            if cached is not None and (cached.trigger_index, cached.pose_index) == (
                    shown.header.trigger_index, shown.pose_index):
                return cached
            fmt = self.rig.camera(camera).pixel_format
            encoded = await asyncio.get_running_loop().run_in_executor(
                self._pool, encode_frame, shown, fmt)
            self._cache[camera] = encoded
            return encoded

    def close(self) -> None:
        """Let the pool go (an encode under way finishes on its own)."""
        self._pool.shutdown(wait=False)
