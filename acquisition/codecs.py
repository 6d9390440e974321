"""Which codecs this host can sustain at a rig's rate, measured, and the check that refuses a
codec the rate cannot sustain before a session starts.

Each camera's video is encoded by its own thread in the recorder, so the question is how many
frames a second one encoder thread manages at the rig's frame size, and whether the host's
cores, shared by every camera's encoder, keep up with ``rate_hz`` per camera. The probe
encodes a frame that compresses like camera images (a smooth scene plus sensor noise) into a
throwaway file; ``raw`` is measured the same way (its cost is the write). Disk speed is
``rigstream doctor``'s step, not this one.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rigstream.acquisition.video import VideoWriter
from rigstream.config import ConfigError, RigConfig

logger = logging.getLogger(__name__)

HEADROOM = 1.25
"""A codec must encode this much faster than the rig's rate to pass (the recorder also
writes tables, and the cores run the cameras, the pose engine and the rest)."""

CPU_SHARE = 0.5
"""Share of the host's cores the recorder's encoders may count on."""


@dataclass(frozen=True)
class CodecSpeed:
    codec: str
    width: int
    height: int
    frames_per_s: float
    """One encoder thread, this host, median of the probe's passes."""

    def sustains(self, rate_hz: float, cameras: int, cpus: int | None = None) -> bool:
        cores = max(1.0, (cpus or os.cpu_count() or 1) * CPU_SHARE)
        return self.frames_per_s * min(cores, cameras) / cameras >= rate_hz * HEADROOM


def camera_like_frame(width: int, height: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A frame that compresses like a camera's: smooth shading and a few shapes, plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = 90 + 60 * np.sin(x / max(width, 1) * 3.1) * np.cos(y / max(height, 1) * 2.3)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(10, max(11, width / 8))
        img += 50 * ((x - cx) ** 2 + (y - cy) ** 2 < r * r)
    img += rng.normal(0, 3, img.shape)
    out = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(out[..., None], 3, axis=2) if channels == 3 else out


def probe(codec: str, width: int, height: int, channels: int = 1, frames: int = 24, passes: int = 3,
          crf: int = 18, folder: str | Path | None = None) -> CodecSpeed:
    """Encode ``frames`` camera-like frames ``passes`` times; frames/s of one thread (median)."""
    images = [camera_like_frame(width, height, channels, seed) for seed in range(4)]
    speeds = []
    with tempfile.TemporaryDirectory(prefix="rigstream-codec-", dir=folder) as tmp:
        for p in range(passes):
            path = Path(tmp) / f"probe{p}.mkv"
            writer = VideoWriter(path, width, height, channels, codec, 100.0, crf, threads=1)
            t0 = time.perf_counter()
            for i in range(frames):
                writer.write(images[i % len(images)])
            writer.close()
            speeds.append(frames / (time.perf_counter() - t0))
            path.unlink()
    return CodecSpeed(codec, width, height, round(float(np.median(speeds)), 1))


def check_codec(rig: RigConfig, where: str) -> str:
    """One line on whether this host sustains the rig's codec at its rate; ConfigError if it
    cannot and the rig file does not say ``recording.try_codec: true``. Nothing to check when
    the whole-session video is off (clips are written from the stores at their own pace)."""
    rec = rig.recording
    if rec.video == "off":
        return "whole-session video off"
    biggest = max(rig.cameras, key=lambda c: c.width * c.height * c.channels)
    speed = probe(rec.codec, biggest.width, biggest.height, biggest.channels, crf=rec.crf)
    n = len(rig.cameras)
    line = (f"codec {rec.codec}: {speed.frames_per_s:.0f} frames/s per encoder at "
            f"{biggest.width}x{biggest.height} on this host; the rig needs {rig.trigger.rate_hz:g} "
            f"per camera x {n}")
    if speed.sustains(rig.trigger.rate_hz, n):
        return line + " (ok)"
    if rec.try_codec:
        logger.warning("%s: %s: not sustainable; trying anyway (recording.try_codec)", where, line)
        return line + " (NOT sustainable; trying anyway: recording.try_codec)"
    faster = [c for c in ("raw", "h264_lossless", "ffv1") if c != rec.codec]
    raise ConfigError(f"{where}: recording.codec: {line}, which this host cannot sustain with "
                      f"{HEADROOM:g}x headroom; use a faster codec ({', '.join(faster)}), "
                      f"recording.video: off (clips only), or set recording.try_codec: true to try")
