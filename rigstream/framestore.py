"""Frame stores: each camera's frames written once into shared memory and read in place.

A :class:`FrameStore` is one camera's ring of ``capacity`` slots in a POSIX shared-memory
segment (``/dev/shm/NAME``). The camera node (the only writer) puts trigger index ``n`` into
slot ``n % capacity``: first the slot's index word is set to -1, then the pixels and the
header fields are written, then the index word is set to ``n``, and only then the store's
``head`` (highest index written + 1). A reader checks the slot's index word before and after
it reads, so it can tell a slot that was overwritten while it read (a seqlock whose sequence
is the trigger index). Every trigger index gets exactly one record, in order: a frame, or a
notice without pixels (dropped, incomplete). The end of the stream is a word in the store
(``end``: the number of indices accounted for), so it cannot be lost the way a message can.

Readers never make the writer wait. A :class:`StoreCursor` reads every index in order at its
own pace (the recorder, the frame-set assembler); if it falls more than the ring behind, the
indices overwritten before it read them come back as ``overrun`` records, so a slow reader
knows exactly what it missed. Random access by index (the clip writer's history, the pose
engine's newest set) uses :meth:`FrameStore.header` and :meth:`FrameStore.pixels` with
:meth:`FrameStore.holds` after the read.

Memory ordering: the seqlock relies on stores not being reordered with stores and loads not
with loads, which x86-64 guarantees (each numpy assignment here is a separate C call, so the
compiler cannot reorder them either). On weakly ordered CPUs (aarch64) a reader could in rare
cases see a new index word before the pixels it guards; rigstream's hosts are x86-64 so far.

Waking readers: the writer rings the store's ``head`` word as a futex after each record (one
``futex_wake`` syscall, a microsecond when nobody waits), so a reader in
:meth:`FrameStore.wait_head` is woken by the camera's own thread, with no socket hop between
(the headers on ZeroMQ still wake the readers that wait on sockets). Where futexes cannot be
used (not Linux, or an unknown CPU), :meth:`FrameStore.wait_head` says so and readers wait on
the headers instead.

Segments are named per run (:func:`store_name`), created by the camera node (or a bridge) and
unlinked by it when it closes; the session supervisor unlinks what a killed writer left
(:func:`unlink_run`), and :func:`sweep_stale` removes segments whose writer process is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import mmap
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from rigstream.basics import InputError
from rigstream.protocol import FLAG_DROPPED, FrameHeader

logger = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
PREFIX = "rigstream-"
MAGIC = 0x31455245_54535352  # "RSSTORE1" little-endian
VERSION = 1
PAGE = 4096
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
"""Map every page at once: a writer's first pass round the ring (and a reader's) would
otherwise take a page fault per 4 KiB, 3x the cost of the copy itself at 1440x1080."""

# Control block: int64 words at offset 0.
_C_MAGIC, _C_VERSION, _C_CAPACITY, _C_HEIGHT, _C_WIDTH, _C_CHANNELS, _C_ITEMSIZE = range(7)
_C_PIXELS_OFFSET, _C_STRIDE, _C_PID, _C_HEAD, _C_END, _C_CREATED_NS = range(7, 13)
_CONTROL_WORDS = 64
_WAKE_OFFSET, _WAKE_BYTES = 256, 256
"""The address the store's headers are published on (UTF-8, NUL-padded), in the control block."""

_FUTEX_WAIT, _FUTEX_WAKE = 0, 1  # shared (not FUTEX_PRIVATE_FLAG): the word is in another process's mapping
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "armv7l": 240}.get(platform.machine()) \
    if os.uname().sysname == "Linux" and sys.byteorder == "little" else None


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load_syscall() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if _SYS_FUTEX is None:
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    return fn


_syscall = _load_syscall()

# Slot header: int64 words per slot.
FIELDS = ("index", "frame_id", "t_camera_ns", "t_pi_ns", "t_host_ns", "flags", "truth_index",
          "exposure_ns", "t_write_ns")
_F = {name: i for i, name in enumerate(FIELDS)}
_SLOT_WORDS = 16


class StoreError(InputError):
    """A store that cannot be made or opened: names the segment and why."""


class StoreMissing(StoreError):
    """No segment of that name (its writer has not made it yet, or has unlinked it)."""


@dataclass(frozen=True)
class StoreLayout:
    """Shape of one camera's store: ``capacity`` slots of (height, width[, channels]) pixels."""

    capacity: int
    height: int
    width: int
    channels: int = 1
    dtype: Literal["uint8", "uint16"] = "uint8"

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (self.height, self.width) if self.channels == 1 else (self.height, self.width,
                                                                      self.channels)

    @property
    def frame_bytes(self) -> int:
        return self.height * self.width * self.channels * np.dtype(self.dtype).itemsize

    @property
    def stride(self) -> int:
        """Bytes from one slot's pixels to the next (64-byte aligned)."""
        return -(-self.frame_bytes // 64) * 64

    @property
    def pixels_offset(self) -> int:
        head = _CONTROL_WORDS * 8 + self.capacity * _SLOT_WORDS * 8
        return -(-head // PAGE) * PAGE

    @property
    def total_bytes(self) -> int:
        return self.pixels_offset + self.capacity * self.stride


def store_name(run: str, camera: str) -> str:
    """The segment name of ``camera``'s store in the run whose runtime folder is ``run``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", camera)[:64]
    return f"{run_prefix(run)}{safe}"


def run_prefix(run: str) -> str:
    """The name prefix of every store of one run (``rigstream-<10 hex of the run folder>-``)."""
    return f"{PREFIX}{hashlib.sha1(run.encode()).hexdigest()[:10]}-"


class Record(NamedTuple):
    """What a cursor read for one trigger index."""

    index: int
    state: Literal["frame", "notice", "overrun"]
    """``frame``: pixels in ``pixels``; ``notice``: no pixels (see ``flags``); ``overrun``: the
    slot was overwritten before this reader read it (no header either)."""
    fields: np.ndarray | None
    """The slot's header words (int64, :data:`FIELDS` order), a copy; None when overrun."""
    pixels: np.ndarray | None

    def field(self, name: str) -> int:
        assert self.fields is not None
        return int(self.fields[_F[name]])

    def header(self, camera: str, layout: StoreLayout) -> FrameHeader:
        """The record as the FrameHeader its camera node published (``seq`` = trigger index;
        an overrun record becomes a dropped header with no times)."""
        return frame_header(camera, layout, self.index, self.fields)


def frame_header(camera: str, layout: StoreLayout, index: int, fields: np.ndarray | None) -> FrameHeader:
    """A FrameHeader from a slot's header words (None: an overrun, dropped with no times)."""
    if fields is None:
        return FrameHeader(camera=camera, seq=index, frame_id=-1, trigger_index=index,
                           t_camera_ns=-1, t_host_ns=-1, width=layout.width, height=layout.height,
                           channels=layout.channels, dtype=layout.dtype, flags=FLAG_DROPPED,
                           slot=index % layout.capacity)
    f = fields.tolist()
    return FrameHeader(camera=camera, seq=index, frame_id=f[1], trigger_index=index,
                       t_camera_ns=f[2], t_pi_ns=f[3], t_host_ns=f[4], width=layout.width,
                       height=layout.height, channels=layout.channels, dtype=layout.dtype,
                       exposure_us=f[7] / 1e3, flags=f[5], truth_index=f[6],
                       slot=index % layout.capacity)


class FrameStore:
    """One camera's ring of frame slots in shared memory. Make one with :meth:`create`
    (the writer) or :meth:`attach` (readers, read-only); ``close()`` is idempotent."""

    def __init__(self, name: str, mm: mmap.mmap, layout: StoreLayout, writable: bool,
                 owner: bool) -> None:
        self.name = name
        self.layout = layout
        self.writable = writable
        self._owner = owner
        self._mm: mmap.mmap | None = mm
        self.capacity = layout.capacity
        self._control = np.ndarray((_CONTROL_WORDS,), np.int64, mm, 0)
        self._slots = np.ndarray((layout.capacity, _SLOT_WORDS), np.int64, mm, _CONTROL_WORDS * 8)
        self._pixels = np.ndarray((layout.capacity, *layout.frame_shape), layout.dtype, mm,
                                  layout.pixels_offset,
                                  (layout.stride, *_c_strides(layout)))
        if not writable:
            for a in (self._control, self._slots, self._pixels):
                a.flags.writeable = False
        self._fields = np.zeros(_SLOT_WORDS, np.int64)
        self._head_addr = ctypes.c_void_p(self._control.ctypes.data + _C_HEAD * 8)
        """The head word's low 32 bits (little-endian): the futex readers sleep on."""
        self._pid_checked = 0.0
        self._pid_alive = True

    # -- making and opening -------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, layout: StoreLayout, wake_address: str = "") -> FrameStore:
        """A new segment, its memory reserved up front (a full /dev/shm fails here with the
        sizes, never later with SIGBUS). ``wake_address``: where the writer publishes each
        record's header (readers subscribe there to be woken)."""
        wake = wake_address.encode()
        if len(wake) >= _WAKE_BYTES:
            raise StoreError(f"store {name}: wake-up address longer than {_WAKE_BYTES - 1} bytes: "
                             f"{wake_address!r}")
        if layout.capacity < 2:
            raise StoreError(f"store {name}: capacity must be at least 2 slots, got {layout.capacity}")
        path = SHM_DIR / name
        need = layout.total_bytes
        free = shm_free_bytes()
        if free is not None and need > free:
            raise StoreError(
                f"store {name}: needs {need / 2**30:.2f} GiB of shared memory ({layout.capacity} "
                f"frames of {layout.width}x{layout.height}), {SHM_DIR} has {free / 2**30:.2f} GiB free")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise StoreError(f"store {name}: {path} already exists (another run with the same "
                             f"runtime folder, or a leftover: rigstream sweeps stale ones)") from None
        except OSError as exc:
            raise StoreError(f"store {name}: cannot create {path}: {exc.strerror}") from None
        try:
            try:
                os.posix_fallocate(fd, 0, need)
            except OSError as exc:
                raise StoreError(f"store {name}: cannot reserve {need / 2**30:.2f} GiB in {SHM_DIR}: "
                                 f"{exc.strerror}") from None
            mm = mmap.mmap(fd, need, mmap.MAP_SHARED | _POPULATE, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        os.close(fd)
        store = cls(name, mm, layout, writable=True, owner=True)
        c = store._control
        c[:] = 0
        c[_C_VERSION], c[_C_CAPACITY], c[_C_HEIGHT] = VERSION, layout.capacity, layout.height
        c[_C_WIDTH], c[_C_CHANNELS] = layout.width, layout.channels
        c[_C_ITEMSIZE] = np.dtype(layout.dtype).itemsize
        c[_C_PIXELS_OFFSET], c[_C_STRIDE] = layout.pixels_offset, layout.stride
        c[_C_PID], c[_C_HEAD], c[_C_END] = os.getpid(), 0, -1
        c[_C_CREATED_NS] = time.time_ns()
        mm[_WAKE_OFFSET:_WAKE_OFFSET + len(wake)] = wake
        store._slots[:, _F["index"]] = -1
        c[_C_MAGIC] = MAGIC  # last: a reader that sees the magic sees a whole control block
        logger.info("store %s: %d slots of %dx%dx%d %s (%.1f MiB)", name, layout.capacity,
                    layout.width, layout.height, layout.channels, layout.dtype, need / 2**20)
        return store

    @classmethod
    def attach(cls, name: str) -> FrameStore:
        """Open an existing segment read-only; StoreMissing if there is none (yet)."""
        path = SHM_DIR / name
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise StoreMissing(f"store {name}: no segment {path}") from None
        except OSError as exc:
            raise StoreError(f"store {name}: cannot open {path}: {exc.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if size < _CONTROL_WORDS * 8:
                raise StoreMissing(f"store {name}: {path} is still being made")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED | _POPULATE, mmap.PROT_READ)
        finally:
            os.close(fd)
        c = np.ndarray((_CONTROL_WORDS,), np.int64, mm, 0)
        if int(c[_C_MAGIC]) != MAGIC:
            mm.close()
            raise StoreMissing(f"store {name}: {path} is still being made (or is not a store)")
        if int(c[_C_VERSION]) != VERSION:
            mm.close()
            raise StoreError(f"store {name}: version {int(c[_C_VERSION])}, this build reads {VERSION}")
        itemsize = int(c[_C_ITEMSIZE])
        layout = StoreLayout(int(c[_C_CAPACITY]), int(c[_C_HEIGHT]), int(c[_C_WIDTH]),
                             int(c[_C_CHANNELS]), "uint8" if itemsize == 1 else "uint16")
        if layout.total_bytes > size or layout.pixels_offset != int(c[_C_PIXELS_OFFSET]):
            mm.close()
            raise StoreError(f"store {name}: {path} holds {size} bytes, its header describes "
                             f"{layout.total_bytes}")
        return cls(name, mm, layout, writable=False, owner=False)

    # -- state ----------------------------------------------------------------------------------

    @property
    def head(self) -> int:
        """Highest trigger index written + 1."""
        return int(self._control[_C_HEAD])

    @property
    def end(self) -> int:
        """-1 while the stream runs; at its end, the number of trigger indices accounted for."""
        return int(self._control[_C_END])

    @property
    def wake_address(self) -> str:
        """Where the writer publishes each record's header ("" if it does not say)."""
        assert self._mm is not None
        raw = self._mm[_WAKE_OFFSET:_WAKE_OFFSET + _WAKE_BYTES]
        return raw.split(b"\0", 1)[0].decode(errors="replace")

    @property
    def writer_pid(self) -> int:
        return int(self._control[_C_PID])

    def writer_alive(self, every_s: float = 0.2) -> bool:
        """Whether the writing process still exists (checked at most every ``every_s``)."""
        now = time.monotonic()
        if now - self._pid_checked >= every_s:
            self._pid_checked = now
            self._pid_alive = pid_alive(self.writer_pid)
        return self._pid_alive

    @property
    def ended(self) -> bool:
        """The stream ended (its end word is set) or its writer is gone without setting it."""
        return self.end >= 0 or not self.writer_alive()

    # -- writing --------------------------------------------------------------------------------

    def write(self, index: int, pixels: np.ndarray | None, *, frame_id: int, t_camera_ns: int,
              t_pi_ns: int, t_host_ns: int, flags: int, truth_index: int = -1,
              exposure_ns: int = 0) -> int:
        """Store trigger index ``index`` (pixels copied once into its slot; None for a notice)
        and publish it; returns the slot. Indices must increase."""
        if not self.writable:
            raise StoreError(f"store {self.name}: opened read-only")
        head = int(self._control[_C_HEAD])
        if index < head:
            raise StoreError(f"store {self.name}: index {index} written after {head - 1}")
        slot = index % self.capacity
        words = self._slots[slot]
        words[0] = -1  # invalid while being written
        if pixels is not None:
            self._pixels[slot] = pixels
        f = self._fields
        f[1], f[2], f[3], f[4], f[5] = frame_id, t_camera_ns, t_pi_ns, t_host_ns, flags
        f[6], f[7], f[8] = truth_index, exposure_ns, time.monotonic_ns()
        words[1:len(FIELDS)] = f[1:len(FIELDS)]
        words[0] = index
        self._control[_C_HEAD] = index + 1
        self._ring()
        return slot

    def finish(self, total: int) -> None:
        """End of stream: indices [0, total) are accounted for."""
        if not self.writable:
            raise StoreError(f"store {self.name}: opened read-only")
        self._control[_C_END] = max(total, self.head)
        self._ring()

    def _ring(self) -> None:
        """Wake every reader waiting in :meth:`wait_head` (the head or end word moved)."""
        if _syscall is not None:
            _syscall(_SYS_FUTEX, self._head_addr, _FUTEX_WAKE, 0x7FFFFFFF, None, None, 0)

    def wait_head(self, seen: int, timeout_s: float) -> bool | None:
        """Sleep until the head moves from ``seen`` (or the stream ends), at most ``timeout_s``:
        True if the head has moved, False if not (timed out, ended, or a spurious wake-up),
        None if this host cannot wait on the store (the caller waits on the headers instead)."""
        if _syscall is None:
            return None
        if self.head == seen and self.end < 0:
            ts = _Timespec(int(timeout_s), int((timeout_s % 1.0) * 1e9))
            # The kernel sleeps only while the word still holds ``seen`` (no lost wake-up).
            _syscall(_SYS_FUTEX, self._head_addr, _FUTEX_WAIT, ctypes.c_long(seen & 0xFFFFFFFF),
                     ctypes.byref(ts), None, 0)
        return self.head != seen

    # -- reading --------------------------------------------------------------------------------

    def holds(self, index: int) -> bool:
        """Whether slot ``index % capacity`` holds ``index`` now (check after reading)."""
        return index >= 0 and int(self._slots[index % self.capacity, 0]) == index

    def header(self, index: int) -> np.ndarray | None:
        """A copy of ``index``'s header words, or None if the slot does not hold it."""
        words = self._slots[index % self.capacity, :len(FIELDS)].copy()
        if words[0] != index or not self.holds(index):
            return None
        return words

    def pixels(self, index: int) -> np.ndarray:
        """A read-only view of ``index``'s slot pixels: valid only while :meth:`holds` says so
        (check after using it)."""
        return self._pixels[index % self.capacity]

    def read(self, index: int, out: np.ndarray | None = None) -> Record | None:
        """``index`` as a Record (pixels copied into ``out`` if given, else a view); None if it
        is not written yet; an ``overrun`` record if its slot already holds a later index."""
        if index >= self.head:
            return None
        fields = self.header(index)
        if fields is None:
            return Record(index, "overrun", None, None)
        if fields[_F["flags"]] & FLAG_DROPPED:  # a notice: no pixels
            return Record(index, "notice", fields, None)
        view = self._pixels[index % self.capacity]
        if out is not None:
            np.copyto(out, view)
            view = out
        if not self.holds(index):
            return Record(index, "overrun", None, None)
        return Record(index, "frame", fields, view)

    def latest_time_index(self, t_pi_ns: int) -> int | None:
        """The held index whose pulse time is nearest ``t_pi_ns`` (None if none is held)."""
        slots = self._slots[:, :len(FIELDS)].copy()
        valid = (slots[:, 0] >= 0) & (slots[:, _F["t_pi_ns"]] >= 0)
        if not valid.any():
            return None
        dt = np.abs(slots[valid, _F["t_pi_ns"]] - t_pi_ns)
        return int(slots[valid, 0][int(np.argmin(dt))])

    # -- end ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap (and, for the writer, unlink the segment); idempotent. Views handed out before
        must not be used after."""
        if self._mm is None:
            return
        mm, self._mm = self._mm, None
        del self._control, self._slots, self._pixels
        try:
            mm.close()
        except BufferError:
            logger.debug("store %s: views still held at close; unmapped at exit", self.name)
        if self._owner:
            unlink(self.name)

    def __enter__(self) -> FrameStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StoreCursor:
    """Reads one store's trigger indices in order, every one, at the reader's own pace."""

    def __init__(self, store: FrameStore, start: int = 0) -> None:
        self.store = store
        self.next = start
        self.overruns = 0

    @property
    def backlog(self) -> int:
        return self.store.head - self.next

    @property
    def done(self) -> bool:
        """Every index of an ended stream has been read."""
        end = self.store.end
        return end >= 0 and self.next >= end

    def take(self, out: np.ndarray | None = None) -> Record | None:
        """The next index's record, or None if it is not written yet."""
        rec = self.store.read(self.next, out)
        if rec is None:
            return None
        if rec.state == "overrun":
            self.overruns += 1
        self.next += 1
        return rec


# -- segments of a host ------------------------------------------------------------------------


def unlink(name: str) -> bool:
    try:
        os.unlink(SHM_DIR / name)
    except FileNotFoundError:
        return False
    return True


def unlink_run(run: str) -> list[str]:
    """Unlink every store of the run (what a killed writer left); returns their names."""
    prefix = run_prefix(run)
    gone = [p.name for p in _segments() if p.name.startswith(prefix) and unlink(p.name)]
    if gone:
        logger.warning("unlinked %d frame store(s) left by a writer that did not close: %s",
                       len(gone), ", ".join(gone))
    return gone


def sweep_stale() -> list[str]:
    """Unlink every rigstream store on this host whose writer process no longer exists."""
    gone = []
    for path in _segments():
        try:
            with open(path, "rb") as f:
                words = np.frombuffer(f.read(_CONTROL_WORDS * 8), np.int64)
        except OSError:
            continue
        if len(words) < _CONTROL_WORDS or int(words[_C_MAGIC]) != MAGIC:
            # Half-made (its writer died between create and the magic) once it is a minute old.
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > 60 and unlink(path.name):
                    gone.append(path.name)
            continue
        if not pid_alive(int(words[_C_PID])) and unlink(path.name):
            gone.append(path.name)
    if gone:
        logger.warning("unlinked %d stale frame store(s) of processes that are gone: %s",
                       len(gone), ", ".join(gone))
    return gone


def _segments() -> list[Path]:
    try:
        return [p for p in SHM_DIR.iterdir() if p.name.startswith(PREFIX)]
    except OSError:
        return []


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is gone for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
    return True


def check_fits(need: dict[str, int], where: str) -> str:
    """One line saying what the stores ``need`` (bytes per camera) take, or StoreError when
    their sum does not fit this host's free shared memory or available RAM."""
    total = sum(need.values())
    free = shm_free_bytes()
    avail = mem_available_bytes()
    line = (f"frame stores {total / 2**30:.2f} GiB ("
            + ", ".join(f"{c} {b / 2**30:.2f}" for c, b in need.items()) + ")")
    limits = [(free, f"{SHM_DIR} has {(free or 0) / 2**30:.2f} GiB free"),
              (avail, f"the host has {(avail or 0) / 2**30:.2f} GiB of RAM available")]
    for limit, why in limits:
        if limit is not None and total > limit:
            raise StoreError(f"{where}: {line} do not fit: {why} (shorten ring_buffer.pre_s or "
                             f"margin_s, or lower the rate, size or number of cameras)")
    return line + " of " + (f"{free / 2**30:.1f} GiB free in {SHM_DIR}" if free is not None else "?")


def mem_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def shm_free_bytes() -> int | None:
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _c_strides(layout: StoreLayout) -> tuple[int, ...]:
    item = np.dtype(layout.dtype).itemsize
    if layout.channels == 1:
        return (layout.width * item, item)
    return (layout.width * layout.channels * item, layout.channels * item, item)
