"""read_frames_from: decoding from a frame in the middle of a recording gives the same frames,
numbered the same, as decoding the whole file (it seeks to the keyframe before and counts by
timestamps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rigstream.acquisition.video import VideoWriter, read_frames, read_frames_from

FRAMES = 300


@pytest.fixture(scope="module", params=[("h264_lossless", 100.0), ("ffv1", 226.0), ("raw", 226.0)])
def video(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    codec, rate = request.param
    path = tmp_path_factory.mktemp(codec) / "cam.mkv"
    rng = np.random.default_rng(1)
    with VideoWriter(path, 64, 48, 1, codec, rate) as w:
        for i in range(FRAMES):
            frame = rng.integers(0, 255, (48, 64), dtype=np.uint8)
            frame[0, :2] = (i // 256, i % 256)  # the frame's number in its pixels
            w.write(frame)
    return path, list(read_frames(path))


@pytest.mark.parametrize("first", [0, 1, 57, 249, 250, 251, 298, 299])
def test_starts_at_the_frame_asked_for(video: tuple[Path, list[np.ndarray]], first: int) -> None:
    path, frames = video
    got = [(n, px.copy()) for n, px in read_frames_from(path, first)]
    assert [n for n, _ in got] == list(range(first, FRAMES))
    for n, px in got:
        assert np.array_equal(px, frames[n]), n
        assert int(px[0, 0]) * 256 + int(px[0, 1]) == n


def test_past_the_end_gives_nothing(video: tuple[Path, list[np.ndarray]]) -> None:
    path, _ = video
    assert list(read_frames_from(path, FRAMES + 5)) == []
