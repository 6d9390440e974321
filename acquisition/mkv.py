"""Uncompressed video written straight to Matroska: one copy per frame, no encoder, no muxer.

At the reference rig's rate (2 x 1440x1080 mono8 at 226 Hz, 703 MB/s) the raw path through
PyAV copies each frame four times (into an AVFrame, into a packet, into the muxer's buffer,
into the page cache). This writer copies it once, from wherever it is (a frame store's slot)
into a page-aligned staging buffer, and hands the buffer to the disk with ``O_DIRECT`` in
large aligned chunks: no page-cache copy, no dirty pages crowding the frame stores, about a
fifth of the CPU (measured in ``rigstream bench raw-writer``). Where the filesystem refuses
``O_DIRECT`` (tmpfs, some network filesystems) the same writes go through the page cache.

The file is what FFmpeg's own Matroska muxer writes for rawvideo (``V_UNCOMPRESSED`` with a
FourCC colour space: ``Y800`` for mono8, ``RGB`` + 24 for RGB), so FFmpeg, PyAV, OpenCV and
everything built on them (DeepLabCut, anipose) read it. It stays readable after a crash:
the segment and the newest cluster are written with "unknown size" and patched when they
close, and nothing is held back longer than ``FLUSH_S``. At close the writer adds the cues
(one per frame, so a reader seeks to any frame) and the duration.

A frame taken from a store in place is checked after its copy (``still_valid``): one the
camera overwrote meanwhile is taken back out of the staging buffer, so what reaches the file
is always whole.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import struct
import time
from array import array
from collections.abc import Callable
from pathlib import Path

import numpy as np

ALIGN = 4096
"""O_DIRECT needs file offsets, sizes and buffer addresses aligned to the device's block."""
CHUNK = 8 << 20
"""Bytes handed to the disk per write."""
FLUSH_S = 0.5
"""Staged frames go to disk at least this often (a crash loses at most this much)."""
CLUSTER_BYTES = 8 << 20
CLUSTER_MAX_MS = 30_000
"""A new cluster every ~CLUSTER_BYTES of frames, and before block time codes (int16 ms
relative to the cluster's) could overflow."""

_UNKNOWN = b"\x01\xff\xff\xff\xff\xff\xff\xff"
"""An 8-byte EBML size meaning "unknown": a segment or cluster still being written."""
_SEEKHEAD_RESERVED = 96
"""Bytes kept after the EBML header for the seek head (Info, Tracks, Cues) and a Void."""

# Element IDs (Matroska specification, RFC 9559).
EBML, DOCTYPE = 0x1A45DFA3, 0x4282
SEGMENT, SEEKHEAD, SEEK, SEEK_ID, SEEK_POSITION, VOID = (0x18538067, 0x114D9B74, 0x4DBB, 0x53AB,
                                                        0x53AC, 0xEC)
INFO, TIMESTAMP_SCALE, DURATION, MUXING_APP, WRITING_APP = 0x1549A966, 0x2AD7B1, 0x4489, 0x4D80, 0x5741
TRACKS, TRACK_ENTRY, TRACK_NUMBER, TRACK_UID, TRACK_TYPE, FLAG_LACING, CODEC_ID = (
    0x1654AE6B, 0xAE, 0xD7, 0x73C5, 0x83, 0x9C, 0x86)
DEFAULT_DURATION, VIDEO, PIXEL_WIDTH, PIXEL_HEIGHT, COLOUR_SPACE = 0x23E383, 0xE0, 0xB0, 0xBA, 0x2EB524
CLUSTER, CLUSTER_TIMESTAMP, SIMPLE_BLOCK = 0x1F43B675, 0xE7, 0xA3
CUES, CUE_POINT, CUE_TIME, CUE_TRACK_POSITIONS, CUE_TRACK, CUE_CLUSTER_POSITION, CUE_RELATIVE_POSITION = (
    0x1C53BB6B, 0xBB, 0xB3, 0xB7, 0xF7, 0xF1, 0xF0)

FOURCC = {1: b"Y800", 3: b"RGB\x18"}
"""FFmpeg's raw FourCC per channel count (mono8, packed RGB24)."""


def _id(eid: int) -> bytes:
    return eid.to_bytes((eid.bit_length() + 7) // 8, "big")


def _size(n: int, width: int = 0) -> bytes:
    """An EBML variable-size integer: the shortest that holds ``n``, or ``width`` bytes."""
    length = width or next(k for k in range(1, 9) if n < (1 << (7 * k)) - 1)
    return ((1 << (7 * length)) | n).to_bytes(length, "big")


def _el(eid: int, payload: bytes) -> bytes:
    return _id(eid) + _size(len(payload)) + payload


def _uint(eid: int, value: int) -> bytes:
    return _el(eid, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _void(total: int) -> bytes:
    """A Void element of exactly ``total`` bytes (>= 2)."""
    if total < 2:
        raise ValueError("a Void element takes at least 2 bytes")
    width = 1 if total - 2 < 127 else 8
    return _id(VOID) + _size(total - 1 - width, width) + bytes(total - 1 - width)


class RawMatroskaWriter:
    """Writes frames of one camera, in order, uncompressed to ``path`` (.mkv)."""

    def __init__(self, path: str | Path, width: int, height: int, channels: int,
                 rate_hz: float, direct: bool = True) -> None:
        if channels not in FOURCC:
            raise ValueError(f"raw video takes 1 or 3 channels, not {channels}")
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive, not {rate_hz}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.shape = (height, width) if channels == 1 else (height, width, channels)
        self.frame_bytes = width * height * channels
        self.rate_hz = float(rate_hz)
        self.frames_written = 0
        self._closed = False
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        """Buffered: the head, the tail and the patches."""
        self._dfd = -1
        """O_DIRECT, for the aligned chunks (-1: the filesystem refuses it)."""
        if direct and hasattr(os, "O_DIRECT"):
            try:
                self._dfd = os.open(self.path, os.O_WRONLY | os.O_DIRECT)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    os.close(self._fd)
                    raise
        self._block_head = len(_id(SIMPLE_BLOCK)) + 8 + 4
        capacity = CHUNK + 2 * (self.frame_bytes + self._block_head + 64) + ALIGN
        self._stage_mm = mmap.mmap(-1, -(-capacity // ALIGN) * ALIGN)
        self._stage = np.frombuffer(self._stage_mm, np.uint8)
        self._fill = 0
        """Bytes staged (file offset ``self._flushed`` onwards)."""
        self._flushed = 0
        """File offset up to which everything has been written (a multiple of ALIGN while
        direct writes go on)."""
        self._last_flush = time.monotonic()
        self._cue_ms = array("q")
        self._cue_cluster = array("q")
        self._cue_rel = array("q")
        self._cluster_pos = -1
        """Segment-relative offset of the open cluster (-1: none)."""
        self._cluster_ms = 0
        self._cluster_limit = max(1, CLUSTER_BYTES // (self.frame_bytes + self._block_head))
        self._cluster_frames = 0
        try:
            self._write_head(width, height, channels)
        except BaseException:
            self._release()
            raise

    # -- layout ------------------------------------------------------------------------------------

    def _write_head(self, width: int, height: int, channels: int) -> None:
        ebml = _el(EBML, b"".join([
            _uint(0x4286, 1), _uint(0x42F7, 1), _uint(0x42F2, 4), _uint(0x42F3, 8),
            _el(DOCTYPE, b"matroska"), _uint(0x4287, 4), _uint(0x4285, 2)]))
        segment = _id(SEGMENT) + _UNKNOWN
        self._segment_size_at = len(ebml) + len(_id(SEGMENT))
        self._segment_start = len(ebml) + len(segment)
        app = b"rigstream"
        info = _el(INFO, b"".join([
            _uint(TIMESTAMP_SCALE, 1_000_000), _el(MUXING_APP, app), _el(WRITING_APP, app),
            _el(DURATION, struct.pack(">d", 0.0))]))
        self._duration_at = self._segment_start + _SEEKHEAD_RESERVED + len(info) - 8
        video = _el(VIDEO, b"".join([_uint(PIXEL_WIDTH, width), _uint(PIXEL_HEIGHT, height),
                                     _el(COLOUR_SPACE, FOURCC[channels])]))
        tracks = _el(TRACKS, _el(TRACK_ENTRY, b"".join([
            _uint(TRACK_NUMBER, 1), _uint(TRACK_UID, 1), _uint(TRACK_TYPE, 1), _uint(FLAG_LACING, 0),
            _el(CODEC_ID, b"V_UNCOMPRESSED"),
            _uint(DEFAULT_DURATION, round(1e9 / self.rate_hz)), video])))
        self._info_pos = _SEEKHEAD_RESERVED
        self._tracks_pos = _SEEKHEAD_RESERVED + len(info)
        self._stage_bytes(ebml + segment + self._seekhead() + info + tracks)

    def _seekhead(self, cues_pos: int | None = None) -> bytes:
        """The seek head padded with a Void to exactly _SEEKHEAD_RESERVED bytes."""
        entries = [(INFO, self._info_pos), (TRACKS, self._tracks_pos)]
        if cues_pos is not None:
            entries.append((CUES, cues_pos))
        body = b"".join(_el(SEEK, _el(SEEK_ID, _id(eid)) + _uint(SEEK_POSITION, pos))
                        for eid, pos in entries)
        head = _el(SEEKHEAD, body)
        return head + _void(_SEEKHEAD_RESERVED - len(head))

    # -- frames ------------------------------------------------------------------------------------

    def write(self, pixels: np.ndarray, still_valid: Callable[[], bool] | None = None) -> int:
        """Append one frame; returns its index in the file, or -1 if ``still_valid()`` said,
        after the copy, that ``pixels`` changed under it (nothing of it is kept)."""
        if self._closed:
            raise ValueError(f"{self.path}: writer closed")
        if pixels.shape != self.shape or pixels.dtype != np.uint8:
            raise ValueError(f"{self.path}: frame {pixels.shape} {pixels.dtype}, this video takes "
                             f"{self.shape} uint8")
        k = self.frames_written
        t_ms = round(k * 1000 / self.rate_hz)
        mark = (self._fill, self._cluster_pos, self._cluster_ms, self._cluster_frames)
        opened = False
        if (self._cluster_pos < 0 or self._cluster_frames >= self._cluster_limit
                or t_ms - self._cluster_ms > CLUSTER_MAX_MS):
            self._open_cluster(t_ms)
            opened = True
        block_pos = self._flushed + self._fill
        head = (_id(SIMPLE_BLOCK) + _size(4 + self.frame_bytes, 8) + b"\x81"
                + struct.pack(">h", t_ms - self._cluster_ms) + b"\x80")
        self._stage_bytes(head)
        dst = self._stage[self._fill:self._fill + self.frame_bytes].reshape(self.shape)
        np.copyto(dst, pixels)
        if still_valid is not None and not still_valid():
            # Taken back out; a cluster opened for this frame goes too, and the one before,
            # whose size its opening set, is open again.
            self._fill, self._cluster_pos, self._cluster_ms, self._cluster_frames = mark
            if opened and self._cluster_pos >= 0:
                self._patch(self._segment_start + self._cluster_pos + len(_id(CLUSTER)), _UNKNOWN)
            return -1
        self._fill += self.frame_bytes
        self._cluster_frames += 1
        self._cue_ms.append(t_ms)
        self._cue_cluster.append(self._cluster_pos)
        self._cue_rel.append(block_pos - self._segment_start - self._cluster_pos)
        self.frames_written = k + 1
        self._drain()
        return k

    def _open_cluster(self, t_ms: int) -> None:
        self._close_cluster()
        self._cluster_pos = self._flushed + self._fill - self._segment_start
        self._cluster_ms = t_ms
        self._cluster_frames = 0
        self._stage_bytes(_id(CLUSTER) + _UNKNOWN + _uint(CLUSTER_TIMESTAMP, t_ms))

    def _close_cluster(self) -> None:
        """Patch the open cluster's size (it ends where the next element starts)."""
        if self._cluster_pos < 0:
            return
        start = self._segment_start + self._cluster_pos
        body = self._flushed + self._fill - (start + len(_id(CLUSTER)) + 8)
        self._patch(start + len(_id(CLUSTER)), _size(body, 8))
        self._cluster_pos = -1

    # -- staging and disk --------------------------------------------------------------------------

    def _stage_bytes(self, data: bytes) -> None:
        self._stage[self._fill:self._fill + len(data)] = np.frombuffer(data, np.uint8)
        self._fill += len(data)

    def _patch(self, offset: int, data: bytes) -> None:
        """Overwrite bytes at file ``offset``, staged or already on disk."""
        cut = max(0, min(len(data), self._flushed - offset))
        if cut:
            os.pwrite(self._fd, data[:cut], offset)
        if cut < len(data):
            at = offset + cut - self._flushed
            self._stage[at:at + len(data) - cut] = np.frombuffer(data[cut:], np.uint8)

    def _drain(self, force: bool = False) -> None:
        """Write whole chunks (and, every FLUSH_S, the aligned part of what is staged)."""
        now = time.monotonic()
        if self._fill < CHUNK and not force and now - self._last_flush < FLUSH_S:
            return
        self._last_flush = now
        n = self._fill - self._fill % ALIGN
        if n <= 0:
            return
        view = memoryview(self._stage_mm)[:n]
        try:
            done = 0
            if self._dfd >= 0:
                try:
                    done = os.pwrite(self._dfd, view, self._flushed)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    os.close(self._dfd)  # refused after all: the page cache from here on
                    self._dfd = -1
            while done < n:  # the rest (all of it without O_DIRECT) through the page cache
                done += os.pwrite(self._fd, view[done:], self._flushed + done)
        finally:
            view.release()
        rest = self._fill - n
        self._stage[:rest] = self._stage[n:self._fill]
        self._fill = rest
        self._flushed += n

    def flush(self) -> None:
        """Everything staged to disk now (the unaligned tail through the page cache; no more
        direct writes after it)."""
        self._drain(force=True)
        if self._fill:
            os.pwrite(self._fd, memoryview(self._stage_mm)[:self._fill], self._flushed)
            self._flushed += self._fill
            self._fill = 0
        if self._dfd >= 0:
            os.close(self._dfd)
            self._dfd = -1

    # -- end ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the last cluster, add the cues, the duration and the segment's size."""
        if self._closed:
            return
        self._closed = True
        try:
            self._close_cluster()
            self.flush()
            cues_pos = self._flushed - self._segment_start
            cues = self._cues()
            os.pwrite(self._fd, cues, self._flushed)
            end = self._flushed + len(cues)
            self._patch(self._segment_start, self._seekhead(cues_pos))
            self._patch(self._duration_at, struct.pack(">d", self.frames_written * 1000 / self.rate_hz))
            self._patch(self._segment_size_at, _size(end - self._segment_start, 8))
            os.fsync(self._fd)
        finally:
            self._release()

    def _cues(self) -> bytes:
        points = [
            _el(CUE_POINT, _uint(CUE_TIME, t) + _el(CUE_TRACK_POSITIONS, _uint(CUE_TRACK, 1)
                + _uint(CUE_CLUSTER_POSITION, c) + _uint(CUE_RELATIVE_POSITION, r)))
            for t, c, r in zip(self._cue_ms, self._cue_cluster, self._cue_rel, strict=True)]
        return _el(CUES, b"".join(points))

    def _release(self) -> None:
        for fd in (self._dfd, self._fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._dfd = self._fd = -1
        del self._stage
        with contextlib.suppress(BufferError):
            self._stage_mm.close()

    def __enter__(self) -> RawMatroskaWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
