"""The camera backends by name: the table a camera's ``backend`` in the rig file chooses from.

The camera contract (:mod:`~rigstream.acquisition.camera`) knows no backend, each backend module
imports it, and the choice is made here, above them: adding a camera backend is one module
that implements :class:`~rigstream.acquisition.camera.Camera` and one row below (and its name
in ``CameraConfig.backend``). A backend is imported only when chosen, so a host without the
vendor's SDK runs the simulated rig.
"""

from __future__ import annotations

from collections.abc import Callable

import zmq

from rigstream.config import CameraConfig, RigConfig

from .camera import Camera, CameraError


def _sim(config: CameraConfig, rig: RigConfig, run: str, ctx: zmq.Context) -> Camera:
    from .sim_camera import SimCamera

    return SimCamera(config, rig, run, ctx)


def _pyspin(config: CameraConfig, rig: RigConfig, run: str, ctx: zmq.Context) -> Camera:
    from .pyspin_camera import PySpinCamera

    return PySpinCamera(config, rig)


CAMERA_BACKENDS: dict[str, Callable[[CameraConfig, RigConfig, str, zmq.Context], Camera]] = {
    "sim": _sim,  # the simulated animal, triggered by the simulated lines
    "pyspin": _pyspin,  # FLIR (Spinnaker) cameras through PySpin
}
"""Camera backend name -> maker (camera config, rig, run, context)."""


def make_camera(config: CameraConfig, rig: RigConfig, run: str, ctx: zmq.Context) -> Camera:
    """The backend a camera's config names."""
    maker = CAMERA_BACKENDS.get(config.backend)
    if maker is None:
        raise CameraError(f"camera {config.name}: backend {config.backend!r} is not available "
                          f"(available: {', '.join(CAMERA_BACKENDS)})")
    return maker(config, rig, run, ctx)
