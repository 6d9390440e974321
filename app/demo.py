"""The demo's policy: the rig ``rigstream demo`` runs, made from a base rig (the embedded
simulated one by default) with the camera count, rate, frame size, codec and faults the demo's
options override; the benches use it too."""

from __future__ import annotations

import msgspec

from rigstream.config import InputError, RigConfig


def demo_rig(base: RigConfig, cameras: int | None = None, fps: float | None = None,
             drop_rate: float | None = None, width: int | None = None,
             height: int | None = None, codec: str | None = None,
             pose: bool | None = None, prerender_s: float | None = None) -> RigConfig:
    """The rig a demo runs: ``base`` with the camera count, rate and faults overridden;
    ``prerender_s`` makes every (simulated) camera deliver from a pre-rendered loop of that
    many seconds (``CameraConfig.prerender_s``)."""
    doc = msgspec.to_builtins(base)
    cams = doc["cameras"]
    if cameras is not None:
        if cameras < 1:
            raise InputError(f"--cameras must be at least 1, got {cameras}")
        template = cams[-1]
        cams = [dict(template, name=f"cam{i}", serial=f"SIM{i}",
                     role="primary" if i == 0 else "secondary") for i in range(cameras)]
    for cam in cams:
        if drop_rate is not None:
            cam["faults"] = dict(cam.get("faults", {}), drop_rate=drop_rate)
        if width is not None:
            cam["width"] = width
        if height is not None:
            cam["height"] = height
        if prerender_s is not None:
            cam["prerender_s"] = prerender_s
    doc["cameras"] = cams
    if cameras is not None or width is not None or height is not None:
        doc["calibration"] = None  # no longer fits: the session places a simulated ring
    if fps is not None:
        if not fps > 0:
            raise InputError(f"--fps must be positive, got {fps:g}")
        doc["trigger"]["rate_hz"] = fps
        for cam in cams:  # keep exposure inside the period
            cam["exposure_us"] = min(cam["exposure_us"], int(0.5e6 / fps))
    if codec is not None:
        doc["recording"]["codec"] = codec
    if pose is not None and doc.get("pose") is not None:
        doc["pose"]["enabled"] = pose
    if not (doc.get("pose") or {}).get("enabled", False):
        doc["rules"] = []  # rules run in the pose engine
    return msgspec.convert(doc, type=RigConfig, strict=True)
