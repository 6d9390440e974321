"""Where calibration images come from: folders of images and videos, each frame with its key.

A frame's key pairs views across cameras: an image's key is the last run of digits in its file
name (``back-02242022135219-0.jpg`` is frame 0, ``left01.jpg`` frame 1), a video frame's key is
its index in the video (with ``every``, every k-th frame is read).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rigstream.inference.boards import IMAGE_SUFFIXES, VIDEO_SUFFIXES, BoardError, to_gray

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    key: int
    """Frame key that pairs images across cameras (trailing integer of the stem, or video frame index)."""
    name: str
    """File name (or ``video.mp4#index``), for messages."""


def frame_key(path: str | Path) -> int:
    """The trailing integer of a file stem: ``back-02242022135219-0.jpg`` -> 0, ``left01.jpg`` -> 1."""
    stem = Path(path).stem
    m = re.search(r"(\d+)$", stem)
    if m is None:
        raise BoardError(f"{path}: expected a file name ending in a frame number (e.g. cam-0.jpg, "
                         f"left01.jpg), got {Path(path).name!r}")
    return int(m.group(1))


def list_images(folder: str | Path) -> list[tuple[int, Path]]:
    """The images of a folder as ``(frame key, path)``, sorted by key; repeated keys are errors."""
    d = Path(folder)
    if not d.is_dir():
        raise BoardError(f"{d}: not a folder of images")
    files = [p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise BoardError(f"{d}: no images (expected files ending in {', '.join(IMAGE_SUFFIXES)})")
    keyed: dict[int, Path] = {}
    for p in sorted(files):
        key = frame_key(p)
        if key in keyed:
            raise BoardError(f"{d}: {keyed[key].name} and {p.name} have the same frame number {key}")
        keyed[key] = p
    return sorted(keyed.items())


def read_image(path: str | Path) -> np.ndarray:
    """(H, W) uint8 gray pixels of an image file."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise BoardError(f"{path}: cannot read image (missing, or not an image OpenCV can decode)")
    return image


def is_video(source: str | Path) -> bool:
    return Path(source).suffix.lower() in VIDEO_SUFFIXES


def iter_video(path: str | Path, every: int = 1) -> Iterator[tuple[Frame, np.ndarray]]:
    """Every ``every``-th frame of a video as ``(Frame, (H, W) uint8 gray)``; the key is the frame index."""
    if every < 1:
        raise BoardError(f"every: expected an integer >= 1, got {every}")
    p = Path(path)
    if not p.is_file():
        raise BoardError(f"{p}: no such video file")
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise BoardError(f"{p}: cannot open video (not a video OpenCV can decode)")
        index = 0
        delivered = 0
        while True:
            if index % every == 0:
                ok, image = cap.read()
                if not ok:
                    break
                delivered += 1
                yield Frame(index, f"{p.name}#{index}"), to_gray(image)
            elif not cap.grab():
                break
            index += 1
        if delivered == 0:
            raise BoardError(f"{p}: no frames could be decoded")
    finally:
        cap.release()
