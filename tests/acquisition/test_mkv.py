"""The raw Matroska writer: files FFmpeg, PyAV and OpenCV read back bit for bit, frames taken
back when their slot changed under the copy, and a file that stays readable when the writer
is killed."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest

from rigstream.acquisition import mkv
from rigstream.acquisition.mkv import RawMatroskaWriter
from rigstream.acquisition.video import VideoWriter, count_frames, read_frames


def images(n: int, shape: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, np.uint8) for _ in range(n)]


@pytest.mark.parametrize("channels", [1, 3])
def test_frames_read_back_exactly_by_pyav_and_opencv(tmp_path: Path, channels: int) -> None:
    shape = (48, 64) if channels == 1 else (48, 64, 3)
    frames = images(300, shape)
    path = tmp_path / "v.mkv"
    with RawMatroskaWriter(path, 64, 48, channels, 226.0) as w:
        for k, img in enumerate(frames):
            assert w.write(img) == k
    decoded = list(read_frames(path, gray=channels == 1))
    assert len(decoded) == len(frames)
    for k, (got, want) in enumerate(zip(decoded, frames, strict=True)):
        np.testing.assert_array_equal(got, want, err_msg=f"frame {k}")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 226
        assert stream.codec_context.pix_fmt == ("gray" if channels == 1 else "rgb24")
        assert container.duration == pytest.approx(300 / 226 * 1e6, abs=5e3)  # the patched Duration
    cv2 = pytest.importorskip("cv2")
    cap = cv2.VideoCapture(str(path))
    try:
        assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 300  # what DeepLabCut and anipose ask
        assert cap.set(cv2.CAP_PROP_POS_FRAMES, 211)  # a seek through the cues
        ok, img = cap.read()
        assert ok
        img = img[..., 0] if channels == 1 else img[..., ::-1]
        np.testing.assert_array_equal(img, frames[211])
    finally:
        cap.release()


def test_a_frame_changed_under_its_copy_is_taken_back(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames whose check fails after the copy are not in the file, whichever place in a
    cluster they fall on (a cluster of 3 frames here: first, middle, last and two in a row)."""
    monkeypatch.setattr(mkv, "CLUSTER_BYTES", 3 * (64 * 48 + 16))
    frames = images(40, (48, 64))
    rejected = {0, 3, 4, 8, 13, 14, 15, 39}
    path = tmp_path / "v.mkv"
    kept = []
    with RawMatroskaWriter(path, 64, 48, 1, 100.0) as w:
        for k, img in enumerate(frames):
            got = w.write(img, still_valid=lambda k=k: k not in rejected)
            if k in rejected:
                assert got == -1
            else:
                assert got == len(kept)
                kept.append(k)
    decoded = list(read_frames(path))
    assert len(decoded) == len(kept)
    for got, k in zip(decoded, kept, strict=True):
        np.testing.assert_array_equal(got, frames[k], err_msg=f"frame {k}")


def test_large_frames_cross_chunks_and_clusters(tmp_path: Path) -> None:
    """1440x1080 frames: several per staging chunk, several clusters, written by O_DIRECT where
    the filesystem takes it."""
    frames = images(4, (1080, 1440))
    path = tmp_path / "big.mkv"
    with RawMatroskaWriter(path, 1440, 1080, 1, 226.0) as w:
        for k in range(30):
            w.write(frames[k % 4])
    decoded = list(read_frames(path))
    assert len(decoded) == 30
    for k, got in enumerate(decoded):
        np.testing.assert_array_equal(got, frames[k % 4], err_msg=f"frame {k}")


def test_a_filesystem_without_o_direct_gets_the_same_file() -> None:
    """tmpfs refuses O_DIRECT: the writer goes through the page cache instead."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    frames = images(50, (48, 64))
    with tempfile.TemporaryDirectory(dir=shm) as d:
        path = Path(d) / "v.mkv"
        with RawMatroskaWriter(path, 64, 48, 1, 30.0) as w:
            for img in frames:
                w.write(img)
        decoded = list(read_frames(path))
    assert len(decoded) == 50
    np.testing.assert_array_equal(decoded[-1], frames[-1])


KILLED = """
import os, signal, sys, time
import numpy as np
from rigstream.acquisition.mkv import RawMatroskaWriter
rng = np.random.default_rng(0)
w = RawMatroskaWriter(sys.argv[1], 320, 240, 1, 100.0)
for k in range(60):
    w.write(rng.integers(0, 256, (240, 320), np.uint8))
time.sleep(0.6)  # longer than FLUSH_S: the next write sends what is staged to disk
w.write(rng.integers(0, 256, (240, 320), np.uint8))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writer_leaves_a_file_that_plays_to_its_last_flush(tmp_path: Path) -> None:
    path = tmp_path / "killed.mkv"
    proc = subprocess.run([sys.executable, "-c", KILLED, str(path)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (240, 320), np.uint8) for _ in range(61)]
    decoded = []
    try:
        for img in read_frames(path):
            decoded.append(img)
    except av.error.FFmpegError:
        pass  # the block cut off by the kill
    assert len(decoded) >= 60  # everything before the last flush (the aligned part of frame 61 too)
    for k, got in enumerate(decoded):
        np.testing.assert_array_equal(got, frames[k], err_msg=f"frame {k}")


def test_video_writer_writes_raw_in_place_and_other_codecs_from_copies(tmp_path: Path) -> None:
    raw = VideoWriter(tmp_path / "raw.mkv", 64, 48, 1, "raw", 30.0)
    assert raw.in_place
    assert raw.write(np.zeros((48, 64), np.uint8), lambda: False) == -1
    assert raw.write(np.ones((48, 64), np.uint8), lambda: True) == 0
    raw.close()
    assert count_frames(tmp_path / "raw.mkv") == 1
    ffv1 = VideoWriter(tmp_path / "ffv1.mkv", 64, 48, 1, "ffv1", 30.0)
    assert not ffv1.in_place
    with pytest.raises(ValueError, match="only raw video"):
        ffv1.write(np.zeros((48, 64), np.uint8), lambda: True)
    ffv1.close()
