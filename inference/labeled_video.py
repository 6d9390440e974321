"""Labeled videos: a camera's recorded video with its keypoints and skeleton drawn on it, as
DeepLabCut's ``create_labeled_video`` makes them.

:func:`write_labeled_video` decodes any video PyAV reads (recordings are mono8 Matroska; color
is accepted), draws one filled circle per keypoint whose likelihood reaches ``min_likelihood``
(each keypoint in its own colour, :func:`keypoint_colors`) and a line for each skeleton edge
whose two ends are drawn, and encodes the result with the input's timestamps and time base:

- ``h264`` (default): libx264, yuv420p, ``crf``; plays everywhere. A frame with an odd width or
  height gets one black column or row more (yuv420p needs even sizes); pixel coordinates are
  unchanged.
- ``ffv1``: lossless RGB (bgr0); big files, for checking exact pixels.

The container is Matroska for ``.mkv`` and MP4 for ``.mp4``. The file is written under a
temporary name in the same folder and renamed when complete, so a failure (or an interrupt)
leaves no partial output; an existing ``out`` is replaced only then.

Gray frames, and YUV frames whose chroma is neutral (rigstream's mono h264 recordings keep the
gray pixels as the luma plane, untouched), are drawn on as their stored gray values; other
frames are converted to RGB by FFmpeg.

Bad inputs raise :class:`LabeledVideoError` (an :class:`~rigstream.config.InputError`) whose
message names the file and what was wrong, before anything is written.
"""

from __future__ import annotations

import colorsys
import logging
import math
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from rigstream.basics import write_error
from rigstream.config import InputError

logger = logging.getLogger(__name__)

FORMATS = {".mkv": "matroska", ".mp4": "mp4"}
"""Output container by the file name's suffix."""
CODECS = ("h264", "ffv1")
PROGRESS_EVERY = 100
"""Frames between two calls of the ``progress`` callback."""
SKELETON_RGB = (255, 255, 255)
"""Skeleton lines are white: they stand out on dark (infrared) recordings and differ from every
keypoint colour."""
_SHIFT = 4
"""Fractional bits of the coordinates handed to OpenCV (keypoints are drawn at 1/16 px)."""
_BT601 = 6  # AVCOL_SPC_SMPTE170M, AVCOL_PRI_SMPTE170M, AVCOL_TRC_SMPTE170M
_MPEG_RANGE = 1  # AVCOL_RANGE_MPEG


class LabeledVideoError(InputError):
    """A labeled video that cannot be made; the message names the file and what is wrong."""


@dataclass(frozen=True)
class LabeledVideoReport:
    """The result of :func:`write_labeled_video`."""

    out: Path
    frames_written: int
    """Frames of the output: every decoded frame of the input."""
    frames_labeled: int
    """Frames with at least one keypoint drawn."""
    keypoints_drawn: int
    """Circles drawn, over all frames."""
    values_beyond_video: int
    """Rows of ``values`` past the video's last frame (not drawn)."""


def keypoint_colors(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB: hues evenly spaced around the HSV circle at full saturation and value,
    keypoint 0 red. Fixed for a given ``n``, so a keypoint keeps its colour across videos."""
    rgb = [colorsys.hsv_to_rgb(k / n, 1.0, 1.0) for k in range(n)]
    return np.rint(np.asarray(rgb, np.float64).reshape(n, 3) * 255).astype(np.uint8)


def default_radius(width: int, height: int) -> int:
    """Circle radius in px when none is given: grows with the frame, at least 2."""
    return max(2, round(min(width, height) / 120))


def write_labeled_video(video: str | Path, out: str | Path, keypoints: Sequence[str], values: np.ndarray,
                        skeleton: Sequence[tuple[str, str]] = (), *, min_likelihood: float = 0.5,
                        radius: int | None = None, codec: str = "h264", crf: int = 18,
                        progress: Callable[[int], None] | None = None) -> LabeledVideoReport:
    """Write ``out``: ``video`` with the keypoints of ``values`` drawn on it.

    Args:
        video: any video file PyAV can decode.
        out: the labeled video, ``.mkv`` (Matroska) or ``.mp4``; its folder must exist.
        keypoints: the K keypoint names, in the order of ``values``' second axis.
        values: (F, K, 3) float: x px, y px (column, row; pixel centres at integers) and
            likelihood, row i for video frame i; NaN where not posed. Frames past F are written
            unlabeled; rows past the video's last frame are counted in the report.
        skeleton: pairs of keypoint names joined by a line when both ends are drawn.
        min_likelihood: a keypoint is drawn when its likelihood is at least this and its centre
            lies in the frame.
        radius: circle radius in px; default :func:`default_radius` of the frame size.
        codec: ``h264`` (lossy, ``crf``) or ``ffv1`` (lossless).
        crf: x264's constant rate factor, 0 (lossless) to 51.
        progress: called with the frames done every :data:`PROGRESS_EVERY` frames and at the end.
    """
    video, out = Path(video), Path(out)
    values, edges = _check_values(video, keypoints, values, skeleton)
    container_format = _check_options(out, min_likelihood, radius, codec, crf)
    _check_out(video, out)
    source = _open_video(video)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        with source, av.open(str(tmp), mode="w", format=container_format) as sink:
            written, drawn = _label(video, source, sink, values, edges, min_likelihood, radius, codec, crf,
                                    progress)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    labeled_rows = drawn[:written]
    report = LabeledVideoReport(out=out, frames_written=written,
                                frames_labeled=int(np.count_nonzero(labeled_rows.any(axis=1))),
                                keypoints_drawn=int(np.count_nonzero(labeled_rows)),
                                values_beyond_video=max(0, len(values) - written))
    if report.values_beyond_video:
        logger.warning("%s: %d rows of keypoints are past the video's %d frames (not drawn)", video,
                       report.values_beyond_video, written)
    logger.info("%s: wrote %d frames, %d labeled, %d keypoints drawn", out, written, report.frames_labeled,
                report.keypoints_drawn)
    return report


# ---------------------------------------------------------------------------------------------
# Checks (all before anything is written)


def _check_values(video: Path, keypoints: Sequence[str], values: np.ndarray,
                  skeleton: Sequence[tuple[str, str]]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``values`` as an array, and the skeleton as pairs of keypoint indices."""
    names = list(keypoints)
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise LabeledVideoError(f"{video}: keypoints: expected distinct names, got {', '.join(twice)} twice")
    values = np.asarray(values)
    k = len(names)
    if values.ndim != 3 or values.shape[1:] != (k, 3):
        raise LabeledVideoError(f"{video}: values: expected shape (frames, {k}, 3) for {k} keypoints "
                                f"(x px, y px, likelihood), got {values.shape}")
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise LabeledVideoError(f"{video}: values: expected real numbers, got dtype {values.dtype}")
    index = {name: i for i, name in enumerate(names)}
    edges = []
    for i, edge in enumerate(skeleton):
        if isinstance(edge, str) or len(edge) != 2:
            raise LabeledVideoError(f"{video}: skeleton[{i}]: expected a pair of keypoint names, "
                                    f"got {edge!r}")
        for name in edge:
            if name not in index:
                raise LabeledVideoError(f"{video}: skeleton[{i}] {tuple(edge)!r}: {name!r} is not a keypoint "
                                        f"(keypoints: {', '.join(names) or 'none'})")
        edges.append((index[edge[0]], index[edge[1]]))
    return values, edges


def _check_options(out: Path, min_likelihood: float, radius: int | None, codec: str, crf: int) -> str:
    """The output container format."""
    container_format = FORMATS.get(out.suffix.lower())
    if container_format is None:
        raise LabeledVideoError(f"{out}: expected a file name ending in {' or '.join(FORMATS)}, "
                                f"got {out.suffix or 'no suffix'!r}")
    if codec not in CODECS:
        raise LabeledVideoError(f"{out}: codec: expected {' or '.join(CODECS)}, got {codec!r}")
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise LabeledVideoError(f"{out}: crf: expected an integer from 0 to 51, got {crf!r}")
    if radius is not None and (isinstance(radius, bool) or not isinstance(radius, int) or radius < 1):
        raise LabeledVideoError(f"{out}: radius: expected a positive integer (px) or None, got {radius!r}")
    if isinstance(min_likelihood, bool) or not isinstance(min_likelihood, (int, float)) \
            or math.isnan(min_likelihood):
        raise LabeledVideoError(f"{out}: min_likelihood: expected a number, got {min_likelihood!r}")
    return container_format


def _check_out(video: Path, out: Path) -> None:
    if not video.exists():
        raise LabeledVideoError(f"{video}: no such video file")
    if video.is_dir():
        raise LabeledVideoError(f"{video}: is a folder, not a video file")
    if out.is_dir():
        raise LabeledVideoError(f"{out}: is a folder; expected the labeled video's file name")
    if out.exists() and out.resolve() == video.resolve():
        raise LabeledVideoError(f"{out}: is the input video; choose another name for the labeled video")
    folder = out.parent
    if not folder.is_dir():
        raise LabeledVideoError(f"{out}: the folder {folder} does not exist")
    why = write_error(folder)
    if why is not None:
        raise LabeledVideoError(f"{out}: cannot write in {folder} ({why})")


def _open_video(video: Path) -> av.container.InputContainer:
    try:
        source = av.open(str(video))
    except (av.FFmpegError, OSError) as exc:
        raise LabeledVideoError(f"{video}: cannot be opened as a video ({exc})") from None
    if not source.streams.video:
        source.close()
        raise LabeledVideoError(f"{video}: has no video stream")
    context = source.streams.video[0].codec_context
    if context.width <= 0 or context.height <= 0:
        source.close()
        raise LabeledVideoError(f"{video}: the video stream has no frame size")
    return source


# ---------------------------------------------------------------------------------------------
# Drawing and encoding


def _label(video: Path, source: av.container.InputContainer, sink: av.container.OutputContainer,
           values: np.ndarray, edges: list[tuple[int, int]], min_likelihood: float, radius: int | None,
           codec: str, crf: int, progress: Callable[[int], None] | None) -> tuple[int, np.ndarray]:
    """Decode, draw, encode every frame: (frames written, (F, K) bool mask of keypoints drawn)."""
    stream = source.streams.video[0]
    stream.thread_type = "AUTO"
    width, height = stream.codec_context.width, stream.codec_context.height
    drawn = _drawable(values, width, height, min_likelihood)
    radius = radius if radius is not None else default_radius(width, height)
    thickness = max(1, round(radius / 3))
    colors = [tuple(int(c) for c in rgb) for rgb in keypoint_colors(values.shape[1])]
    pad = codec == "h264"  # yuv420p: even sizes only
    canvas = np.zeros((height + (height % 2 if pad else 0), width + (width % 2 if pad else 0), 3), np.uint8)
    image = canvas[:height, :width]  # the frame's pixels; the padding stays black

    time_base = stream.time_base or stream.codec_context.time_base
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    encoder = _add_encoder(sink, codec, crf, canvas.shape[1], canvas.shape[0], rate, time_base)
    step = max(1, round(1 / (rate * time_base))) if rate and time_base else 1
    last_pts: int | None = None
    written = 0
    frames = source.decode(stream)
    while True:
        try:
            frame = next(frames, None)
        except av.FFmpegError as exc:
            raise LabeledVideoError(f"{video}: frame {written} cannot be decoded ({exc})") from None
        if frame is None:
            break
        if (frame.width, frame.height) != (width, height):
            raise LabeledVideoError(f"{video}: frame {written} is {frame.width}x{frame.height} px, expected "
                                    f"{width}x{height} (the video stream's size)")
        _fill(image, frame)
        if written < len(values) and drawn[written].any():
            _draw(image, values[written], drawn[written], edges, colors, radius, thickness)
        pts = frame.pts if frame.pts is not None and (last_pts is None or frame.pts > last_pts) else \
            (0 if last_pts is None else last_pts + step)
        last_pts = pts
        out_frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
        out_frame.pts = pts
        out_frame.time_base = time_base
        for packet in encoder.encode(out_frame):
            sink.mux(packet)
        written += 1
        if progress is not None and written % PROGRESS_EVERY == 0:
            progress(written)
    for packet in encoder.encode():
        sink.mux(packet)
    if progress is not None and written % PROGRESS_EVERY != 0:
        progress(written)
    return written, drawn


def _add_encoder(sink: av.container.OutputContainer, codec: str, crf: int, width: int, height: int,
                 rate: object, time_base: object) -> av.video.stream.VideoStream:
    if codec == "h264":
        stream = sink.add_stream("libx264", rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        # FFmpeg converts the RGB frames with BT.601 in video range: say so, for players.
        context = stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = _BT601
        context.color_range = _MPEG_RANGE
    else:
        stream = sink.add_stream("ffv1", rate=rate)
        stream.pix_fmt = "bgr0"
        stream.options = {"slices": "4", "slicecrc": "1"}
    stream.width = width
    stream.height = height
    if time_base:
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
    return stream


def _drawable(values: np.ndarray, width: int, height: int, min_likelihood: float) -> np.ndarray:
    """(F, K) bool: likelihood at least ``min_likelihood`` and the centre on a pixel of the frame
    (NaN anywhere is False)."""
    x, y, likelihood = values[..., 0], values[..., 1], values[..., 2]
    return (likelihood >= min_likelihood) & (x > -0.5) & (x < width - 0.5) & (y > -0.5) & (y < height - 0.5)


def _fill(image: np.ndarray, frame: av.VideoFrame) -> None:
    """Copy one decoded frame into ``image`` ((H, W, 3) RGB view), without allocating for gray,
    mono YUV and RGB frames."""
    name = frame.format.name
    height, width = image.shape[:2]
    if name in ("gray", "gray8") or (name.startswith("yuv") and _neutral_chroma(frame)):
        luma = _plane(frame.planes[0])[:height, :width]
        result = cv2.cvtColor(luma, cv2.COLOR_GRAY2RGB, dst=image)  # in place (~30x numpy's copy)
        if result is not image:
            np.copyto(image, result)
    elif name == "rgb24":
        np.copyto(image, _plane(frame.planes[0])[:height, : 3 * width].reshape(height, width, 3))
    else:
        np.copyto(image, frame.to_ndarray(format="rgb24"))


def _neutral_chroma(frame: av.VideoFrame) -> bool:
    """Whether a planar YUV frame's chroma is 128 everywhere (a gray picture: rigstream's mono
    recordings store the gray pixels as the luma plane, as they are)."""
    if len(frame.planes) < 3 or frame.format.name.endswith(("le", "be")):  # 8-bit formats only
        return False
    for plane in frame.planes[1:3]:
        chroma = _plane(plane)[:, : plane.width]
        if chroma.min() != 128 or chroma.max() != 128:
            return False
    return True


def _plane(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """A (height, line_size) view of one plane of a frame."""
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)


def _draw(image: np.ndarray, row: np.ndarray, drawn: np.ndarray, edges: list[tuple[int, int]],
          colors: list[tuple[int, ...]], radius: int, thickness: int) -> None:
    """Skeleton lines, then circles on top, for one frame (``row`` (K, 3), ``drawn`` (K,) bool),
    clipped to ``image`` (a view of the canvas: its padding stays black)."""
    ks = np.flatnonzero(drawn)
    scale = 1 << _SHIFT
    centres = dict(zip(ks.tolist(), np.rint(row[ks, :2] * scale).astype(np.int64).tolist(), strict=True))
    for a, b in edges:
        if a in centres and b in centres:
            cv2.line(image, centres[a], centres[b], SKELETON_RGB, thickness, cv2.LINE_AA, _SHIFT)
    for k, centre in centres.items():
        cv2.circle(image, centre, radius * scale, colors[k], -1, cv2.LINE_AA, _SHIFT)
