"""Labeled videos: keypoints and skeleton drawn on a recording, written atomically."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from rigstream.acquisition.video import VideoWriter, read_frames
from rigstream.config import InputError
from rigstream.inference.labeled_video import (
    SKELETON_RGB,
    LabeledVideoError,
    default_radius,
    keypoint_colors,
    write_labeled_video,
)

WIDTH, HEIGHT, FRAMES, RATE_HZ = 64, 48, 20, 30.0


def make_video(path: Path, frames: int = FRAMES, width: int = WIDTH, height: int = HEIGHT,
               codec: str = "ffv1", pixels: np.ndarray | None = None) -> Path:
    """A mono (or, with (H, W, 3) ``pixels``, color) video of identical frames, black by default."""
    pixels = np.zeros((height, width), np.uint8) if pixels is None else pixels
    with VideoWriter(path, width, height, 1 if pixels.ndim == 2 else 3, codec, RATE_HZ) as writer:
        for _ in range(frames):
            writer.write(pixels)
    return path


def decode(path: Path) -> list[np.ndarray]:
    return list(read_frames(path, gray=False))


def nan_values(frames: int, keypoints: int) -> np.ndarray:
    return np.full((frames, keypoints, 3), np.nan)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return make_video(tmp_path / "cam0.mkv")


def test_keypoint_colors_are_distinct_and_fixed():
    colors = keypoint_colors(5)
    assert colors.shape == (5, 3) and colors.dtype == np.uint8
    assert colors[0].tolist() == [255, 0, 0]
    assert len({tuple(c) for c in colors.tolist()}) == 5
    assert np.array_equal(keypoint_colors(5), colors)
    assert keypoint_colors(0).shape == (0, 3)
    assert default_radius(64, 48) == 2 and default_radius(1280, 1024) == 9


def test_draws_each_keypoint_in_its_colour_where_it_is(video, tmp_path):
    labeled = 15  # fewer rows than the video's frames: the rest are written unlabeled
    values = nan_values(labeled, 3)
    for i in range(labeled):
        values[i, 0] = (5 + i, 10, 0.9)  # moves right
        values[i, 1] = (45, 8 + 2 * i, 0.6)  # moves down
        values[i, 2] = (25, 40, 0.2)  # below min_likelihood: never drawn
    report = write_labeled_video(video, tmp_path / "labeled.mkv", ["nose", "ear", "tail"], values,
                                 codec="ffv1")

    frames = decode(tmp_path / "labeled.mkv")
    assert len(frames) == FRAMES
    assert frames[0].shape == (HEIGHT, WIDTH, 3)
    colors = keypoint_colors(3)
    for i in range(labeled):
        assert frames[i][10, 5 + i].tolist() == colors[0].tolist(), i
        assert frames[i][8 + 2 * i, 45].tolist() == colors[1].tolist(), i
        assert frames[i][40, 25].tolist() == [0, 0, 0], i
        assert frames[i][30, 20].tolist() == [0, 0, 0], i  # away from every keypoint
    for i in range(labeled, FRAMES):
        assert frames[i].max() == 0, i
    assert report == type(report)(out=tmp_path / "labeled.mkv", frames_written=FRAMES, frames_labeled=labeled,
                                  keypoints_drawn=2 * labeled, values_beyond_video=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam0.mkv", "labeled.mkv"]  # no temporary left


def test_undrawn_keypoints_likelihood_nan_and_outside(video, tmp_path):
    values = nan_values(6, 1)
    values[0, 0] = (20, 20, 0.49)  # just below min_likelihood
    values[1, 0] = (20, 20, 0.5)  # at it: drawn
    values[2, 0] = (20, 20, np.nan)  # likelihood NaN
    values[3, 0] = (np.nan, 20, 0.9)  # position NaN
    values[4, 0] = (WIDTH + 10, 20, 0.9)  # outside the frame
    values[5, 0] = (20, -3, 0.9)
    report = write_labeled_video(video, tmp_path / "labeled.mkv", ["nose"], values, codec="ffv1")

    frames = decode(tmp_path / "labeled.mkv")
    assert frames[1][20, 20].tolist() == keypoint_colors(1)[0].tolist()
    for i in (0, 2, 3, 4, 5):
        assert frames[i].max() == 0, i
    assert (report.frames_labeled, report.keypoints_drawn) == (1, 1)


def test_min_likelihood_and_radius_are_used(video, tmp_path):
    values = nan_values(1, 1)
    values[0, 0] = (20, 20, 0.3)
    write_labeled_video(video, tmp_path / "small.mkv", ["nose"], values, min_likelihood=0.2, codec="ffv1")
    write_labeled_video(video, tmp_path / "big.mkv", ["nose"], values, min_likelihood=0.2, radius=6,
                        codec="ffv1")
    red = keypoint_colors(1)[0].tolist()
    small, big = decode(tmp_path / "small.mkv")[0], decode(tmp_path / "big.mkv")[0]
    assert small[20, 20].tolist() == red and big[20, 20].tolist() == red
    assert small[20, 24].tolist() == [0, 0, 0]  # default radius 2 for 64x48
    assert big[20, 24].tolist() == red


def test_skeleton_joins_two_drawn_keypoints_only(video, tmp_path):
    values = nan_values(2, 3)
    values[:, 0] = (10, 20, 0.9)
    values[:, 1] = (50, 20, 0.9)
    values[:, 2] = (50, 40, 0.1)  # not drawn: no line to it
    values[1, 1, 2] = 0.1  # frame 1: one end of a-b missing, so no line either
    skeleton = [("a", "b"), ("b", "c")]
    report = write_labeled_video(video, tmp_path / "labeled.mkv", ["a", "b", "c"], values, skeleton,
                                 codec="ffv1")

    frames = decode(tmp_path / "labeled.mkv")
    midpoint = frames[0][20, 30]
    assert midpoint.min() > 150 and len(set(midpoint.tolist())) == 1  # white line, anti-aliased
    assert SKELETON_RGB == (255, 255, 255)
    assert frames[0][30, 50].tolist() == [0, 0, 0]  # b-c midpoint
    assert frames[0][30, 30].tolist() == [0, 0, 0]
    assert frames[1][20, 30].tolist() == [0, 0, 0]
    assert frames[1][20, 10].tolist() == keypoint_colors(3)[0].tolist()
    assert report.keypoints_drawn == 3


def test_h264_mp4_default_keeps_count_rate_and_colours_approximately(video, tmp_path):
    values = nan_values(FRAMES + 5, 2)  # 5 rows past the video
    values[:, 0] = (16, 16, 1.0)
    values[:, 1] = (48, 32, 1.0)
    report = write_labeled_video(video, tmp_path / "labeled.mp4", ["a", "b"], values, radius=4)

    assert report.frames_written == FRAMES and report.values_beyond_video == 5
    assert report.frames_labeled == FRAMES and report.keypoints_drawn == 2 * FRAMES
    with av.open(str(tmp_path / "labeled.mp4")) as container:
        assert container.format.name.startswith("mov,mp4")
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert abs(float(stream.average_rate) - RATE_HZ) < 0.5
    frames = decode(tmp_path / "labeled.mp4")
    assert len(frames) == FRAMES
    colors = keypoint_colors(2).astype(int)
    for frame in frames:
        assert np.abs(frame[16, 16].astype(int) - colors[0]).max() < 40
        assert np.abs(frame[32, 48].astype(int) - colors[1]).max() < 40
        assert frame[40, 5].max() < 20


def test_gray_values_and_colour_input_are_kept(tmp_path):
    # rigstream's mono h264 stores gray as the luma plane untouched: drawn on as stored
    gray = make_video(tmp_path / "gray.mkv", frames=2, codec="h264_lossless",
                      pixels=np.full((HEIGHT, WIDTH), 5, np.uint8))
    write_labeled_video(gray, tmp_path / "gray_out.mkv", ["a"], nan_values(0, 1), codec="ffv1")
    assert all(frame[0, 0].tolist() == [5, 5, 5] for frame in decode(tmp_path / "gray_out.mkv"))

    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    pixels[..., 2] = 150
    color = make_video(tmp_path / "color.mkv", frames=2, pixels=pixels)
    write_labeled_video(color, tmp_path / "color_out.mkv", ["a"], nan_values(0, 1), codec="ffv1")
    assert all(frame[0, 0].tolist() == [0, 0, 150] for frame in decode(tmp_path / "color_out.mkv"))


def test_odd_frame_size_is_padded_for_h264(tmp_path):
    odd = make_video(tmp_path / "odd.mkv", frames=3, width=65, height=47)
    values = nan_values(1, 1)
    values[0, 0] = (64, 46, 1.0)  # the corner pixel: the circle would spill into the padding
    report = write_labeled_video(odd, tmp_path / "odd_out.mkv", ["a"], values, radius=3)
    frames = decode(report.out)
    assert len(frames) == 3 and frames[0].shape == (48, 66, 3)
    assert frames[0][45, 63, 0] > 150 and frames[0][45, 63, 1:].max() < 50
    assert frames[1].max() < 20 and frames[2].max() < 20  # nothing left behind in the padding


def test_progress_every_hundred_frames_and_at_the_end(tmp_path):
    long_video = make_video(tmp_path / "long.mkv", frames=250)
    calls: list[int] = []
    write_labeled_video(long_video, tmp_path / "labeled.mkv", ["a"], nan_values(0, 1), codec="ffv1",
                        progress=calls.append)
    assert calls == [100, 200, 250]


def test_failure_leaves_no_partial_output_and_keeps_an_old_file(video, tmp_path):
    out = tmp_path / "labeled.mkv"
    out.write_bytes(b"old")

    def fail(frames_done: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        write_labeled_video(video, out, ["a"], nan_values(0, 1), codec="ffv1", progress=fail)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam0.mkv", "labeled.mkv"]


@pytest.mark.parametrize(("case", "expected"), [
    ("wrong_shape", r"cam0\.mkv: values: expected shape \(frames, 2, 3\) for 2 keypoints.*got \(20, 2, 2\)"),
    ("wrong_keypoints", r"cam0\.mkv: values: expected shape \(frames, 2, 3\).*got \(20, 3, 3\)"),
    ("unknown_skeleton",
     r"cam0\.mkv: skeleton\[1\] \('b', 'tial'\): 'tial' is not a keypoint \(keypoints: a, b\)"),
    ("missing_video", r"nothere\.mkv: no such video file"),
    ("not_a_video", r"notes\.mkv: cannot be opened as a video"),
    ("bad_suffix", r"labeled\.avi: expected a file name ending in \.mkv or \.mp4, got '\.avi'"),
    ("missing_folder", r"labeled\.mkv: the folder .*nofolder does not exist"),
    ("same_file", r"cam0\.mkv: is the input video"),
])
def test_bad_inputs_raise_one_clear_error_and_write_nothing(video, tmp_path, case, expected):
    keypoints = ["a", "b"]
    values = nan_values(FRAMES, 2)
    skeleton = [("a", "b")]
    source, out = video, tmp_path / "labeled.mkv"
    if case == "wrong_shape":
        values = np.zeros((FRAMES, 2, 2))
    elif case == "wrong_keypoints":
        values = nan_values(FRAMES, 3)
    elif case == "unknown_skeleton":
        skeleton = [("a", "b"), ("b", "tial")]
    elif case == "missing_video":
        source = tmp_path / "nothere.mkv"
    elif case == "not_a_video":
        source = tmp_path / "notes.mkv"
        source.write_text("not a video\n")
    elif case == "bad_suffix":
        out = tmp_path / "labeled.avi"
    elif case == "missing_folder":
        out = tmp_path / "nofolder" / "labeled.mkv"
    elif case == "same_file":
        out = video
    before = sorted(tmp_path.iterdir())

    with pytest.raises(LabeledVideoError, match=expected) as caught:
        write_labeled_video(source, out, keypoints, values, skeleton, codec="ffv1")
    assert isinstance(caught.value, InputError) and isinstance(caught.value, ValueError)
    assert sorted(tmp_path.iterdir()) == before
