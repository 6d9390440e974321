"""The camera interface every backend implements, and the buffer pool frames live in.

A backend only opens, configures, starts, hands over one frame (or None after a timeout),
stops and closes; the camera node owns stamping, indexing and publishing.
"""

from __future__ import annotations

import enum
import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rigstream.config import CameraConfig

logger = logging.getLogger(__name__)


class CameraState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    CONFIGURED = "configured"
    ACQUIRING = "acquiring"


class CameraError(RuntimeError):
    """A camera that cannot do what was asked; the message names the camera."""


@dataclass
class Frame:
    """One image as the camera delivered it.

    ``pixels``: (height, width) or (height, width, 3) uint8, owned by a BufferPool; call
    ``release(tracker)`` once it has been handed on so the buffer can be reused.
    """

    frame_id: int
    """The camera's frame counter (chunk FrameID); it advances for frames lost in transport."""
    t_camera_ns: int
    """Exposure start on the camera's clock (chunk Timestamp)."""
    pixels: np.ndarray | None
    incomplete: bool = False
    exposure_us: float = 0.0
    truth_index: int = -1
    """Simulation only: the pulse index this frame was really exposed on."""
    _pool: BufferPool | None = field(default=None, repr=False)

    def release(self, tracker: Any = None) -> None:
        if self._pool is not None and self.pixels is not None:
            self._pool.give_back(self.pixels, tracker)
            self._pool = None


class BufferPool:
    """Preallocated image buffers reused once ZeroMQ has finished sending them.

    ``acquire()`` returns a buffer nobody holds; a buffer handed to a zero-copy send comes back
    with its MessageTracker and is reused only when the tracker says the send is done.
    """

    def __init__(self, shape: tuple[int, ...], count: int, dtype: str = "uint8") -> None:
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self._free: list[np.ndarray] = [np.zeros(shape, self.dtype) for _ in range(count)]
        self._pending: list[tuple[np.ndarray, Any]] = []
        self._lock = threading.Lock()
        self.grown = 0
        """Buffers allocated after start because all were in flight (should stay 0)."""

    def acquire(self) -> np.ndarray:
        with self._lock:
            return self._acquire_locked()

    def _acquire_locked(self) -> np.ndarray:
        if not self._free and self._pending:
            still = []
            for buf, tracker in self._pending:
                if tracker is None or tracker.done:
                    self._free.append(buf)
                else:
                    still.append((buf, tracker))
            self._pending = still
        if self._free:
            return self._free.pop()
        self.grown += 1
        return np.zeros(self.shape, self.dtype)

    def give_back(self, buf: np.ndarray, tracker: Any = None) -> None:
        with self._lock:
            if tracker is None:
                self._free.append(buf)
            else:
                self._pending.append((buf, tracker))


class Camera(ABC):
    """One camera. Public methods check state and log; backends write the ``_do_*`` methods.

    Lifecycle: open -> configure -> start -> get_frame ... -> stop -> close. A camera is a
    context manager and ``close()`` is idempotent (it stops acquisition first if needed).
    """

    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self.state = CameraState.CLOSED

    @property
    def name(self) -> str:
        return self.config.name

    def open(self) -> None:
        self._require(CameraState.CLOSED, "open")
        self._do_open()
        self.state = CameraState.OPEN
        logger.info("camera %s opened (%s)", self.name, type(self).__name__)

    def configure(self) -> None:
        self._require((CameraState.OPEN, CameraState.CONFIGURED), "configure")
        self._do_configure()
        self.state = CameraState.CONFIGURED

    def start(self) -> None:
        self._require(CameraState.CONFIGURED, "start")
        self._do_start()
        self.state = CameraState.ACQUIRING
        logger.info("camera %s acquiring", self.name)

    def get_frame(self, timeout_s: float) -> Frame | None:
        """The next frame, or None if none came within ``timeout_s``."""
        self._require(CameraState.ACQUIRING, "get_frame")
        return self._do_get_frame(timeout_s)

    def stop(self) -> None:
        if self.state is CameraState.ACQUIRING:
            self._do_stop()
            self.state = CameraState.CONFIGURED
            logger.info("camera %s stopped", self.name)

    def close(self) -> None:
        if self.state is CameraState.CLOSED:
            return
        try:
            self.stop()
        finally:
            self._do_close()
            self.state = CameraState.CLOSED

    def stats(self) -> dict[str, Any]:
        """Backend counters for the summary (frames taken, faults injected, ...)."""
        return {}

    def latch_clock(self) -> tuple[int, int, int] | None:
        """Latch the camera's clock between two readings of the host's monotonic clock:
        ``(host_before_ns, camera_ns, host_after_ns)``, or None where the backend cannot
        (the PySpin driver latches with the ``TimestampLatch`` command and reads
        ``TimestampLatchValue``). The camera node feeds these to a camera -> host clock fit."""
        self._require(CameraState.ACQUIRING, "latch its clock")
        return self._do_latch_clock()

    def _do_latch_clock(self) -> tuple[int, int, int] | None:
        return None

    def __enter__(self) -> Camera:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require(self, allowed: CameraState | tuple[CameraState, ...], action: str) -> None:
        ok = allowed if isinstance(allowed, tuple) else (allowed,)
        if self.state not in ok:
            raise CameraError(
                f"camera {self.name}: cannot {action} while {self.state.value} "
                f"(needs {' or '.join(s.value for s in ok)})"
            )

    @abstractmethod
    def _do_open(self) -> None: ...

    @abstractmethod
    def _do_configure(self) -> None: ...

    @abstractmethod
    def _do_start(self) -> None: ...

    @abstractmethod
    def _do_get_frame(self, timeout_s: float) -> Frame | None: ...

    @abstractmethod
    def _do_stop(self) -> None: ...

    @abstractmethod
    def _do_close(self) -> None: ...
