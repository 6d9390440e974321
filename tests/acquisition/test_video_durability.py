"""A VideoWriter killed with SIGKILL leaves a file that decodes to every frame but the last it
was given (the muxer writes a frame's cluster when the next frame comes; lossy h264 also holds
3 frames in its lookahead): the video never lags frames.csv by more than that."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from rigstream.acquisition.video import read_frames

WIDTH, HEIGHT, FRAMES = 96, 64, 40
HELD_BACK = {"h264_lossless": 1, "ffv1": 1, "h264": 4}
"""Frames a killed writer may lose: the muxer's open cluster, and lossy x264's lookahead."""

CHILD = f"""
import sys
import numpy as np
from rigstream.acquisition.video import VideoWriter
path, codec, channels, frames = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
shape = ({HEIGHT}, {WIDTH}) if channels == 1 else ({HEIGHT}, {WIDTH}, 3)
rng = np.random.default_rng(0)
w = VideoWriter(path, {WIDTH}, {HEIGHT}, channels, codec, 100.0)  # auto threads, as the recorder
for _ in range(frames):
    w.write(rng.integers(0, 256, shape, np.uint8))
print("written", flush=True)
sys.stdin.read()  # wait for the kill
"""


def decodable(path: Path, gray: bool) -> list[np.ndarray]:
    """The frames that decode, up to the one the kill cut off."""
    frames: list[np.ndarray] = []
    with contextlib.suppress(av.error.FFmpegError):
        for img in read_frames(path, gray=gray):
            frames.append(img)
    return frames


@pytest.mark.parametrize(("codec", "channels"), [("h264_lossless", 1), ("h264_lossless", 3),
                                                 ("ffv1", 1), ("h264", 1)])
def test_a_killed_writer_leaves_all_frames_but_the_last(tmp_path: Path, codec: str,
                                                        channels: int) -> None:
    path = tmp_path / f"{codec}.mkv"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), codec, str(channels), str(FRAMES)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "written\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    shape = (HEIGHT, WIDTH) if channels == 1 else (HEIGHT, WIDTH, 3)
    rng = np.random.default_rng(0)
    sent = [rng.integers(0, 256, shape, np.uint8) for _ in range(FRAMES)]
    got = decodable(path, gray=channels == 1)
    assert len(got) >= FRAMES - HELD_BACK[codec], f"{codec}: {len(got)} of {FRAMES} frames after the kill"
    for k, img in enumerate(got):
        if codec == "h264":  # lossy: the right frame, not its exact pixels
            assert np.abs(img.astype(int) - sent[k]).mean() < 20, f"frame {k}"
        else:
            np.testing.assert_array_equal(img, sent[k], err_msg=f"{codec} frame {k}")

