"""The behaviour every Camera backend owes the camera node, written once.

Subclass :class:`CameraContract` in a test module and provide two fixtures:

- ``camera``: a new, unopened :class:`rigstream.acquisition.camera.Camera` (the fixture closes
  it afterwards);
- ``trigger``: a callable that makes that camera expose one frame once it is acquiring (a
  simulated edge on its trigger line, a software trigger on a fake or real device).

The simulated camera runs it always; a PySpin fake (or real hardware, under the ``hardware``
marker) reuses it unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

from rigstream.acquisition.camera import Camera, CameraError, CameraState, Frame

Trigger = Callable[[], None]


class CameraContract:
    frame_timeout_s = 2.0
    """How long a triggered frame may take to come out of ``get_frame``."""

    @pytest.fixture
    def camera(self) -> Camera:
        raise NotImplementedError("a CameraContract subclass provides the camera fixture")

    @pytest.fixture
    def trigger(self, camera: Camera) -> Trigger:
        raise NotImplementedError("a CameraContract subclass provides the trigger fixture")

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def acquiring(camera: Camera) -> Camera:
        camera.open()
        camera.configure()
        camera.start()
        return camera

    def grab(self, camera: Camera, trigger: Trigger) -> Frame:
        trigger()
        frame = camera.get_frame(self.frame_timeout_s)
        assert frame is not None, f"no frame within {self.frame_timeout_s} s of a trigger"
        return frame

    # -- states ----------------------------------------------------------------------------

    def test_a_new_camera_is_closed(self, camera: Camera) -> None:
        assert camera.state is CameraState.CLOSED
        assert camera.name == camera.config.name

    def test_lifecycle_moves_through_the_states(self, camera: Camera) -> None:
        camera.open()
        assert camera.state is CameraState.OPEN
        camera.configure()
        assert camera.state is CameraState.CONFIGURED
        camera.configure()  # configuring again is allowed before start
        assert camera.state is CameraState.CONFIGURED
        camera.start()
        assert camera.state is CameraState.ACQUIRING
        camera.stop()
        assert camera.state is CameraState.CONFIGURED
        camera.stop()  # stopping a camera that is not acquiring does nothing
        assert camera.state is CameraState.CONFIGURED
        camera.close()
        assert camera.state is CameraState.CLOSED

    @pytest.mark.parametrize("reached", ["closed", "open", "configured"])
    def test_get_frame_before_start_raises(self, camera: Camera, reached: str) -> None:
        if reached != "closed":
            camera.open()
        if reached == "configured":
            camera.configure()
        with pytest.raises(CameraError, match=camera.name):
            camera.get_frame(0.01)
        assert camera.state.value == reached

    def test_steps_out_of_order_raise_and_change_nothing(self, camera: Camera) -> None:
        with pytest.raises(CameraError, match="cannot configure while closed"):
            camera.configure()
        with pytest.raises(CameraError, match="cannot start while closed"):
            camera.start()
        assert camera.state is CameraState.CLOSED
        camera.open()
        with pytest.raises(CameraError, match="cannot open while open"):
            camera.open()
        with pytest.raises(CameraError, match="cannot start while open"):
            camera.start()
        assert camera.state is CameraState.OPEN
        camera.configure()
        camera.start()
        with pytest.raises(CameraError, match="cannot configure while acquiring"):
            camera.configure()
        with pytest.raises(CameraError, match="cannot start while acquiring"):
            camera.start()
        assert camera.state is CameraState.ACQUIRING

    # -- frames ----------------------------------------------------------------------------

    def test_get_frame_without_a_trigger_times_out_with_none(self, camera: Camera) -> None:
        self.acquiring(camera)
        t0 = time.monotonic()
        assert camera.get_frame(0.1) is None
        waited = time.monotonic() - t0
        assert 0.09 <= waited < 1.0

    def test_each_trigger_gives_one_frame_in_order(self, camera: Camera, trigger: Trigger) -> None:
        self.acquiring(camera)
        cfg = camera.config
        shape = (cfg.height, cfg.width) + ((3,) if cfg.channels == 3 else ())
        frames = [self.grab(camera, trigger) for _ in range(3)]
        assert [f.frame_id for f in frames] == [0, 1, 2]  # the counter restarts at start
        assert all(not f.incomplete for f in frames)
        for f in frames:
            assert isinstance(f.pixels, np.ndarray)
            assert f.pixels.shape == shape and f.pixels.dtype == np.uint8
            assert f.pixels.flags.c_contiguous
        stamps = [f.t_camera_ns for f in frames]
        assert stamps == sorted(stamps) and len(set(stamps)) == 3
        for f in frames:
            f.release()
        assert camera.get_frame(0.05) is None  # one frame per trigger, no more

    def test_acquisition_can_stop_and_start_again(self, camera: Camera, trigger: Trigger) -> None:
        self.acquiring(camera)
        self.grab(camera, trigger).release()
        camera.stop()
        with pytest.raises(CameraError):
            camera.get_frame(0.01)
        camera.start()
        frame = self.grab(camera, trigger)
        assert frame.pixels is not None
        frame.release()

    # -- closing -----------------------------------------------------------------------------

    def test_close_stops_acquisition_and_is_idempotent(self, camera: Camera) -> None:
        camera.close()  # never opened: nothing to do
        assert camera.state is CameraState.CLOSED
        self.acquiring(camera)
        camera.close()
        assert camera.state is CameraState.CLOSED
        camera.close()
        assert camera.state is CameraState.CLOSED
        with pytest.raises(CameraError, match="cannot get_frame while closed"):
            camera.get_frame(0.01)

    def test_a_closed_camera_opens_again(self, camera: Camera, trigger: Trigger) -> None:
        self.acquiring(camera)
        camera.close()
        self.acquiring(camera)
        frame = self.grab(camera, trigger)
        assert frame.pixels is not None
        frame.release()

    def test_context_manager_closes(self, camera: Camera) -> None:
        with camera as cam:
            assert cam is camera
            self.acquiring(cam)
        assert camera.state is CameraState.CLOSED

    def test_context_manager_closes_on_error(self, camera: Camera) -> None:
        with pytest.raises(RuntimeError, match="boom"), camera:
            self.acquiring(camera)
            raise RuntimeError("boom")
        assert camera.state is CameraState.CLOSED

    # -- clocks ----------------------------------------------------------------------------

    def test_clock_latch_is_bracketed_by_host_time_and_tracks_frames(
        self, camera: Camera, trigger: Trigger
    ) -> None:
        with pytest.raises(CameraError):
            camera.latch_clock()  # only while acquiring
        self.acquiring(camera)
        first = camera.latch_clock()
        if first is None:
            pytest.skip(f"{type(camera).__name__} cannot latch its clock")
        frame = self.grab(camera, trigger)
        second = camera.latch_clock()
        assert second is not None
        for before, _, after in (first, second):
            assert before <= after
        # The camera's clock runs forward between latches, by about the host time between them,
        # and a frame taken in between is stamped in between.
        assert first[1] <= frame.t_camera_ns <= second[1]
        host_s = (second[0] - first[2]) / 1e9
        camera_s = (second[1] - first[1]) / 1e9
        assert camera_s == pytest.approx(host_s, rel=0.01, abs=0.005)
