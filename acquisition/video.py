"""Video files through PyAV (FFmpeg): one Matroska file per camera.

Matroska is written incrementally, so a session killed mid-way leaves a file that plays up
to its last written cluster (an MP4 without its index would not open at all). The encoded
codecs keep (almost) no frame back: the encoder returns each frame's packet at once
(:data:`NO_DELAY`; lossy h264 three frames later, :data:`SHORT_DELAY`) and the muxer writes
it to the file when the next one comes (:data:`MUXER_OPTIONS`), so a killed writer's file
holds every frame but its last (lossy h264: its last 4): at most that far behind frames.csv.

Codecs: ``ffv1`` (lossless, compressed), ``raw`` (lossless, uncompressed, fastest; written by
:mod:`rigstream.acquisition.mkv` with one copy per frame and no encoder), ``h264_lossless``
(libx264 at qp 0), ``h264`` (lossy, ``crf``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from rigstream.acquisition.mkv import RawMatroskaWriter

logger = logging.getLogger(__name__)

LOSSLESS = frozenset({"ffv1", "raw", "h264_lossless"})

NO_DELAY = {"tune": "zerolatency"}
"""Lossless x264 returns each frame's packet at once (by default ``ultrafast`` holds one back
for variable-rate input); at qp 0 this costs no bytes. FFV1 never holds a frame back."""
SHORT_DELAY = {"x264-params": "force-cfr=1:rc-lookahead=3:sliced-threads=1"}
"""Lossy x264 holds 3 frames back instead of 11 (``veryfast``'s 10-frame lookahead). Not
zerolatency: without B-frames and mb-tree its files came out 1.7-2x bigger at the same crf;
these are 0.7-0.8x, at 0.3 dB lower PSNR, on a camera-like scene. Sliced threads, so more
threads add no delay."""
MUXER_OPTIONS = {"cluster_size_limit": "0", "flush_packets": "1"}
"""One cluster per frame (a cluster holding any bytes is closed when the next packet comes),
handed to the file after every packet: FFmpeg's Matroska muxer keeps the open cluster in
memory (up to 5 MiB or 5 s by default) and the file's write buffer holds a further 32 KiB,
which left a killed writer's file empty after 100 frames. The cost: ~16 bytes and one
write() per frame."""


def _codec_settings(codec: str, channels: int, crf: int) -> tuple[str, str, dict[str, str]]:
    """(FFmpeg encoder, pixel format, options) for a rig file's codec name."""
    mono = channels == 1
    if codec == "ffv1":
        return "ffv1", "gray" if mono else "bgr0", {"slices": "4", "slicecrc": "1"}
    if codec == "raw":
        return "rawvideo", "gray" if mono else "rgb24", {}
    if codec == "h264_lossless":
        if mono:  # the image goes in as the luma plane, untouched (see VideoWriter.write)
            return "libx264", "yuv420p", {"qp": "0", "preset": "ultrafast", **NO_DELAY}
        return "libx264rgb", "rgb24", {"qp": "0", "preset": "ultrafast", **NO_DELAY}
    if codec == "h264":
        return "libx264", "yuv420p", {"crf": str(crf), "preset": "veryfast", **SHORT_DELAY}
    raise ValueError(f"unknown codec {codec!r} (expected ffv1, raw, h264_lossless or h264)")


class VideoWriter:
    """Writes frames of one camera, in order, to ``path`` (.mkv)."""

    def __init__(self, path: str | Path, width: int, height: int, channels: int, codec: str,
                 rate_hz: float, crf: int = 18, threads: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        encoder, pix_fmt, options = _codec_settings(codec, channels, crf)
        self.channels = channels
        self.frames_written = 0
        self._closed = False
        self._raw: RawMatroskaWriter | None = None
        self.in_place = encoder == "rawvideo"
        """:meth:`write` may be given a view that can change under it (a frame store's slot)
        with a ``still_valid`` check: the raw writer copies once and checks after."""
        if self.in_place:
            self._raw = RawMatroskaWriter(self.path, width, height, channels, rate_hz)
            return
        self._in_format = "gray" if channels == 1 else "rgb24"
        self._luma_only = channels == 1 and pix_fmt == "yuv420p"
        self._size = (width, height)
        self._container = av.open(str(self.path), mode="w", format="matroska",
                                  container_options=MUXER_OPTIONS)
        rate = Fraction(rate_hz).limit_denominator(1000)
        self._stream = self._container.add_stream(encoder, rate=rate)
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = pix_fmt
        self._stream.options = options
        self._stream.time_base = Fraction(1, 1) / rate
        if threads:
            self._stream.codec_context.thread_count = threads

    def write(self, pixels: np.ndarray, still_valid: Callable[[], bool] | None = None) -> int:
        """Encode one frame; returns its index in the file. With ``still_valid`` (raw video
        only, :attr:`in_place`): -1, and nothing written, if it is False after the copy."""
        if self._raw is not None:
            k = self._raw.write(pixels, still_valid)
            self.frames_written = self._raw.frames_written
            return k
        if still_valid is not None:
            raise ValueError(f"{self.path}: only raw video is written from a slot in place")
        if self._luma_only:
            # Gray pixels become the Y plane as they are (chroma neutral): a gray -> YUV
            # conversion would squeeze them into video range and lose the lossless round trip.
            frame = av.VideoFrame(*self._size, "yuv420p")
            y, u, v = frame.planes
            _plane(y)[:, : self._size[0]] = pixels
            _plane(u)[:] = 128
            _plane(v)[:] = 128
        else:
            frame = av.VideoFrame.from_ndarray(pixels, format=self._in_format)
        frame.pts = self.frames_written
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1
        return self.frames_written - 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._raw is not None:
            self._raw.close()
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plane(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """A writable (height, line_size) view of one plane of a frame."""
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)


def read_frames(path: str | Path, gray: bool = True) -> Iterator[np.ndarray]:
    """Decode every frame of a video: (H, W) uint8 if ``gray`` else (H, W, 3) RGB.

    For YUV video read as gray, the luma plane is returned as stored (no range conversion),
    so gray recordings round-trip exactly.
    """
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if gray and frame.format.name.startswith("yuv"):
                yield _plane(frame.planes[0])[:, : frame.width].copy()
            else:
                yield frame.to_ndarray(format="gray" if gray else "rgb24")


def read_frames_from(path: str | Path, first: int = 0, gray: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """Decode from video frame ``first`` on: (frame number, pixels) in order, as :func:`read_frames`.

    Seeks to the keyframe at or before ``first`` and decodes forward, so a piece from the middle
    of a long recording costs a keyframe interval, not the whole file before it. Frame numbers
    come from the timestamps (our recordings are constant-rate: number = (pts - start) x time
    base x rate, which is exact at Matroska's millisecond base up to 1 kHz); a stream without
    timestamps or rate is decoded from the start and counted. The pixels are the decoder's: a
    view valid until the next step (copy to keep)."""
    first = max(0, int(first))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        start = stream.start_time or 0
        timed = rate is not None and stream.time_base is not None
        if timed and first > 0:
            target = start + int(Fraction(first) / (rate * stream.time_base))
            container.seek(target, stream=stream, backward=True, any_frame=False)
        counted = -1
        for frame in container.decode(stream):
            counted += 1
            if timed and frame.pts is not None:
                number = round((frame.pts - start) * stream.time_base * rate)
            elif first > 0 and counted == 0 and timed:
                raise ValueError(f"{path}: a frame without a timestamp after seeking; cannot number it")
            else:
                number = counted
            if number < first:
                continue
            if gray and frame.format.name.startswith("yuv"):
                yield number, _plane(frame.planes[0])[:, : frame.width]
            else:
                yield number, frame.to_ndarray(format="gray" if gray else "rgb24")


def count_frames(path: str | Path) -> int:
    """Frames that really decode (not the container's claim)."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
