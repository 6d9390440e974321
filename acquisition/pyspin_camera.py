"""The FLIR camera driver, over PySpin (the Python wheel of FLIR's Spinnaker SDK).

PySpin is imported here and nowhere else, and only when a PySpin camera is opened or listed,
so ``import rigstream.acquisition`` works on a machine without Spinnaker.

Every camera is hardware-triggered, one image per rising edge on its ``trigger_line``: the
primary's comes from the Pi, each secondary's from the primary's strobe (its ``strobe_line``
driven high while it exposes, ``LineSource = ExposureActive``). A secondary must be acquiring
before the primary's first exposure, or it misses that strobe: the session starts secondaries
before the primary (see :attr:`PySpinCamera.role`); the driver does not order cameras itself.

Each image carries chunk data, read from the image itself (never from the node map, which
describes whichever image the camera made last): FrameID, Timestamp (ns on the camera's
clock) and ExposureTime (µs). Images come out of the stream buffers oldest first
(``StreamBufferHandlingMode = OldestFirst``); when all ``buffer_count`` are full the camera
drops new images, which shows as a jump in FrameID that the camera node reports as drops.
An incomplete image (data lost in transport) is released at once and handed on as an
incomplete :class:`Frame` without pixels, as the simulated camera does, so the node publishes
an incomplete drop for its trigger index.

API facts used (Spinnaker/PySpin, checked against FLIR's example code and projects using
PySpin; not yet run on hardware): ``System.GetInstance``,
``GetCameras``, ``CameraList.GetBySerial``, ``Init``/``DeInit``, node maps via ``GetNodeMap``,
``GetTLDeviceNodeMap``, ``GetTLStreamNodeMap``; typed node pointers ``CEnumerationPtr`` ... with
``IsAvailable``/``IsReadable``/``IsWritable``; an enumeration is set with
``SetIntValue(node.GetEntryByName(name).GetValue())``; ``GetNextImage(timeout_ms)`` raises
``SpinnakerException`` with ``errorcode`` -1011 (``SPINNAKER_ERR_TIMEOUT``) when no image came;
``ReleaseInstance`` raises -1004 while anything still references a camera.
"""

from __future__ import annotations

import collections
import importlib
import logging
import time
from typing import Any

import numpy as np

from rigstream.acquisition.camera import BufferPool, Camera, CameraError, Frame
from rigstream.config import CameraConfig, RigConfig

logger = logging.getLogger(__name__)

SPINNAKER_ERR_TIMEOUT = -1011
"""``SpinnakerException.errorcode`` of a ``GetNextImage`` that timed out."""

READOUT_MARGIN_US = 100
"""Time an exposure must leave free in each trigger period (trigger latency, the end of the
exposure, the sensor's readout start). The camera's own ``AcquisitionResultingFrameRate`` is
then checked against the trigger rate as well."""

PIXEL_FORMATS = {"mono8": "Mono8", "rgb8": "RGB8", "bayer_rg8": "BayerRG8"}
"""Config ``pixel_format`` -> Spinnaker ``PixelFormat`` entry."""

REQUIRED_CHUNKS = ("FrameID", "Timestamp")
OPTIONAL_CHUNKS = ("ExposureTime", "ExposureEndLineStatusAll")

INCOMPLETE_HISTORY = 100
"""FrameIDs of the most recent incomplete images kept for :meth:`PySpinCamera.stats`."""

STREAM_COUNTERS = ("StreamDroppedFrameCount", "StreamLostFrameCount", "StreamIncompleteFrameCount")


def import_pyspin() -> Any:
    """The PySpin module, or a CameraError saying how to get it."""
    try:
        return importlib.import_module("PySpin")
    except ImportError as exc:
        raise CameraError(
            "PySpin (FLIR Spinnaker SDK) is not installed: install Spinnaker and its Python wheel "
            f"from FLIR ({exc})"
        ) from None


def _string(spin: Any, nodemap: Any, name: str) -> str:
    node = spin.CStringPtr(nodemap.GetNode(name))
    return str(node.GetValue()) if spin.IsReadable(node) else ""


def _enum_symbol(spin: Any, nodemap: Any, name: str) -> str:
    node = spin.CEnumerationPtr(nodemap.GetNode(name))
    return str(node.GetCurrentEntry().GetSymbolic()) if spin.IsReadable(node) else ""


def _serials(spin: Any, cam_list: Any) -> list[str]:
    """Serial numbers of a camera list, from each camera's TL device node map (no Init)."""
    serials = []
    for i in range(cam_list.GetSize()):
        serials.append(_string(spin, cam_list.GetByIndex(i).GetTLDeviceNodeMap(), "DeviceSerialNumber"))
    return serials


def list_cameras() -> list[dict[str, str]]:
    """The FLIR cameras attached: ``serial``, ``model``, ``firmware``, ``interface`` (USB3Vision,
    GigEVision ...), read from each camera's transport-layer node map without initializing it.
    The Spinnaker system is released before returning."""
    spin = import_pyspin()
    system = spin.System.GetInstance()
    cam_list = None
    try:
        cam_list = system.GetCameras()
        found = []
        for i in range(cam_list.GetSize()):
            tl = cam_list.GetByIndex(i).GetTLDeviceNodeMap()
            found.append({
                "serial": _string(spin, tl, "DeviceSerialNumber"),
                "model": _string(spin, tl, "DeviceModelName"),
                "firmware": _string(spin, tl, "DeviceVersion"),
                "interface": _enum_symbol(spin, tl, "DeviceType"),
            })
            del tl
        return found
    except spin.SpinnakerException as exc:
        raise CameraError(f"listing FLIR cameras failed: {exc}") from None
    finally:
        if cam_list is not None:
            cam_list.Clear()
            del cam_list
        system.ReleaseInstance()


class PySpinCamera(Camera):
    """A hardware-triggered FLIR camera (Blackfly S and the like).

    ``rig`` gives the trigger period the exposure must fit in. The camera's frame counter and
    stream restart at every :meth:`start`.
    """

    def __init__(self, config: CameraConfig, rig: RigConfig) -> None:
        super().__init__(config)
        self.rig = rig
        self.period_ns = rig.trigger.period_ns
        self._spin: Any = None
        self._system: Any = None
        self._cam_list: Any = None
        self._cam: Any = None
        self._nodemap: Any = None
        self._stream_nodemap: Any = None
        self._pool: BufferPool | None = None
        self._chunks: set[str] = set()
        self._last_frame_id = -1
        self._block_offset: int | None = None
        """Stream block ID minus chunk FrameID, learned from complete images: it places an
        incomplete image whose chunk data is lost."""
        self.device_info: dict[str, str] = {}
        self.counts = collections.Counter[str]()
        self.incomplete_frame_ids: collections.deque[int] = collections.deque(maxlen=INCOMPLETE_HISTORY)
        self.close_errors: list[str] = []

    @property
    def role(self) -> str:
        """``primary`` (triggered by the Pi, drives the strobe) or ``secondary`` (triggered by the
        primary's strobe). Start secondaries before the primary so none misses its first strobe."""
        return self.config.role

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "images": self.counts["images"],
            "incomplete": self.counts["incomplete"],
            "incomplete_frame_ids": list(self.incomplete_frame_ids),
            "timeouts": self.counts["timeouts"],
            "pool_grown": self._pool.grown if self._pool is not None else 0,
        }
        if self.close_errors:
            out["close_errors"] = list(self.close_errors)
        if self._stream_nodemap is not None:
            spin = self._spin
            for name in STREAM_COUNTERS:
                try:
                    node = spin.CIntegerPtr(self._stream_nodemap.GetNode(name))
                    if spin.IsReadable(node):
                        out[name] = int(node.GetValue())
                except spin.SpinnakerException:
                    pass
        return out

    # -- open / close ----------------------------------------------------------------------------

    def _do_open(self) -> None:
        spin = self._spin = import_pyspin()
        self.close_errors = []
        self._system = spin.System.GetInstance()
        try:
            self._cam_list = self._system.GetCameras()
            serials = _serials(spin, self._cam_list)
            serial = self.config.serial
            if serial not in serials:
                found = ", ".join(serials) if serials else "none"
                want = f"serial {serial!r}" if serial else "a serial (none is set in the rig file)"
                raise CameraError(f"camera {self.name}: no FLIR camera with {want}; "
                                  f"cameras found: {found}")
            self._cam = self._cam_list.GetBySerial(serial)
            self._cam.Init()
            self._nodemap = self._cam.GetNodeMap()
            self._stream_nodemap = self._cam.GetTLStreamNodeMap()
            tl = self._cam.GetTLDeviceNodeMap()
            self.device_info = {
                "serial": serial, "model": _string(spin, tl, "DeviceModelName"),
                "firmware": _string(spin, self._nodemap, "DeviceFirmwareVersion")
                or _string(spin, tl, "DeviceVersion"),
                "interface": _enum_symbol(spin, tl, "DeviceType"),
            }
            del tl
        except spin.SpinnakerException as exc:
            self._release_all()
            raise CameraError(f"camera {self.name}: opening FLIR camera {self.config.serial} failed: "
                              f"{exc}") from None
        except BaseException:
            self._release_all()
            raise
        logger.info("camera %s: FLIR %s serial %s firmware %s (%s)", self.name,
                    self.device_info["model"], self.config.serial, self.device_info["firmware"],
                    self.device_info["interface"])

    def _do_close(self) -> None:
        self._release_all()

    def _release_all(self) -> None:
        """End acquisition, DeInit, drop the camera, clear the list, release the system: every
        step attempted in that order whatever failed before it, failures logged. No local
        variable holds the camera: anything still referencing it makes ReleaseInstance fail."""

        def step(what: str, fn: Any) -> None:
            try:
                fn()
            except Exception as exc:  # every step runs; a failure is logged, not raised
                self.close_errors.append(f"{what}: {exc}")
                logger.error("camera %s: %s failed while closing: %s", self.name, what, exc)

        if self._cam is not None:
            step("EndAcquisition", self._end_if_streaming)
            step("DeInit", self._deinit_if_initialized)
        self._cam = self._nodemap = self._stream_nodemap = None
        if self._cam_list is not None:
            step("CameraList.Clear", self._cam_list.Clear)
            self._cam_list = None
        if self._system is not None:
            step("ReleaseInstance", self._system.ReleaseInstance)
            self._system = None

    def _end_if_streaming(self) -> None:
        if self._cam.IsStreaming():
            self._cam.EndAcquisition()

    def _deinit_if_initialized(self) -> None:
        if self._cam.IsInitialized():
            self._cam.DeInit()

    # -- configure -------------------------------------------------------------------------------

    def _do_configure(self) -> None:
        cfg = self.config
        spin = self._spin
        margin_ns = READOUT_MARGIN_US * 1000
        if cfg.exposure_us * 1000 + margin_ns > self.period_ns:
            raise CameraError(
                f"camera {self.name}: exposure_us ({cfg.exposure_us}) plus {READOUT_MARGIN_US} us for "
                f"readout must fit in the trigger period ({self.period_ns / 1000:.0f} us at "
                f"{self.rig.trigger.rate_hz:g} Hz): at most {(self.period_ns - margin_ns) // 1000} us"
            )
        if cfg.strobe_3v3 and cfg.strobe_line == "Line2":
            raise CameraError(
                f"camera {self.name}: strobe_3v3 turns Line2 (pin 3) into a 3.3 V supply, so it cannot "
                f"also be the strobe: use strobe_line Line1 with strobe_3v3 (Line2's 3.3 V pulls up the "
                f"opto output, FLIR's wiring), or Line2 with an external pull-up and strobe_3v3 off")
        try:
            self._configure_trigger()
            self._set_enum("ExposureAuto", "Off")
            self._set_float("ExposureTime", float(cfg.exposure_us), "exposure_us")
            if cfg.role == "primary":
                self._configure_strobe()
            self._set_enum("AcquisitionMode", "Continuous")
            self._set_bool("AcquisitionFrameRateEnable", False, required=False)
            self._set_enum("PixelFormat", PIXEL_FORMATS[cfg.pixel_format], "pixel_format")
            self._configure_roi()
            self._configure_chunks()
            self._configure_stream()
            self._check_frame_rate()
        except spin.SpinnakerException as exc:
            raise CameraError(f"camera {self.name}: configuring failed: {exc}") from None
        shape: tuple[int, ...] = (cfg.height, cfg.width) + ((3,) if cfg.channels == 3 else ())
        self._pool = BufferPool(shape, cfg.buffer_count + 16)
        logger.info("camera %s configured: %s, %dx%d+%d+%d %s, exposure %d us, trigger %s%s",
                    self.name, cfg.role, cfg.width, cfg.height, cfg.offset_x, cfg.offset_y,
                    cfg.pixel_format, cfg.exposure_us, cfg.trigger_line,
                    f", strobe {cfg.strobe_line}" if cfg.role == "primary" else "")

    def _configure_trigger(self) -> None:
        """Trigger off while changing it, then: frame start on a rising edge of the trigger line,
        overlapping the previous image's readout, and on."""
        line = self.config.trigger_line
        self._set_enum("TriggerMode", "Off")
        self._set_enum("LineSelector", line)
        if self._writable("LineMode"):  # Line3 is bidirectional; Line0 is an input only
            self._set_enum("LineMode", "Input")
        self._set_enum("TriggerSelector", "FrameStart")
        self._set_enum("TriggerSource", line, "trigger_line")
        self._set_enum("TriggerActivation", "RisingEdge")
        self._set_enum("TriggerOverlap", "ReadOut", required=False)
        self._set_enum("TriggerMode", "On")

    def _configure_strobe(self) -> None:
        """The primary's strobe: its strobe line follows ExposureActive. On Line2 (open drain,
        pulled up externally) the 3.3 V supply on that pin is turned off; with Line1 (opto
        output) and ``strobe_3v3``, Line2's 3.3 V supply is turned on to pull the output up."""
        cfg = self.config
        self._set_enum("LineSelector", cfg.strobe_line, "strobe_line")
        if self._writable("LineMode"):  # Line1 is an output only
            self._set_enum("LineMode", "Output")
        self._set_enum("LineSource", "ExposureActive")
        if cfg.strobe_line == "Line2":
            self._set_bool("V3_3Enable", False, required=False)
        elif cfg.strobe_3v3:
            self._set_enum("LineSelector", "Line2")
            self._set_bool("V3_3Enable", True, required=True)

    def _configure_roi(self) -> None:
        """Offsets to 0 first (they limit the size), then the size, then the offsets."""
        cfg = self.config
        self._set_int("OffsetX", 0)
        self._set_int("OffsetY", 0)
        self._set_int("Width", cfg.width, "width")
        self._set_int("Height", cfg.height, "height")
        self._set_int("OffsetX", cfg.offset_x, "offset_x")
        self._set_int("OffsetY", cfg.offset_y, "offset_y")

    def _configure_chunks(self) -> None:
        self._set_bool("ChunkModeActive", True)
        self._chunks = set()
        selector = self._spin.CEnumerationPtr(self._nodemap.GetNode("ChunkSelector"))
        for name in REQUIRED_CHUNKS + OPTIONAL_CHUNKS:
            entry = selector.GetEntryByName(name) if self._spin.IsAvailable(selector) else None
            if not self._spin.IsReadable(entry):
                if name in REQUIRED_CHUNKS:
                    raise CameraError(f"camera {self.name}: this camera has no {name} chunk, which "
                                      f"rigstream needs to index and stamp frames")
                logger.debug("camera %s: no %s chunk", self.name, name)
                continue
            self._set_enum("ChunkSelector", name)
            self._set_bool("ChunkEnable", True)
            self._chunks.add(name)

    def _configure_stream(self) -> None:
        cfg = self.config
        self._set_enum("StreamBufferHandlingMode", "OldestFirst", stream=True)
        self._set_enum("StreamBufferCountMode", "Manual", stream=True)
        self._set_int("StreamBufferCountManual", cfg.buffer_count, "buffer_count", stream=True)

    def _check_frame_rate(self) -> None:
        node = self._spin.CFloatPtr(self._nodemap.GetNode("AcquisitionResultingFrameRate"))
        if not self._spin.IsReadable(node):
            return
        top_hz = float(node.GetValue())
        rate_hz = self.rig.trigger.rate_hz
        if top_hz < rate_hz * (1 - 1e-4):
            cfg = self.config
            raise CameraError(
                f"camera {self.name}: with exposure_us {cfg.exposure_us}, {cfg.width}x{cfg.height} "
                f"{cfg.pixel_format} the camera reaches at most {top_hz:.1f} Hz "
                f"(AcquisitionResultingFrameRate), below the trigger rate {rate_hz:g} Hz: shorten the "
                f"exposure or the image"
            )

    # -- node writes -----------------------------------------------------------------------------

    def _node(self, name: str, stream: bool = False) -> Any:
        return (self._stream_nodemap if stream else self._nodemap).GetNode(name)

    def _writable(self, name: str) -> bool:
        return bool(self._spin.IsWritable(self._node(name)))

    def _unwritable(self, name: str, what: str, required: bool) -> bool:
        """Whether to skip a node that cannot be written; raises if it is required."""
        if required:
            raise CameraError(f"camera {self.name}: cannot set {name}{what}: the node is not "
                              f"available or not writable on this camera")
        logger.debug("camera %s: %s not writable here, left as is", self.name, name)
        return True

    def _set_enum(self, name: str, value: str, field: str = "", *, required: bool = True,
                  stream: bool = False) -> None:
        spin = self._spin
        node = spin.CEnumerationPtr(self._node(name, stream))
        if not spin.IsWritable(node):
            self._unwritable(name, f" to {value}", required)
            return
        entry = node.GetEntryByName(value)
        if not spin.IsReadable(entry):
            names = [e.GetSymbolic() for e in node.GetEntries() if spin.IsReadable(e)]
            key = f"{field} " if field else ""
            raise CameraError(f"camera {self.name}: {key}{name} {value!r} is not offered by this "
                              f"camera (it offers: {', '.join(names)})")
        node.SetIntValue(entry.GetValue())

    def _set_bool(self, name: str, value: bool, *, required: bool = True) -> None:
        spin = self._spin
        node = spin.CBooleanPtr(self._node(name))
        if not spin.IsWritable(node):
            self._unwritable(name, f" to {value}", required)
            return
        node.SetValue(value)

    def _set_float(self, name: str, value: float, field: str) -> None:
        spin = self._spin
        node = spin.CFloatPtr(self._node(name))
        if not spin.IsWritable(node):
            self._unwritable(name, f" to {value}", True)
        lo, hi = float(node.GetMin()), float(node.GetMax())
        if not lo <= value <= hi:
            raise CameraError(f"camera {self.name}: {field} {value:g} is out of the camera's range "
                              f"for {name}: {lo:g} to {hi:g}")
        node.SetValue(value)

    def _set_int(self, name: str, value: int, field: str = "", *, stream: bool = False) -> None:
        spin = self._spin
        node = spin.CIntegerPtr(self._node(name, stream))
        if not spin.IsWritable(node):
            self._unwritable(name, f" to {value}", True)
        lo, hi, inc = int(node.GetMin()), int(node.GetMax()), max(1, int(node.GetInc()))
        if not lo <= value <= hi or (value - lo) % inc:
            cfg = self.config
            where = ""
            if name in ("Width", "OffsetX"):
                where = f" (with offset_x {cfg.offset_x} and width {cfg.width})"
            elif name in ("Height", "OffsetY"):
                where = f" (with offset_y {cfg.offset_y} and height {cfg.height})"
            step = f" in steps of {inc}" if inc > 1 else ""
            raise CameraError(f"camera {self.name}: {field or name} {value} is not allowed: this camera "
                              f"takes {name} from {lo} to {hi}{step}{where}")
        node.SetValue(int(value))

    # -- acquisition -----------------------------------------------------------------------------

    def _do_start(self) -> None:
        spin = self._spin
        self._last_frame_id = -1
        self._block_offset = None
        try:
            if self._cam.IsStreaming():  # left streaming by a failed stop: start afresh
                self._cam.EndAcquisition()
            self._cam.BeginAcquisition()
        except spin.SpinnakerException as exc:
            raise CameraError(f"camera {self.name}: BeginAcquisition failed: {exc}") from None

    def _do_stop(self) -> None:
        spin = self._spin
        try:
            if self._cam.IsStreaming():
                self._cam.EndAcquisition()
        except spin.SpinnakerException as exc:
            raise CameraError(f"camera {self.name}: EndAcquisition failed: {exc}") from None

    def _do_get_frame(self, timeout_s: float) -> Frame | None:
        spin = self._spin
        timeout_ms = max(0, round(timeout_s * 1000))
        try:
            image = self._cam.GetNextImage(timeout_ms)
        except spin.SpinnakerException as exc:
            if getattr(exc, "errorcode", None) == SPINNAKER_ERR_TIMEOUT:
                self.counts["timeouts"] += 1
                return None
            raise CameraError(f"camera {self.name}: GetNextImage failed: {exc}") from None
        try:
            if image.IsIncomplete():
                return self._incomplete(image)
            return self._complete(image)
        except spin.SpinnakerException as exc:
            raise CameraError(f"camera {self.name}: reading an image failed: {exc}") from None
        finally:
            image.Release()  # the stream buffer goes back to the camera at once

    def _complete(self, image: Any) -> Frame:
        chunk = image.GetChunkData()
        frame_id = int(chunk.GetFrameID())
        t_camera_ns = int(chunk.GetTimestamp())
        exposure_us = (float(chunk.GetExposureTime()) if "ExposureTime" in self._chunks
                       else float(self.config.exposure_us))
        try:
            self._block_offset = int(image.GetFrameID()) - frame_id
        except self._spin.SpinnakerException:
            self._block_offset = None
        assert self._pool is not None
        pixels = self._pool.acquire()
        try:
            src = image.GetNDArray()
            if src.shape != pixels.shape or src.dtype != pixels.dtype:
                raise CameraError(f"camera {self.name}: image {frame_id} is {src.shape} {src.dtype}, "
                                  f"expected {pixels.shape} {pixels.dtype} (height, width[, channels]) "
                                  f"as configured")
            np.copyto(pixels, src)
        except BaseException:
            self._pool.give_back(pixels)
            raise
        self._last_frame_id = max(self._last_frame_id, frame_id)
        self.counts["images"] += 1
        return Frame(frame_id=frame_id, t_camera_ns=t_camera_ns, pixels=pixels,
                     exposure_us=exposure_us, _pool=self._pool)

    def _incomplete(self, image: Any) -> Frame:
        """An image that lost data in transport: no pixels, its FrameID from the chunk data if it
        survived, else from the stream's block ID, else the next one expected."""
        spin = self._spin
        frame_id = -1
        t_camera_ns = -1
        if self._block_offset is not None:
            try:
                frame_id = int(image.GetFrameID()) - self._block_offset
            except spin.SpinnakerException:
                frame_id = -1
        if frame_id <= self._last_frame_id:
            try:
                chunk = image.GetChunkData()
                frame_id = int(chunk.GetFrameID())
                t_camera_ns = int(chunk.GetTimestamp())
            except spin.SpinnakerException:
                frame_id = -1
        if frame_id <= self._last_frame_id:
            frame_id = self._last_frame_id + 1
        self._last_frame_id = frame_id
        self.counts["incomplete"] += 1
        self.incomplete_frame_ids.append(frame_id)
        if self.counts["incomplete"] <= 5:
            status = image.GetImageStatus()
            describe = getattr(spin, "Image_GetImageStatusDescription", None)
            logger.warning("camera %s: image %d incomplete (%s)", self.name, frame_id,
                           describe(status) if describe else f"status {status}")
        return Frame(frame_id=frame_id, t_camera_ns=t_camera_ns, pixels=None, incomplete=True,
                     exposure_us=float(self.config.exposure_us))

    def _do_latch_clock(self) -> tuple[int, int, int] | None:
        """Latch the camera's timestamp counter, bracketed by the host's monotonic clock: the latch
        happens while ``TimestampLatch`` executes; its value is read after the bracket closes."""
        spin = self._spin
        latch = spin.CCommandPtr(self._nodemap.GetNode("TimestampLatch"))
        value = spin.CIntegerPtr(self._nodemap.GetNode("TimestampLatchValue"))
        if not (spin.IsWritable(latch) and spin.IsReadable(value)):
            return None
        try:
            before = time.monotonic_ns()
            latch.Execute()
            after = time.monotonic_ns()
            camera_ns = int(value.GetValue())
        except spin.SpinnakerException as exc:
            logger.warning("camera %s: clock latch failed: %s", self.name, exc)
            return None
        return before, camera_ns, after
