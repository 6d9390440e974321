"""A fake ``PySpin`` module: FLIR's Spinnaker SDK as far as the PySpin camera driver uses it.

Install it for a test with ``monkeypatch.setitem(sys.modules, "PySpin", fake)`` where
``fake = FakePySpin()``; add cameras with ``fake.add_camera(serial)``, which returns the
camera's hardware (:class:`FakeDevice`), the side a test drives and inspects. The driver only
sees what PySpin hands out: the System singleton, camera lists, camera handles, node maps of
typed nodes, images.

Where the driver depends on it, the fake behaves as the SDK does:

- ``System.GetInstance()`` returns one shared system and counts references;
  ``ReleaseInstance()`` of the last reference raises ``SpinnakerException`` ``[-1004]`` while a
  camera handle is still referenced anywhere (a camera list not cleared, a driver that kept its
  ``CameraPtr``) or a camera is still initialized.
- Node maps hold typed nodes: enumerations (entries by name), integers (min, max, increment),
  floats (min, max), booleans, commands, strings. ``IsAvailable``/``IsReadable``/``IsWritable``
  tell the node's access mode; writing a node that is not writable raises ``SpinnakerException``
  ``[-2006]``, an out-of-range or off-increment value ``[-2002]``. The trigger's selector, source,
  activation and overlap are read-only while ``TriggerMode`` is On; the image format, ROI, chunk
  and stream-buffer nodes are read-only while acquiring; ``ExposureTime`` while ``ExposureAuto``
  is not Off; ``LineSource`` on an input; ``V3_3Enable`` exists on Line2 only. The device node map
  is unavailable until ``Init()``. Casting a node to the wrong type (``CFloatPtr`` of an
  enumeration) gives an unavailable pointer, as the SDK's cast does.
- Every write is recorded in order in ``FakeDevice.writes`` as ``(node, value)`` (enumerations
  by entry name); commands executed go to ``FakeDevice.executed``.
- Acquisition: ``FakeDevice.trigger(line)`` is a rising edge on a camera line. While acquiring
  with ``TriggerMode`` On and the edge on ``TriggerSource``, the camera exposes one image: chunk
  FrameID counts from 0 at ``BeginAcquisition`` (and advances for images lost later),
  Timestamp is the camera's own nanosecond clock, ExposureTime the node's value. Chunk data is
  in the image only with ``ChunkModeActive`` and that chunk's ``ChunkEnable``. An output line set
  to ``ExposureActive`` drives the lines wired to it (:meth:`FakeDevice.wire`), so a primary
  triggers its secondaries. The fake never free-runs: with ``TriggerMode`` Off it makes nothing.
- The stream has ``StreamBufferCountManual`` buffers; an image holds one from exposure until
  ``Release()``. With ``OldestFirst`` a new image finding none free is dropped
  (``StreamDroppedFrameCount``); the other modes drop the oldest waiting one.
- ``GetNextImage(timeout_ms)`` blocks up to the timeout, then raises ``SpinnakerException``
  ``[-1011]`` with the SDK's message. Faults: :meth:`FakeDevice.inject_incomplete` (images whose
  tail, and with it the chunk data, was lost), :meth:`FakeDevice.inject_get_error`,
  :meth:`FakeDevice.fail_writes`, :meth:`FakeDevice.fail_call`.
- ``TimestampLatch`` latches the camera clock into ``TimestampLatchValue``.
- The node map's chunk values (``ChunkFrameID`` ...) are those of the newest image the camera
  made, not of the image in hand: a driver must read chunk data from the image.

Simplifications: the trigger nodes are not selected per ``TriggerSelector``; lines carry only
rising edges; no events, no user sets, no image conversion.
"""

from __future__ import annotations

import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

SPINNAKER_ERR_NOT_INITIALIZED = -1002
SPINNAKER_ERR_RESOURCE_IN_USE = -1004
SPINNAKER_ERR_IO = -1010
SPINNAKER_ERR_TIMEOUT = -1011
SPINNAKER_ERR_INVALID_BUFFER = -1013
SPINNAKER_ERR_NOT_AVAILABLE = -1014
GENICAM_ERR_OUT_OF_RANGE = -2002
GENICAM_ERR_ACCESS = -2006

IMAGE_NO_ERROR = 0
IMAGE_DATA_INCOMPLETE = 6
"""Image status of an image whose data did not all arrive (a stand-in value)."""

_STATUS_TEXT = {IMAGE_NO_ERROR: "Image has no error", IMAGE_DATA_INCOMPLETE: "Image data is incomplete"}


class SpinnakerException(Exception):
    """As PySpin's: ``errorcode``, ``message``, and ``str()`` = ``Spinnaker: <message> [<code>]``."""

    def __init__(self, message: str, errorcode: int) -> None:
        self.message = message
        self.errorcode = errorcode
        self.fullmessage = f"Spinnaker: {message} [{errorcode}]"
        super().__init__(self.fullmessage)


# -- nodes ---------------------------------------------------------------------------------------


class Node:
    kind = "node"

    def __init__(self, device: FakeDevice, name: str, transport: bool = False) -> None:
        self._device = device
        self._name = name
        self._transport = transport
        """A node of the transport layer's maps (TL device, TL stream): there without Init()."""

    def GetName(self) -> str:
        return self._name

    def _available(self) -> bool:
        return self._transport or self._device._node_available(self._name)

    def _readable(self) -> bool:
        return self._available()

    def _writable(self) -> bool:
        return self._available() and self._device._node_writable(self._name)

    def _check_read(self) -> None:
        if not self._readable():
            raise SpinnakerException(f"Node {self._name} is not readable", GENICAM_ERR_ACCESS)

    def _write(self, value: Any) -> None:
        if not self._writable():
            raise SpinnakerException(
                f"Node {self._name} is not writable (access mode RO or NA)", GENICAM_ERR_ACCESS)
        self._device._write(self._name, value)


class EnumEntry:
    def __init__(self, node: EnumNode, name: str, value: int) -> None:
        self._node = node
        self._symbolic = name
        self._value = value

    def GetValue(self) -> int:
        return self._value

    def GetSymbolic(self) -> str:
        return self._symbolic

    def GetDisplayName(self) -> str:
        return self._symbolic

    def _available(self) -> bool:
        return self._node._available()

    _readable = _available
    _writable = _available


class EnumNode(Node):
    kind = "enumeration"

    def __init__(self, device: FakeDevice, name: str, entries: list[str], transport: bool = False) -> None:
        super().__init__(device, name, transport)
        self._entries = {e: EnumEntry(self, e, 100 + i) for i, e in enumerate(entries)}
        self._by_value = {entry.GetValue(): entry for entry in self._entries.values()}

    def GetEntryByName(self, name: str) -> EnumEntry | None:
        return self._entries.get(name)

    def GetEntries(self) -> list[EnumEntry]:
        return list(self._entries.values())

    def GetCurrentEntry(self) -> EnumEntry:
        self._check_read()
        return self._entries[self._device._value(self._name)]

    def GetIntValue(self) -> int:
        return self.GetCurrentEntry().GetValue()

    def SetIntValue(self, value: int) -> None:
        entry = self._by_value.get(value)
        if entry is None:
            raise SpinnakerException(f"Node {self._name}: no entry with value {value}",
                                     GENICAM_ERR_OUT_OF_RANGE)
        self._write(entry.GetSymbolic())

    def ToString(self) -> str:
        return self.GetCurrentEntry().GetSymbolic()


class IntNode(Node):
    kind = "integer"

    def GetValue(self) -> int:
        self._check_read()
        return int(self._device._value(self._name))

    def GetMin(self) -> int:
        return self._device._limits(self._name)[0]

    def GetMax(self) -> int:
        return self._device._limits(self._name)[1]

    def GetInc(self) -> int:
        return self._device._limits(self._name)[2]

    def SetValue(self, value: int) -> None:
        lo, hi, inc = self._device._limits(self._name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{self._name}: expected an int, got {type(value).__name__}")
        if self._writable() and (not lo <= value <= hi or (value - lo) % inc):
            raise SpinnakerException(
                f"Value {value} must be between {lo} and {hi} in steps of {inc} : "
                f"OutOfRangeException thrown in node '{self._name}' while calling "
                f"'{self._name}.SetValue()'", GENICAM_ERR_OUT_OF_RANGE)
        self._write(int(value))

    def ToString(self) -> str:
        return str(self.GetValue())


class FloatNode(Node):
    kind = "float"

    def GetValue(self) -> float:
        self._check_read()
        return float(self._device._value(self._name))

    def GetMin(self) -> float:
        return float(self._device._limits(self._name)[0])

    def GetMax(self) -> float:
        return float(self._device._limits(self._name)[1])

    def SetValue(self, value: float) -> None:
        lo, hi, _ = self._device._limits(self._name)
        if self._writable() and not lo <= value <= hi:
            raise SpinnakerException(
                f"Value {value} must be between {lo} and {hi} : OutOfRangeException thrown in "
                f"node '{self._name}'", GENICAM_ERR_OUT_OF_RANGE)
        self._write(float(value))


class BoolNode(Node):
    kind = "boolean"

    def GetValue(self) -> bool:
        self._check_read()
        return bool(self._device._value(self._name))

    def SetValue(self, value: bool) -> None:
        self._write(bool(value))


class CommandNode(Node):
    kind = "command"

    def _readable(self) -> bool:
        return False

    def Execute(self) -> None:
        if not self._writable():
            raise SpinnakerException(f"Node {self._name} is not writable", GENICAM_ERR_ACCESS)
        self._device._execute(self._name)

    def IsDone(self) -> bool:
        return True


class StringNode(Node):
    kind = "string"

    def _writable(self) -> bool:
        return False

    def GetValue(self) -> str:
        self._check_read()
        return str(self._device._value(self._name))

    def ToString(self) -> str:
        return self.GetValue()


class NodeMap:
    def __init__(self, nodes: dict[str, Node]) -> None:
        self._nodes = nodes

    def GetNode(self, name: str) -> Node | None:
        return self._nodes.get(name)


def _cast(kind: str) -> Callable[[Any], Any]:
    def cast(node: Any) -> Any:
        return node if isinstance(node, Node) and node.kind == kind else None

    return cast


def IsAvailable(node: Any) -> bool:
    return node is not None and node._available()


def IsReadable(node: Any) -> bool:
    return node is not None and node._readable()


def IsWritable(node: Any) -> bool:
    return node is not None and node._writable()


# -- images ----------------------------------------------------------------------------------------


class ChunkData:
    def __init__(self, chunks: dict[str, Any]) -> None:
        self._chunks = chunks

    def _get(self, name: str) -> Any:
        if name not in self._chunks:
            raise SpinnakerException(f"Chunk {name} is not available in this image",
                                     SPINNAKER_ERR_NOT_AVAILABLE)
        return self._chunks[name]

    def GetFrameID(self) -> int:
        return int(self._get("FrameID"))

    def GetTimestamp(self) -> int:
        return int(self._get("Timestamp"))

    def GetExposureTime(self) -> float:
        return float(self._get("ExposureTime"))

    def GetExposureEndLineStatusAll(self) -> int:
        return int(self._get("ExposureEndLineStatusAll"))


class FakeImage:
    """One stream buffer as ``GetNextImage`` hands it out (an ``ImagePtr``)."""

    def __init__(self, device: FakeDevice, block_id: int, pixels: np.ndarray, chunks: dict[str, Any],
                 incomplete: bool) -> None:
        self._device = device
        self._block_id = block_id
        self._pixels = pixels
        self._chunks = chunks
        self._incomplete = incomplete
        self.released = False
        self.frame_id = chunks.get("FrameID", -1)
        """The camera's FrameID of this image, for tests (whether or not it is in the chunks)."""

    def _check(self) -> None:
        if self.released:
            raise SpinnakerException("Image has been released", SPINNAKER_ERR_INVALID_BUFFER)

    def IsIncomplete(self) -> bool:
        self._check()
        return self._incomplete

    def GetImageStatus(self) -> int:
        self._check()
        return IMAGE_DATA_INCOMPLETE if self._incomplete else IMAGE_NO_ERROR

    def GetFrameID(self) -> int:
        """The stream's block ID (from the transport's leader; present in incomplete images)."""
        self._check()
        return self._block_id

    def GetWidth(self) -> int:
        return int(self._pixels.shape[1])

    def GetHeight(self) -> int:
        return int(self._pixels.shape[0])

    def GetChunkData(self) -> ChunkData:
        self._check()
        if self._incomplete:
            raise SpinnakerException("Unable to parse chunk data: image data is incomplete",
                                     SPINNAKER_ERR_INVALID_BUFFER)
        return ChunkData(self._chunks)

    def GetNDArray(self) -> np.ndarray:
        self._check()
        view = self._pixels.view()
        view.flags.writeable = False
        return view

    def Release(self) -> None:
        self._check()
        self.released = True
        self._device._release(self)


# -- the camera ----------------------------------------------------------------------------------

TRIGGER_NODES = ("TriggerSelector", "TriggerSource", "TriggerActivation", "TriggerOverlap")
ACQUISITION_LOCKED = ("Width", "Height", "OffsetX", "OffsetY", "PixelFormat", "ChunkModeActive",
                      "ChunkSelector", "ChunkEnable", "StreamBufferCountMode",
                      "StreamBufferCountManual", "StreamBufferHandlingMode", "AcquisitionMode")
LINES = ("Line0", "Line1", "Line2", "Line3")
CHUNKS = ("Image", "CRC", "FrameID", "OffsetX", "OffsetY", "Width", "Height", "ExposureTime", "Gain",
          "BlackLevel", "PixelFormat", "Timestamp", "ExposureEndLineStatusAll")
PIXEL_FORMATS = ("Mono8", "Mono16", "BayerRG8", "RGB8")


class FakeDevice:
    """A FLIR camera's hardware: what the tests drive (``trigger``) and inspect (``writes``)."""

    def __init__(self, serial: str, model: str = "Blackfly S BFS-U3-16S2M", firmware: str = "1707.1.6.0",
                 device_type: str = "USB3Vision", sensor: tuple[int, int] = (1440, 1080),
                 pixel_formats: tuple[str, ...] = PIXEL_FORMATS, line_time_us: float = 4.0,
                 clock_drift_ppm: float = 12.0) -> None:
        self.serial = serial
        self.model = model
        self.sensor_width, self.sensor_height = sensor
        self.line_time_us = line_time_us
        self.initialized = False
        self.acquiring = False
        self.writes: list[tuple[str, Any]] = []
        self.executed: list[str] = []
        self.inits = self.deinits = 0
        self.edges_ignored = 0
        self._lock = threading.Condition()
        self._t_power_on_ns = time.monotonic_ns() - 1_000_000_000
        self._drift = 1 + clock_drift_ppm * 1e-6
        self._queue: deque[FakeImage] = deque()
        self._held: list[FakeImage] = []
        self.images: list[FakeImage] = []
        """Every image the camera made this session, delivered or not."""
        self._frame_id = 0
        self._incomplete_next = 0
        self._get_errors: deque[SpinnakerException] = deque()
        self._write_failures: dict[str, int] = {}
        self._call_failures: dict[str, int] = {}
        self._wires: list[tuple[str, FakeDevice, str]] = []
        self._values: dict[str, Any] = {
            "DeviceSerialNumber": serial, "DeviceModelName": model, "DeviceVendorName": "FLIR",
            "DeviceVersion": firmware, "DeviceType": device_type, "DeviceFirmwareVersion": firmware,
            "TriggerMode": "Off", "TriggerSelector": "FrameStart", "TriggerSource": "Software",
            "TriggerActivation": "RisingEdge", "TriggerOverlap": "Off",
            "ExposureAuto": "Continuous", "ExposureTime": 5000.0,
            "AcquisitionMode": "Continuous", "AcquisitionFrameRateEnable": True,
            "PixelFormat": "Mono8", "Width": self.sensor_width, "Height": self.sensor_height,
            "OffsetX": 0, "OffsetY": 0, "LineSelector": "Line0", "ChunkModeActive": False,
            "ChunkSelector": "Image", "TimestampLatchValue": 0,
            "ChunkFrameID": 0, "ChunkTimestamp": 0, "ChunkExposureTime": 0.0,
            "StreamBufferHandlingMode": "OldestFirst", "StreamBufferCountMode": "Auto",
            "StreamBufferCountManual": 10, "StreamDroppedFrameCount": 0, "StreamLostFrameCount": 0,
            "StreamIncompleteFrameCount": 0,
        }
        self._line_mode = {"Line0": "Input", "Line1": "Output", "Line2": "Input", "Line3": "Input"}
        self._line_source = dict.fromkeys(LINES, "Off")
        self._v3_3 = False
        self._chunk_enable = dict.fromkeys(CHUNKS, False)
        self._chunk_enable["Image"] = True
        d = self
        self._tl_nodes: dict[str, Node] = {
            "DeviceSerialNumber": StringNode(d, "DeviceSerialNumber", True),
            "DeviceModelName": StringNode(d, "DeviceModelName", True),
            "DeviceVendorName": StringNode(d, "DeviceVendorName", True),
            "DeviceVersion": StringNode(d, "DeviceVersion", True),
            "DeviceType": EnumNode(d, "DeviceType", ["GigEVision", "CameraLink", "CameraLinkHS",
                                                      "CoaXPress", "USB3Vision", "Custom"], True),
        }
        self._stream_nodes: dict[str, Node] = {
            "StreamBufferHandlingMode": EnumNode(d, "StreamBufferHandlingMode", [
                "OldestFirst", "OldestFirstOverwrite", "NewestOnly", "NewestFirst"], True),
            "StreamBufferCountMode": EnumNode(d, "StreamBufferCountMode", ["Manual", "Auto"], True),
            "StreamBufferCountManual": IntNode(d, "StreamBufferCountManual", True),
            "StreamDroppedFrameCount": IntNode(d, "StreamDroppedFrameCount", True),
            "StreamLostFrameCount": IntNode(d, "StreamLostFrameCount", True),
            "StreamIncompleteFrameCount": IntNode(d, "StreamIncompleteFrameCount", True),
        }
        self._nodes: dict[str, Node] = {
            "DeviceSerialNumber": StringNode(d, "DeviceSerialNumber"),
            "DeviceModelName": StringNode(d, "DeviceModelName"),
            "DeviceFirmwareVersion": StringNode(d, "DeviceFirmwareVersion"),
            "TriggerMode": EnumNode(d, "TriggerMode", ["Off", "On"]),
            "TriggerSelector": EnumNode(d, "TriggerSelector", ["AcquisitionStart", "FrameStart"]),
            "TriggerSource": EnumNode(d, "TriggerSource", ["Software", *LINES]),
            "TriggerActivation": EnumNode(d, "TriggerActivation",
                                          ["RisingEdge", "FallingEdge", "AnyEdge"]),
            "TriggerOverlap": EnumNode(d, "TriggerOverlap", ["Off", "ReadOut"]),
            "ExposureAuto": EnumNode(d, "ExposureAuto", ["Off", "Once", "Continuous"]),
            "ExposureTime": FloatNode(d, "ExposureTime"),
            "AcquisitionMode": EnumNode(d, "AcquisitionMode",
                                        ["Continuous", "SingleFrame", "MultiFrame"]),
            "AcquisitionFrameRateEnable": BoolNode(d, "AcquisitionFrameRateEnable"),
            "AcquisitionResultingFrameRate": FloatNode(d, "AcquisitionResultingFrameRate"),
            "PixelFormat": EnumNode(d, "PixelFormat", list(pixel_formats)),
            "Width": IntNode(d, "Width"), "Height": IntNode(d, "Height"),
            "OffsetX": IntNode(d, "OffsetX"), "OffsetY": IntNode(d, "OffsetY"),
            "LineSelector": EnumNode(d, "LineSelector", list(LINES)),
            "LineMode": EnumNode(d, "LineMode", ["Input", "Output"]),
            "LineSource": EnumNode(d, "LineSource", ["Off", "ExposureActive", "UserOutput0"]),
            "V3_3Enable": BoolNode(d, "V3_3Enable"),
            "ChunkModeActive": BoolNode(d, "ChunkModeActive"),
            "ChunkSelector": EnumNode(d, "ChunkSelector", list(CHUNKS)),
            "ChunkEnable": BoolNode(d, "ChunkEnable"),
            "ChunkFrameID": IntNode(d, "ChunkFrameID"),
            "ChunkTimestamp": IntNode(d, "ChunkTimestamp"),
            "ChunkExposureTime": FloatNode(d, "ChunkExposureTime"),
            "TimestampLatch": CommandNode(d, "TimestampLatch"),
            "TimestampLatchValue": IntNode(d, "TimestampLatchValue"),
        }

    # -- what tests use ------------------------------------------------------------------------

    def value(self, name: str) -> Any:
        """A node's current value as the camera holds it (selected nodes at their selector)."""
        return self._value(name)

    def writes_to(self, *names: str) -> list[tuple[str, Any]]:
        return [w for w in self.writes if w[0] in names]

    def camera_ns(self) -> int:
        """The camera's clock now (its timestamp counter, ns since power-on)."""
        return int((time.monotonic_ns() - self._t_power_on_ns) * self._drift)

    def wire(self, output_line: str, other: FakeDevice, input_line: str) -> None:
        """Connect this camera's ``output_line`` to ``other``'s ``input_line``."""
        self._wires.append((output_line, other, input_line))

    def trigger(self, line: str | None = None) -> bool:
        """A rising edge on ``line`` (default: the configured TriggerSource). Returns whether
        the camera exposed an image for it."""
        with self._lock:
            source = self._values["TriggerSource"]
            line = line or source
            if not (self.acquiring and self._values["TriggerMode"] == "On" and line == source
                    and self._values["TriggerActivation"] in ("RisingEdge", "AnyEdge")
                    and (line not in LINES or self._line_mode[line] == "Input")):
                self.edges_ignored += 1
                return False
            self._expose()
        for out, other, inp in self._wires:
            if self._line_mode[out] == "Output" and self._line_source[out] == "ExposureActive":
                other.trigger(inp)
        return True

    def inject_incomplete(self, count: int = 1) -> None:
        """The next ``count`` images lose their tail in transport (and with it the chunk data)."""
        self._incomplete_next += count

    def inject_get_error(self, errorcode: int = SPINNAKER_ERR_IO, message: str | None = None) -> None:
        """The next ``GetNextImage`` raises this error (a timeout by code -1011 needs no image)."""
        self._get_errors.append(SpinnakerException(
            message or ("Failed waiting for EventData on NEW_BUFFER_DATA event."
                        if errorcode == SPINNAKER_ERR_TIMEOUT else "Stream transfer failed"),
            errorcode))

    def fail_writes(self, name: str, count: int = 1) -> None:
        """The next ``count`` writes to node ``name`` fail as a camera that stopped answering."""
        self._write_failures[name] = count

    def fail_call(self, method: str, count: int = 1) -> None:
        """The next ``count`` calls of the camera handle's ``method`` (``BeginAcquisition``,
        ``EndAcquisition``, ``DeInit``) fail as with a camera unplugged (nothing changes)."""
        self._call_failures[method] = self._call_failures.get(method, 0) + count

    def _maybe_fail(self, method: str) -> None:
        if self._call_failures.get(method):
            self._call_failures[method] -= 1
            raise SpinnakerException(f"{method} failed: the device does not respond", SPINNAKER_ERR_IO)

    @property
    def unreleased(self) -> int:
        """Images handed out by ``GetNextImage`` and not released."""
        return len(self._held)

    @property
    def buffers_in_use(self) -> int:
        return len(self._queue) + len(self._held)

    # -- node access rules ----------------------------------------------------------------------

    def _node_available(self, name: str) -> bool:
        """A device node map node: only once the camera is initialized."""
        if not self.initialized:
            return False
        if name == "V3_3Enable":
            return self._values["LineSelector"] == "Line2"
        return True

    def _node_writable(self, name: str) -> bool:
        v = self._values
        if name in ("AcquisitionResultingFrameRate", "TimestampLatchValue") or name.startswith(
                ("ChunkFrameID", "ChunkTimestamp", "ChunkExposureTime", "StreamDropped", "StreamLost",
                 "StreamIncomplete", "Device")):
            return False
        if name in TRIGGER_NODES and v["TriggerMode"] == "On":
            return False
        if name in ACQUISITION_LOCKED and self.acquiring:
            return False
        if name == "ExposureTime" and v["ExposureAuto"] != "Off":
            return False
        if name == "StreamBufferCountManual" and v["StreamBufferCountMode"] != "Manual":
            return False
        line = v["LineSelector"]
        if name == "LineMode":
            return line in ("Line2", "Line3")  # Line0 is input only, Line1 output only
        if name == "LineSource":
            return self._line_mode[line] == "Output"
        if name == "ChunkEnable":
            return v["ChunkSelector"] != "Image"  # the image chunk is always on
        return True

    def _value(self, name: str) -> Any:
        v = self._values
        line = v["LineSelector"]
        if name == "LineMode":
            return self._line_mode[line]
        if name == "LineSource":
            return self._line_source[line]
        if name == "V3_3Enable":
            return self._v3_3
        if name == "ChunkEnable":
            return self._chunk_enable[v["ChunkSelector"]]
        if name == "AcquisitionResultingFrameRate":
            return self._resulting_rate()
        return v[name]

    def _limits(self, name: str) -> tuple[Any, Any, Any]:
        v = self._values
        if name == "Width":
            return 16, self.sensor_width - v["OffsetX"], 16
        if name == "Height":
            return 8, self.sensor_height - v["OffsetY"], 2
        if name == "OffsetX":
            return 0, self.sensor_width - v["Width"], 4
        if name == "OffsetY":
            return 0, self.sensor_height - v["Height"], 2
        if name == "ExposureTime":
            return 6.0, 30_000_000.0, None
        if name == "StreamBufferCountManual":
            return 1, 2000, 1
        return -(1 << 63), (1 << 63) - 1, 1

    def _resulting_rate(self) -> float:
        """The camera's top frame rate for the settings: exposure and readout overlap."""
        readout_us = self._values["Height"] * self.line_time_us
        exposure_us = self._values["ExposureTime"] + 15.0
        return 1e6 / max(readout_us, exposure_us)

    def _write(self, name: str, value: Any) -> None:
        if self._write_failures.get(name):
            self._write_failures[name] -= 1
            raise SpinnakerException(f"Error writing to node {name}: device not responding",
                                     SPINNAKER_ERR_IO)
        self.writes.append((name, value))
        v = self._values
        line = v["LineSelector"]
        if name == "LineMode":
            self._line_mode[line] = value
            if value == "Input":
                self._line_source[line] = "Off"
        elif name == "LineSource":
            self._line_source[line] = value
        elif name == "V3_3Enable":
            self._v3_3 = value
        elif name == "ChunkEnable":
            self._chunk_enable[v["ChunkSelector"]] = value
        else:
            v[name] = value

    def _execute(self, name: str) -> None:
        self.executed.append(name)
        if name == "TimestampLatch":
            self._values["TimestampLatchValue"] = self.camera_ns()

    # -- the camera's acquisition -----------------------------------------------------------------

    def _buffer_count(self) -> int:
        return self._values["StreamBufferCountManual"] if (
            self._values["StreamBufferCountMode"] == "Manual") else 10

    # -- the handle's methods (FakeCameraPtr) ---------------------------------------------------

    def _is_valid(self) -> bool:
        return True

    def _is_initialized(self) -> bool:
        return self.initialized

    def _is_streaming(self) -> bool:
        return self.acquiring

    def _init(self) -> None:
        self.initialized = True
        self.inits += 1

    def _deinit(self) -> None:
        self._maybe_fail("DeInit")
        if self.acquiring:
            self._end()
        self.initialized = False
        self.deinits += 1

    def _require_init(self) -> None:
        if not self.initialized:
            raise SpinnakerException("Camera is not initialized. Please call Init()",
                                     SPINNAKER_ERR_NOT_INITIALIZED)

    def _get_nodemap(self) -> NodeMap:
        self._require_init()
        return NodeMap(self._nodes)

    def _get_tl_nodemap(self) -> NodeMap:
        return NodeMap(self._tl_nodes)

    def _get_stream_nodemap(self) -> NodeMap:
        return NodeMap(self._stream_nodes)

    def _get_next_image(self, timeout_ms: int = -1) -> FakeImage:
        self._require_init()
        return self._next_image(timeout_ms if timeout_ms >= 0 else 1 << 40)

    def _begin(self) -> None:
        self._require_init()
        self._maybe_fail("BeginAcquisition")
        with self._lock:
            if self.acquiring:
                raise SpinnakerException("Camera is already streaming", SPINNAKER_ERR_RESOURCE_IN_USE)
            self.acquiring = True
            self._frame_id = 0

    def _end(self) -> None:
        self._require_init()
        self._maybe_fail("EndAcquisition")
        with self._lock:
            if not self.acquiring:
                raise SpinnakerException("Camera is not started", SPINNAKER_ERR_RESOURCE_IN_USE)
            self.acquiring = False
            for image in self._queue:  # images never fetched go back to the stream
                image.released = True
            self._queue.clear()
            self._lock.notify_all()

    def _pixels(self, frame_id: int) -> np.ndarray:
        h, w = self._values["Height"], self._values["Width"]
        shape: tuple[int, ...] = (h, w, 3) if self._values["PixelFormat"] == "RGB8" else (h, w)
        dtype = np.uint16 if self._values["PixelFormat"] == "Mono16" else np.uint8
        base = (np.arange(h)[:, None] + np.arange(w)[None, :] + frame_id) % 251
        out = np.broadcast_to(base.reshape(h, w, *([1] * (len(shape) - 2))), shape)
        return np.ascontiguousarray(out, dtype=dtype)

    def _expose(self) -> None:
        """One exposure (the lock is held)."""
        v = self._values
        frame_id = self._frame_id
        self._frame_id += 1
        chunks_all = {"FrameID": frame_id, "Timestamp": self.camera_ns(),
                      "ExposureTime": float(v["ExposureTime"]), "ExposureEndLineStatusAll": 0b0100}
        chunks = {k: x for k, x in chunks_all.items()
                  if v["ChunkModeActive"] and self._chunk_enable.get(k, False)}
        v["ChunkFrameID"], v["ChunkTimestamp"] = chunks_all["FrameID"], chunks_all["Timestamp"]
        v["ChunkExposureTime"] = chunks_all["ExposureTime"]
        incomplete = self._incomplete_next > 0
        if incomplete:
            self._incomplete_next -= 1
            v["StreamIncompleteFrameCount"] += 1
        image = FakeImage(self, frame_id + 1, self._pixels(frame_id), chunks, incomplete)
        image.frame_id = frame_id
        self.images.append(image)
        if self.buffers_in_use >= self._buffer_count():
            v["StreamDroppedFrameCount"] += 1
            if v["StreamBufferHandlingMode"] == "OldestFirst" or not self._queue:
                image.released = True
                return
            self._queue.popleft().released = True
        self._queue.append(image)
        self._lock.notify_all()

    def _next_image(self, timeout_ms: int) -> FakeImage:
        if not self.acquiring:
            raise SpinnakerException("Camera is not started.", SPINNAKER_ERR_RESOURCE_IN_USE)
        if self._get_errors:
            raise self._get_errors.popleft()
        deadline = time.monotonic() + timeout_ms / 1000
        with self._lock:
            while not self._queue:
                left = deadline - time.monotonic()
                if left <= 0 or not self.acquiring:
                    raise SpinnakerException(
                        "Failed waiting for EventData on NEW_BUFFER_DATA event.", SPINNAKER_ERR_TIMEOUT)
                self._lock.wait(left)
            image = self._queue.popleft()
            self._held.append(image)
            return image

    def _release(self, image: FakeImage) -> None:
        with self._lock:
            self._held.remove(image)


class FakeCameraPtr:
    """A camera handle (``CameraPtr``) as a camera list hands it out.

    Its methods are the device's (bound to the device, not to the handle), so an exception raised
    in one leaves no frame holding the handle in its traceback: in PySpin such errors come from
    C++ and hold no reference to the camera either, and the System's check for cameras still
    referenced at ``ReleaseInstance`` sees only references the driver really keeps.
    """

    def __init__(self, device: FakeDevice, system: FakeSystem) -> None:
        system._handles.add(self)
        self.IsValid = device._is_valid
        self.IsInitialized = device._is_initialized
        self.IsStreaming = device._is_streaming
        self.Init = device._init
        self.DeInit = device._deinit
        self.GetNodeMap = device._get_nodemap
        self.GetTLDeviceNodeMap = device._get_tl_nodemap
        self.GetTLStreamNodeMap = device._get_stream_nodemap
        self.BeginAcquisition = device._begin
        self.EndAcquisition = device._end
        self.GetNextImage = device._get_next_image
        self._device = device


class CameraList:
    def __init__(self, handles: list[FakeCameraPtr]) -> None:
        self._handles = handles

    def GetSize(self) -> int:
        return len(self._handles)

    def GetByIndex(self, index: int) -> FakeCameraPtr:
        if not 0 <= index < len(self._handles):
            raise SpinnakerException(f"Index {index} is out of range", -1017)
        return self._handles[index]

    def GetBySerial(self, serial: str) -> FakeCameraPtr:
        for h in self._handles:
            if h._device.serial == serial:
                return h
        raise SpinnakerException(f"Unable to find camera with serial {serial}", SPINNAKER_ERR_NOT_AVAILABLE)

    def Clear(self) -> None:
        self._handles = []

    def __len__(self) -> int:
        return len(self._handles)

    def __iter__(self):
        return iter(self._handles)


class FakeSystem:
    """The Spinnaker system singleton (``SystemPtr``)."""

    def __init__(self, spin: FakePySpin) -> None:
        self._spin = spin
        self.refs = 0
        self._handles: weakref.WeakSet[FakeCameraPtr] = weakref.WeakSet()

    def GetCameras(self) -> CameraList:
        if self.refs <= 0:
            raise SpinnakerException("System has been released", -1006)
        return CameraList([FakeCameraPtr(d, self) for d in self._spin.devices])

    def GetLibraryVersion(self) -> Any:
        return types.SimpleNamespace(major=4, minor=0, type=0, build=0)

    def IsInUse(self) -> bool:
        return self.refs > 0

    def ReleaseInstance(self) -> None:
        if self.refs <= 0:
            raise SpinnakerException("System has already been released", -1006)
        if self.refs == 1:
            held = [h._device.serial for h in list(self._handles)]
            init = [d.serial for d in self._spin.devices if d.initialized]
            if held or init:
                raise SpinnakerException(
                    "Can't clear a camera because something still holds a reference to the camera",
                    SPINNAKER_ERR_RESOURCE_IN_USE)
        self.refs -= 1
        self._spin.releases += 1


class FakePySpin(types.ModuleType):
    """The fake module. ``devices``: the cameras attached (add with :meth:`add_camera`)."""

    SpinnakerException = SpinnakerException
    SPINNAKER_ERR_TIMEOUT = SPINNAKER_ERR_TIMEOUT
    SPINNAKER_ERR_NOT_INITIALIZED = SPINNAKER_ERR_NOT_INITIALIZED
    SPINNAKER_ERR_RESOURCE_IN_USE = SPINNAKER_ERR_RESOURCE_IN_USE
    SPINNAKER_ERR_IO = SPINNAKER_ERR_IO
    IsAvailable = staticmethod(IsAvailable)
    IsReadable = staticmethod(IsReadable)
    IsWritable = staticmethod(IsWritable)
    CEnumerationPtr = staticmethod(_cast("enumeration"))
    CIntegerPtr = staticmethod(_cast("integer"))
    CFloatPtr = staticmethod(_cast("float"))
    CBooleanPtr = staticmethod(_cast("boolean"))
    CCommandPtr = staticmethod(_cast("command"))
    CStringPtr = staticmethod(_cast("string"))

    @staticmethod
    def CEnumEntryPtr(entry: Any) -> Any:
        return entry if isinstance(entry, EnumEntry) else None

    @staticmethod
    def Image_GetImageStatusDescription(status: int) -> str:
        return _STATUS_TEXT.get(status, f"Unknown image status {status}")

    def __init__(self) -> None:
        super().__init__("PySpin")
        self.devices: list[FakeDevice] = []
        self.releases = 0
        self._system = FakeSystem(self)
        system = self._system

        class System:
            @staticmethod
            def GetInstance() -> FakeSystem:
                system.refs += 1
                return system

        self.System = System

    def add_camera(self, serial: str, **kw: Any) -> FakeDevice:
        device = FakeDevice(serial, **kw)
        self.devices.append(device)
        return device

    @property
    def system_refs(self) -> int:
        """References to the System singleton not yet released (0: released)."""
        return self._system.refs

    @property
    def camera_handles(self) -> int:
        """Camera handles still referenced anywhere (a list not cleared, a driver's pointer)."""
        return len(self._system._handles)
