"""The PySpin camera driver over a fake PySpin (tests/acquisition/fake_pyspin.py).

The fake stands in for the SDK, not for the driver: the driver's real node writes, image
handling and release sequence run against node maps with the SDK's access rules.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from rigstream.acquisition.backends import make_camera
from rigstream.acquisition.camera import Camera, CameraError, CameraState
from rigstream.acquisition.pyspin_camera import PySpinCamera, list_cameras
from rigstream.config import RigConfig, load_rig
from tests.conftest import small_rig

from .camera_contract import CameraContract
from .fake_pyspin import SPINNAKER_ERR_IO, SPINNAKER_ERR_TIMEOUT, FakeDevice, FakePySpin, SpinnakerException

SERIALS = ("21290846", "21290847")


def pyspin_rig(cameras: int = 2, rate_hz: float = 100, primary: dict[str, Any] | None = None,
               secondary: dict[str, Any] | None = None) -> RigConfig:
    """Small rig of FLIR cameras (64x48 Mono8, exposure 2000 us); ``primary``/``secondary``:
    CameraConfig fields to change."""
    doc = msgspec.to_builtins(small_rig(cameras=cameras, trigger={"rate_hz": rate_hz}))
    for i, cam in enumerate(doc["cameras"]):
        cam.update(backend="pyspin", serial=SERIALS[i])
        cam.update((primary if i == 0 else secondary) or {})
    return msgspec.convert(doc, type=RigConfig, strict=True)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePySpin:
    spin = FakePySpin()
    monkeypatch.setitem(sys.modules, "PySpin", spin)
    return spin


@pytest.fixture
def devices(fake: FakePySpin) -> list[FakeDevice]:
    return [fake.add_camera(serial) for serial in SERIALS]


def released(fake: FakePySpin, *devs: FakeDevice) -> bool:
    """Spinnaker is left clean: no camera initialized or acquiring, every image released, no
    camera handle referenced, the system released."""
    return (fake.system_refs == 0 and fake.camera_handles == 0
            and all(not d.initialized and not d.acquiring and d.unreleased == 0 for d in devs))


def grab(cam: Camera, device: FakeDevice, n: int = 1) -> list[Any]:
    frames = []
    for _ in range(n):
        assert device.trigger()
        frame = cam.get_frame(1.0)
        assert frame is not None
        frames.append(frame)
    return frames


class TestPySpinCameraContract(CameraContract):
    @pytest.fixture
    def camera(self, devices: list[FakeDevice]) -> Iterator[Camera]:
        rig = pyspin_rig(cameras=1)
        cam = PySpinCamera(rig.cameras[0], rig)
        yield cam
        cam.close()

    @pytest.fixture
    def trigger(self, camera: Camera, devices: list[FakeDevice]) -> Callable[[], None]:
        return lambda: devices[0].trigger()


# -- configuration ---------------------------------------------------------------------------------

TRIGGER_LINE3 = [
    ("TriggerMode", "Off"),
    ("LineSelector", "Line3"), ("LineMode", "Input"),
    ("TriggerSelector", "FrameStart"),
    ("TriggerSource", "Line3"),
    ("TriggerActivation", "RisingEdge"),
    ("TriggerOverlap", "ReadOut"),
    ("TriggerMode", "On"),
    ("ExposureAuto", "Off"),
    ("ExposureTime", 2000.0),
]
STROBE_LINE2 = [
    ("LineSelector", "Line2"), ("LineMode", "Output"), ("LineSource", "ExposureActive"),
    ("V3_3Enable", False),
]
REST = [
    ("AcquisitionMode", "Continuous"),
    ("AcquisitionFrameRateEnable", False),
    ("PixelFormat", "Mono8"),
    ("OffsetX", 0), ("OffsetY", 0), ("Width", 64), ("Height", 48), ("OffsetX", 0), ("OffsetY", 0),
    ("ChunkModeActive", True),
    ("ChunkSelector", "FrameID"), ("ChunkEnable", True),
    ("ChunkSelector", "Timestamp"), ("ChunkEnable", True),
    ("ChunkSelector", "ExposureTime"), ("ChunkEnable", True),
    ("ChunkSelector", "ExposureEndLineStatusAll"), ("ChunkEnable", True),
    ("StreamBufferHandlingMode", "OldestFirst"),
    ("StreamBufferCountMode", "Manual"),
    ("StreamBufferCountManual", 64),
]


def test_primary_node_writes_in_order(fake: FakePySpin, devices: list[FakeDevice]) -> None:
    rig = pyspin_rig()
    with PySpinCamera(rig.cameras[0], rig) as cam:
        cam.open()
        cam.configure()
        assert cam.role == "primary"
        assert devices[0].writes == TRIGGER_LINE3 + STROBE_LINE2 + REST
        assert devices[1].writes == []
        d = devices[0]
        assert d.value("TriggerMode") == "On" and d.value("TriggerSource") == "Line3"
    assert released(fake, *devices)


def test_secondary_node_writes_in_order_without_a_strobe(fake: FakePySpin,
                                                         devices: list[FakeDevice]) -> None:
    rig = pyspin_rig()
    with PySpinCamera(rig.cameras[1], rig) as cam:
        cam.open()
        cam.configure()
        assert cam.role == "secondary"
        assert devices[1].writes == TRIGGER_LINE3 + REST
        assert devices[0].writes == []
    assert released(fake, *devices)


def test_opto_lines_bayer_roi_and_powered_strobe(fake: FakePySpin, devices: list[FakeDevice]) -> None:
    rig = pyspin_rig(primary={"trigger_line": "Line0", "pixel_format": "bayer_rg8", "strobe_3v3": True,
                              "strobe_line": "Line1",
                              "width": 128, "height": 64, "offset_x": 32, "offset_y": 16,
                              "buffer_count": 10})
    with PySpinCamera(rig.cameras[0], rig) as cam:
        cam.open()
        cam.configure()
        w = devices[0].writes
        # Line0 is an input only: its LineMode is not written.
        assert w[:7] == [("TriggerMode", "Off"), ("LineSelector", "Line0"),
                         ("TriggerSelector", "FrameStart"), ("TriggerSource", "Line0"),
                         ("TriggerActivation", "RisingEdge"), ("TriggerOverlap", "ReadOut"),
                         ("TriggerMode", "On")]
        # Line1 (opto) is the strobe, pulled up by Line2's 3.3 V supply.
        i = w.index(("LineSelector", "Line1"))
        assert w[i:i + 4] == [("LineSelector", "Line1"), ("LineSource", "ExposureActive"),
                              ("LineSelector", "Line2"), ("V3_3Enable", True)]
        assert devices[0].writes_to("PixelFormat") == [("PixelFormat", "BayerRG8")]
        assert devices[0].writes_to("OffsetX", "OffsetY", "Width", "Height") == [
            ("OffsetX", 0), ("OffsetY", 0), ("Width", 128), ("Height", 64), ("OffsetX", 32),
            ("OffsetY", 16)]
        cam.start()
        frame = grab(cam, devices[0])[0]
        assert frame.pixels is not None and frame.pixels.shape == (64, 128)  # a raw Bayer mosaic
        frame.release()


def test_configure_again_rewrites_the_trigger(fake: FakePySpin, devices: list[FakeDevice]) -> None:
    rig = pyspin_rig()
    with PySpinCamera(rig.cameras[0], rig) as cam:
        cam.open()
        cam.configure()
        n = len(devices[0].writes)
        cam.configure()  # TriggerMode is On: the trigger source is only writable after Off
        assert devices[0].writes[n:] == devices[0].writes[:n]


def test_a_strobe_drives_the_secondary(fake: FakePySpin, devices: list[FakeDevice]) -> None:
    rig = pyspin_rig()
    devices[0].wire("Line2", devices[1], "Line3")
    primary, secondary = (PySpinCamera(c, rig) for c in rig.cameras)
    try:
        for cam in (secondary, primary):  # secondaries first, as the session starts them
            cam.open()
            cam.configure()
            cam.start()
        for _ in range(3):
            devices[0].trigger("Line3")  # the Pi's pulse into the primary's trigger line
        ids = {cam.role: [f.frame_id for f in (cam.get_frame(1.0) for _ in range(3)) if f]
               for cam in (primary, secondary)}
        assert ids == {"primary": [0, 1, 2], "secondary": [0, 1, 2]}
    finally:
        primary.close()
        secondary.close()
    assert released(fake, *devices)


def test_a_missing_serial_names_the_cameras_found(fake: FakePySpin, devices: list[FakeDevice]) -> None:
    rig = pyspin_rig(primary={"serial": "99999999"})
    cam = PySpinCamera(rig.cameras[0], rig)
    with pytest.raises(CameraError, match=r"cam0: no FLIR camera with serial '99999999'; "
                                          r"cameras found: 21290846, 21290847"):
        cam.open()
    assert cam.state is CameraState.CLOSED
    assert released(fake, *devices)


def test_no_camera_attached(fake: FakePySpin) -> None:
    rig = pyspin_rig()
    with pytest.raises(CameraError, match="cameras found: none"):
        PySpinCamera(rig.cameras[0], rig).open()
    assert fake.system_refs == 0


def test_an_exposure_that_leaves_no_readout_time_is_refused(fake: FakePySpin,
                                                            devices: list[FakeDevice]) -> None:
    rig = pyspin_rig(rate_hz=200, primary={"exposure_us": 4950})  # period 5000 us
    with PySpinCamera(rig.cameras[0], rig) as cam:
        cam.open()
        with pytest.raises(CameraError, match=r"exposure_us \(4950\) plus 100 us for readout must fit "
                                              r"in the trigger period \(5000 us at 200 Hz\): at most "
                                              r"4900 us"):
            cam.configure()
        assert devices[0].writes == []  # refused before touching the camera
    assert released(fake, *devices)


def test_a_trigger_rate_the_camera_cannot_reach_is_refused(fake: FakePySpin,
                                                           devices: list[FakeDevice]) -> None:
    # 1080 lines take the fake's sensor 4320 us to read: at most 231 Hz, whatever the exposure.
    rig = pyspin_rig(rate_hz=250, primary={"width": 1440, "height": 1080, "exposure_us": 1000})
    with PySpinCamera(rig.cameras[0], rig) as cam:
        cam.open()
        with pytest.raises(CameraError, match=r"reaches at most 231\.5 Hz .* below the trigger rate "
                                              r"250 Hz"):
            cam.configure()


@pytest.mark.parametrize(("fields", "message"), [
    ({"width": 1448}, r"width 1448 is not allowed: this camera takes Width from 16 to 1440 in steps "
                      r"of 16 \(with offset_x 0 and width 1448\)"),
    ({"width": 70}, r"width 70 is not allowed: .* in steps of 16"),
    ({"width": 1024, "offset_x": 512}, r"offset_x 512 is not allowed: this camera takes OffsetX from 0 "
                                       r"to 416 in steps of 4"),
    ({"pixel_format": "rgb8"}, r"pixel_format PixelFormat 'RGB8' is not offered by this camera "
                               r"\(it offers: Mono8, Mono16\)"),
    ({"strobe_3v3": True, "strobe_line": "Line2"}, r"strobe_3v3 turns Line2 \(pin 3\) into a 3.3 V supply"),
    ({"buffer_count": 5000}, r"buffer_count 5000 is not allowed: .* StreamBufferCountManual from 1 "
                             r"to 2000"),
])
def test_settings_the_camera_refuses_name_its_limits(fake: FakePySpin, fields: dict[str, Any],
                                                     message: str) -> None:
    device = fake.add_camera(SERIALS[0], pixel_formats=("Mono8", "Mono16"))
    rig = pyspin_rig(cameras=1, primary=fields)
    with PySpinCamera(rig.cameras[0], rig) as cam:
        cam.open()
        with pytest.raises(CameraError, match=message):
            cam.configure()
    assert released(fake, device)


# -- frames ----------------------------------------------------------------------------------------


@pytest.fixture
def acquiring(devices: list[FakeDevice]) -> Iterator[PySpinCamera]:
    rig = pyspin_rig()
    cam = PySpinCamera(rig.cameras[0], rig)
    cam.open()
    cam.configure()
    cam.start()
    yield cam
    cam.close()


def test_chunk_data_comes_from_the_image_not_the_node_map(acquiring: PySpinCamera,
                                                          devices: list[FakeDevice]) -> None:
    d = devices[0]
    for _ in range(3):
        d.trigger()
    frame = acquiring.get_frame(1.0)
    assert frame is not None
    first = d.images[0]
    assert frame.frame_id == 0 and d.value("ChunkFrameID") == 2  # the node map shows the newest
    assert frame.t_camera_ns == first._chunks["Timestamp"] != d.value("ChunkTimestamp")
    assert frame.exposure_us == 2000.0
    assert np.array_equal(frame.pixels, first._pixels)
    assert d.unreleased == 0  # the image went back to the stream once copied
    frame.release()


def test_incomplete_images_are_counted_and_reported_with_their_frame_ids(
        acquiring: PySpinCamera, devices: list[FakeDevice]) -> None:
    d = devices[0]
    d.inject_incomplete(1)  # the first image: no complete image yet to place it by
    frames = grab(acquiring, d, 3)
    d.inject_incomplete(2)
    frames += grab(acquiring, d, 3)
    assert [(f.frame_id, f.incomplete, f.pixels is None) for f in frames] == [
        (0, True, True), (1, False, False), (2, False, False), (3, True, True), (4, True, True),
        (5, False, False)]
    stats = acquiring.stats()
    assert stats["incomplete"] == 3 and stats["incomplete_frame_ids"] == [0, 3, 4]
    assert stats["images"] == 3 and stats["StreamIncompleteFrameCount"] == 3
    assert d.unreleased == 0
    for f in frames:
        f.release()


def test_get_next_image_timeout_is_none(acquiring: PySpinCamera, devices: list[FakeDevice]) -> None:
    assert acquiring.get_frame(0.02) is None
    devices[0].inject_get_error(SPINNAKER_ERR_TIMEOUT)
    devices[0].trigger()
    assert acquiring.get_frame(0.5) is None  # the injected timeout, although an image waits
    frame = acquiring.get_frame(0.5)
    assert frame is not None and frame.frame_id == 0
    frame.release()
    assert acquiring.stats()["timeouts"] == 2


def test_full_stream_buffers_drop_new_images(fake: FakePySpin, devices: list[FakeDevice]) -> None:
    rig = pyspin_rig(cameras=1, primary={"buffer_count": 4})
    with PySpinCamera(rig.cameras[0], rig) as cam:
        cam.open()
        cam.configure()
        cam.start()
        for _ in range(6):
            devices[0].trigger()
        ids = [f.frame_id for f in iter(lambda: cam.get_frame(0.05), None)]
        assert ids == [0, 1, 2, 3]  # OldestFirst: 4 and 5 found no buffer
        assert [f.frame_id for f in grab(cam, devices[0])] == [6]  # FrameID shows the gap
        assert cam.stats()["StreamDroppedFrameCount"] == 2


# -- errors and releasing --------------------------------------------------------------------------


def test_release_after_an_error_while_configuring(fake: FakePySpin, devices: list[FakeDevice]) -> None:
    devices[0].fail_writes("PixelFormat")
    rig = pyspin_rig()
    with PySpinCamera(rig.cameras[0], rig) as cam:
        cam.open()
        with pytest.raises(CameraError, match=r"cam0: configuring failed: Spinnaker: Error writing to "
                                              r"node PixelFormat.*\[-1010\]"):
            cam.configure()
        assert cam.state is CameraState.OPEN
    assert cam.state is CameraState.CLOSED
    assert devices[0].deinits == 1
    assert released(fake, *devices)


def test_release_after_an_error_while_acquiring(fake: FakePySpin, devices: list[FakeDevice]) -> None:
    rig = pyspin_rig()
    cam = PySpinCamera(rig.cameras[0], rig)
    with pytest.raises(CameraError, match=r"GetNextImage failed: .*\[-1010\]"), cam:
        cam.open()
        cam.configure()
        cam.start()
        grab(cam, devices[0], 2)[0].release()
        devices[0].trigger()
        devices[0].inject_get_error(SPINNAKER_ERR_IO)
        cam.get_frame(1.0)
    assert devices[0].deinits == 1
    assert released(fake, *devices)
    assert all(image.released for image in devices[0].images)


def test_release_after_begin_acquisition_fails(fake: FakePySpin, devices: list[FakeDevice]) -> None:
    devices[0].fail_call("BeginAcquisition")
    rig = pyspin_rig()
    with PySpinCamera(rig.cameras[0], rig) as cam:
        cam.open()
        cam.configure()
        with pytest.raises(CameraError, match="BeginAcquisition failed"):
            cam.start()
        cam.start()  # a second try starts cleanly
        grab(cam, devices[0])[0].release()
    assert released(fake, *devices)


def test_every_close_step_runs_when_one_fails(fake: FakePySpin, devices: list[FakeDevice]) -> None:
    rig = pyspin_rig()
    cam = PySpinCamera(rig.cameras[0], rig)
    cam.open()
    cam.configure()
    cam.start()
    devices[0].fail_call("EndAcquisition")
    devices[0].fail_call("DeInit")
    with pytest.raises(CameraError, match="EndAcquisition failed"):
        cam.close()  # stop() reports its failure; close still runs every step
    assert cam.state is CameraState.CLOSED
    # close tried EndAcquisition again (it worked), then DeInit failed and the system refused.
    assert not devices[0].acquiring
    assert [e.split(":")[0] for e in cam.close_errors] == ["DeInit", "ReleaseInstance"]
    # The list was cleared and the camera dropped even so; the system refused to go while the
    # camera is initialized, as Spinnaker does, and goes once the camera is deinitialized.
    assert fake.camera_handles == 0 and fake.system_refs == 1
    devices[0]._deinit()
    fake._system.ReleaseInstance()
    assert released(fake, *devices)
    cam.close()  # closed: nothing to do


def test_the_fake_system_refuses_release_while_a_camera_is_referenced(fake: FakePySpin,
                                                                      devices: list[FakeDevice]) -> None:
    system = fake.System.GetInstance()
    cam_list = system.GetCameras()
    cam = cam_list.GetBySerial(SERIALS[0])
    cam_list.Clear()
    with pytest.raises(SpinnakerException, match=r"still holds a reference to the camera \[-1004\]"):
        system.ReleaseInstance()
    del cam
    system.ReleaseInstance()
    assert fake.system_refs == 0


def test_pyspin_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PySpin", None)  # import PySpin raises ImportError
    rig = pyspin_rig()
    cam = make_camera(rig.cameras[0], rig, "unused", None)  # type: ignore[arg-type]
    assert isinstance(cam, PySpinCamera)
    with pytest.raises(CameraError, match=r"PySpin \(FLIR Spinnaker SDK\) is not installed: install "
                                          r"Spinnaker and its Python wheel from FLIR"):
        cam.open()
    assert cam.state is CameraState.CLOSED
    with pytest.raises(CameraError, match="not installed"):
        list_cameras()


def test_list_cameras(fake: FakePySpin) -> None:
    fake.add_camera("21290846")
    fake.add_camera("18420001", model="Blackfly S BFS-PGE-31S4C", firmware="1804.0.113.0",
                    device_type="GigEVision")
    assert list_cameras() == [
        {"serial": "21290846", "model": "Blackfly S BFS-U3-16S2M", "firmware": "1707.1.6.0",
         "interface": "USB3Vision"},
        {"serial": "18420001", "model": "Blackfly S BFS-PGE-31S4C", "firmware": "1804.0.113.0",
         "interface": "GigEVision"},
    ]
    assert fake.system_refs == 0 and fake.camera_handles == 0
    assert all(d.inits == 0 for d in fake.devices)  # listing never initializes a camera


def test_device_info_and_stats(acquiring: PySpinCamera, devices: list[FakeDevice]) -> None:
    assert acquiring.device_info == {"serial": SERIALS[0], "model": "Blackfly S BFS-U3-16S2M",
                                     "firmware": "1707.1.6.0", "interface": "USB3Vision"}
    for f in grab(acquiring, devices[0], 2):
        f.release()
    stats = acquiring.stats()
    assert stats["images"] == 2 and stats["incomplete"] == 0 and stats["timeouts"] == 0
    assert stats["StreamDroppedFrameCount"] == 0


def test_the_shipped_blackfly_rig_configures(fake: FakePySpin) -> None:
    rig = load_rig(Path(__file__).resolve().parents[2] / "hardware" / "rigs" / "blackfly_pair.yaml")
    devices = [fake.add_camera(c.serial) for c in rig.cameras]
    cams = [PySpinCamera(c, rig) for c in rig.cameras]
    try:
        for cam in reversed(cams):  # secondaries first
            cam.open()
            cam.configure()
            cam.start()
        assert [d.value("TriggerSource") for d in devices] == ["Line3", "Line3"]
        assert devices[0].value("LineSelector") == "Line2" and devices[0].value("LineSource") == (
            "ExposureActive")
    finally:
        for cam in cams:
            cam.close()
    assert released(fake, *devices)
