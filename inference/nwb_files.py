"""A recorded session as one NWB file (pynwb >= 4, ndx-pose >= 0.4), and reading its pose back.

:func:`export_session_nwb` takes a session folder's live pose (``pose2d.csv``, and
``pose3d_filtered.csv`` if present, else ``pose3d.csv``) to :func:`write_session_nwb`, which writes
pose handed to it as arrays together with the rest of the session:

- ``general/devices``: each camera as an ndx-pose ``CalibratedCamera`` with the session's
  ``calibration.toml`` (intrinsic matrix, OpenCV distortion, world -> camera rotation matrix and
  translation in mm); a plain ``Device`` for a camera the calibration does not have.
- ``acquisition/video_<camera>``: an ``ImageSeries`` with ``format="external"`` pointing at the
  camera's video (a path relative to the NWB file's folder), ``starting_frame`` 0 and one
  timestamp per video frame (``frames.csv`` rows with ``video_frame >= 0``: the frame's trigger
  pulse).
- ``processing/behavior``: ``Skeletons`` (one ``Skeleton``), and with 3D pose a
  ``MultiCameraPoseEstimation`` (one ``PoseEstimationSeries`` per keypoint, (N, 3) mm, in the
  calibration's world frame) holding one ``PoseEstimation`` per camera, ``pose2d_<camera>``; without
  3D those ``PoseEstimation`` sit in the module itself. A ``PoseEstimation`` holds one
  ``PoseEstimationSeries`` per keypoint: data (N, 2) image pixels, confidence (N,) the likelihood,
  NaN where the keypoint was not found; it links its camera and its video.
- ``intervals/rule_firings`` (``TimeIntervals``): one row per rule firing, from the trigger pulse
  of the frame set the rule fired on to the end of its TTL pulse; ``intervals/clips``: each saved
  clip, from its first frame's trigger pulse to its last's.
- ``events`` (``EventsTable``): ``camera_pulses``, ``sync_pulses``, ``ttl_pulses`` (``pulses.csv``:
  rising edges, with their duration), ``events`` (``events.csv``).

Times are seconds on one clock, named in the file's ``data_collection``; which clock, and how the
session folder is read, is in :mod:`rigstream.inference.nwb_session`.

Everything is read and checked before anything is written; the file is written under a temporary
name and renamed, so a failed export leaves no ``.nwb`` behind.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import rigstream
from rigstream.calibration import CalibratedCamera
from rigstream.inference.dlc_files import session_model_name
from rigstream.inference.nwb_session import (
    NEURAL_CLOCK,
    PI_CLOCK,
    POSE2D_FILE,
    NwbExportError,
    Pose2DSeries,
    Pose3DSeries,
    Session,
    TimeBase,
    column_numbers,
    read_pose2d_csv,
    read_pose3d_csv,
    read_session,
    session_skeleton,
    time_base,
    wall_time,
)

logger = logging.getLogger(__name__)

NWB_INSTALL = 'pip install "pynwb>=4" "ndx-pose>=0.4"'
BEHAVIOR = "behavior"
"""The processing module that holds the skeleton and the pose."""
SKELETON = "skeleton"
POSE2D_PREFIX = "pose2d_"
VIDEO_PREFIX = "video_"
POSE3D_FILES = ("pose3d_filtered.csv", "pose3d.csv")
"""The live 3D tables, preferred first."""

_PULSE_LINES = {"camera": ("camera_pulses", "trigger_index", "camera trigger pulses (one per trigger "
                                                             "index; every camera exposes on it)"),
                "sync": ("sync_pulses", "pulse_index", "sync-line pulses sent to the neural recorder "
                                                       "(random intervals)"),
                "ttl": ("ttl_pulses", "ttl_index", "closed-loop TTL output pulses")}


def require_nwb(what: str) -> tuple[Any, Any]:
    """The ``pynwb`` and ``ndx_pose`` modules; an NwbExportError naming what to install otherwise."""
    try:
        import ndx_pose
        import pynwb
    except ImportError as exc:
        raise NwbExportError(f"{what} needs pynwb and ndx-pose ({exc.name or exc} is not installed): "
                             f"{NWB_INSTALL}") from None
    if not hasattr(ndx_pose, "MultiCameraPoseEstimation") or int(pynwb.__version__.split(".")[0]) < 4:
        raise NwbExportError(f"{what} needs pynwb >= 4 and ndx-pose >= 0.4 (found pynwb "
                             f"{pynwb.__version__}, ndx-pose {_version('ndx-pose')}): {NWB_INSTALL}")
    return pynwb, ndx_pose


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------------------------
# Writing


def _check_inputs(keypoints: Sequence[str], skeleton: Sequence[tuple[str, str]],
                  pose2d: Mapping[str, Pose2DSeries], pose3d: Pose3DSeries | None,
                  pose3d_name: str) -> tuple[list[str], np.ndarray]:
    """The keypoints as a list and the skeleton as (E, 2) node indices, after checking every input."""
    names = [str(k) for k in keypoints]
    if not names or len(set(names)) != len(names) or any(not k or "/" in k for k in names):
        raise NwbExportError(f"keypoints: expected unique, non-empty names without '/', got {names}")
    if len(names) > 256:
        raise NwbExportError(f"keypoints: at most 256 (skeleton edges are uint8), got {len(names)}")
    if not pose2d and pose3d is None:
        raise NwbExportError("no pose to write: pose2d is empty and pose3d is None")
    for cam, series in pose2d.items():
        if not isinstance(series, Pose2DSeries):
            raise NwbExportError(f"pose2d[{cam!r}]: expected a Pose2DSeries, got {type(series).__name__}")
        if not cam or "/" in cam:
            raise NwbExportError(f"pose2d: camera name {cam!r} is empty or has '/'")
        if series.values.shape[1] != len(names):
            raise NwbExportError(f"pose2d[{cam!r}].values: {series.values.shape[1]} keypoints (shape "
                                 f"{series.values.shape}), but {len(names)} keypoint names were given")
    if pose3d is not None and pose3d.xyz.shape[1] != len(names):
        raise NwbExportError(f"pose3d.xyz: {pose3d.xyz.shape[1]} keypoints (shape {pose3d.xyz.shape}), but "
                             f"{len(names)} keypoint names were given")
    edges = []
    for i, edge in enumerate(skeleton):
        if len(edge) != 2 or any(e not in names for e in edge):
            raise NwbExportError(f"skeleton[{i}]: expected a pair of keypoint names, got {edge!r} "
                                 f"(keypoints: {names})")
        edges.append((names.index(edge[0]), names.index(edge[1])))
    taken = {SKELETON, "Skeletons", *(f"{POSE2D_PREFIX}{c}" for c in pose2d)}
    if not pose3d_name or "/" in pose3d_name or pose3d_name in taken:
        raise NwbExportError(f"pose3d_name: {pose3d_name!r} is empty, has '/', or is taken by "
                             f"{sorted(taken)}")
    return names, np.array(edges, dtype=np.uint8).reshape(-1, 2)


def write_session_nwb(session: str | Path, out: str | Path, *, keypoints: Sequence[str],
                      skeleton: Sequence[tuple[str, str]], pose2d: Mapping[str, Pose2DSeries],
                      pose3d: Pose3DSeries | None, source: str, model: str | None = None,
                      pose3d_name: str = "pose3d", neural_rate_hz: float | None = None,
                      session_start_time: datetime | None = None) -> Path:
    """One NWB file for a session: its cameras and calibration, videos, the pose given, rule
    firings, pulses, clips and events (the layout is in the module docstring, the time base in
    :mod:`rigstream.inference.nwb_session`'s).

    Args:
        session: the session folder (``pulses.csv`` and ``frames.csv`` needed; ``calibration.toml``,
            ``firings.csv``, ``events.csv``, ``clips/*/event.json``, ``neural_mapping.json``,
            ``rig.yaml``, ``recording.json`` used when present).
        out: the ``.nwb`` file to write (replaced if it exists; its folder is made).
        keypoints: the K keypoint names, in the order of the pose arrays' second axis.
        skeleton: edges between keypoints, as pairs of names.
        pose2d: camera name -> its 2D pose.
        pose3d: the 3D pose (mm, the calibration's world frame), or None.
        source: where the pose came from, for the descriptions (e.g. "rigstream's live pose").
        model: the pose model's name (the PoseEstimation ``scorer``).
        pose3d_name: the name of the MultiCameraPoseEstimation.
        neural_rate_hz: the neural recorder's sample rate, for a session aligned in samples
            (default: the rig's simulated recorder's rate, if it has one).
        session_start_time: the session's wall-clock start (default: estimated, see
            :func:`~rigstream.inference.nwb_session.wall_time`).

    Returns:
        ``out``.

    Raises:
        NwbExportError: pynwb/ndx-pose missing, inputs that do not fit together (a keypoint
            count, a shape, an unknown skeleton name), or session tables missing or malformed;
            raised before anything is written. A failure while writing leaves no file either.
    """
    require_nwb("writing an NWB file")
    names, edges = _check_inputs(keypoints, skeleton, pose2d, pose3d, pose3d_name)
    if neural_rate_hz is not None and not (math.isfinite(neural_rate_hz) and neural_rate_hz > 0):
        raise NwbExportError(f"neural_rate_hz: expected a positive sample rate, got {neural_rate_hz!r}")
    folder = Path(session).expanduser()
    out = Path(out).expanduser()
    data = read_session(folder, list(pose2d))
    clock = time_base(folder, data.pulses, data.rig, neural_rate_hz)
    nwbfile = _build(data, clock, out, names, edges, pose2d, pose3d, source, model, pose3d_name,
                     session_start_time)
    _write(nwbfile, out)
    logger.info("%s: written (%s)", out, clock.description)
    return out


def _build(data: Session, clock: TimeBase, out: Path, keypoints: list[str], edges: np.ndarray,
           pose2d: Mapping[str, Pose2DSeries], pose3d: Pose3DSeries | None, source: str,
           model: str | None, pose3d_name: str, start: datetime | None) -> Any:
    from pynwb import NWBFile

    start = start.astimezone() if start is not None else wall_time(data.folder)
    zero = float(clock.seconds(np.array([data.pulses.first_ns]))[0])
    what = [f"cameras {', '.join(data.cameras)}", f"{source} ({len(keypoints)} keypoints"
            + (", 2D per camera and 3D)" if pose3d is not None else ", 2D per camera)")]
    nwbfile = NWBFile(
        session_description=(f"rigstream session {data.folder.resolve().name}: {'; '.join(what)}; rule "
                             f"firings, pulses, clips and events. Times: {clock.description}."),
        identifier=str(uuid.uuid4()),
        session_start_time=start,
        timestamps_reference_time=start - timedelta(seconds=zero),
        session_id=data.folder.resolve().name,
        data_collection=clock.description,
        was_generated_by=[["rigstream", rigstream.__version__], ["pynwb", _version("pynwb")],
                          ["ndx-pose", _version("ndx-pose")]],
    )
    devices = _add_cameras(nwbfile, data)
    videos = _add_videos(nwbfile, data, clock, devices, out)
    _add_pose(nwbfile, data, clock, devices, videos, keypoints, edges, pose2d, pose3d, source, model,
              pose3d_name)
    _add_pulses(nwbfile, data, clock)
    _add_firings(nwbfile, data, clock)
    _add_clips(nwbfile, data, clock)
    _add_events(nwbfile, data, clock)
    return nwbfile


def _add_cameras(nwbfile: Any, data: Session) -> dict[str, Any]:
    from ndx_pose import CalibratedCamera as NwbCalibratedCamera
    from pynwb.device import Device

    serials = {c.name: c.serial for c in data.rig.cameras} if data.rig is not None else {}
    calibrated = {c.name: c for c in data.calibration.cameras} if data.calibration is not None else {}
    units = str((data.calibration.metadata if data.calibration else {}).get("units", "mm"))
    devices = {}
    for name in data.cameras:
        cam: CalibratedCamera | None = calibrated.get(name)
        serial = serials.get(name) or None
        if cam is None:
            device = Device(name=name, description="camera (no calibration for it in the session)",
                            serial_number=serial)
        else:
            device = NwbCalibratedCamera(
                name=name, serial_number=serial,
                description=(f"{cam.width}x{cam.height} px camera from the session's calibration.toml "
                             f"(aniposelib layout): OpenCV pinhole model, distortion "
                             f"k1, k2, p1, p2[, k3...]; rotation and translation map world to camera, "
                             f"translation in {units}"),
                intrinsic_matrix=cam.matrix.copy(), rotation_matrix=cam.rotation.copy(),
                translation_vector=cam.tvec.copy(), distortion_coefficients=cam.dist.copy())
        nwbfile.add_device(device)
        devices[name] = device
    return devices


def _frame_size(data: Session, camera: str) -> list[int] | None:
    if data.calibration is not None and camera in data.calibration.names:
        cam = data.calibration.camera(camera)
        return [cam.width, cam.height]
    if data.rig is not None and camera in [c.name for c in data.rig.cameras]:
        cam_config = data.rig.camera(camera)
        return [cam_config.width, cam_config.height]
    return None


def _add_videos(nwbfile: Any, data: Session, clock: TimeBase, devices: Mapping[str, Any],
                out: Path) -> dict[str, Any]:
    from pynwb.image import ImageSeries

    videos = {}
    for cam, video in data.videos.items():
        relative = Path(os.path.relpath(video.path.resolve(), out.resolve().parent)).as_posix()
        series = ImageSeries(
            name=f"{VIDEO_PREFIX}{cam}", format="external", external_file=[relative], starting_frame=[0],
            timestamps=clock.seconds(video.t_pi_ns), device=devices.get(cam),
            dimension=_frame_size(data, cam),
            description=(f"camera {cam}'s video ({video.t_pi_ns.size} frames), stored outside this file; "
                         f"each frame's timestamp is its trigger pulse. Times: {clock.description}"))
        nwbfile.add_acquisition(series)
        videos[cam] = series
    return videos


def _add_pose(nwbfile: Any, data: Session, clock: TimeBase, devices: Mapping[str, Any],
              videos: Mapping[str, Any], keypoints: list[str], edges: np.ndarray,
              pose2d: Mapping[str, Pose2DSeries], pose3d: Pose3DSeries | None, source: str,
              model: str | None, pose3d_name: str) -> None:
    from ndx_pose import MultiCameraPoseEstimation, PoseEstimation, PoseEstimationSeries, Skeleton, Skeletons

    behavior = nwbfile.create_processing_module(name=BEHAVIOR, description=(
        f"pose estimation: {source}"))
    skeleton = Skeleton(name=SKELETON, nodes=keypoints, edges=edges if len(edges) else None)
    behavior.add(Skeletons(skeletons=[skeleton]))
    software = {"source_software": "rigstream", "source_software_version": rigstream.__version__}
    per_camera = []
    for cam, series in pose2d.items():
        timestamps: Any = clock.seconds(series.t_pi_ns)
        items = []
        for k, name in enumerate(keypoints):
            item = PoseEstimationSeries(
                name=name, data=series.values[:, k, :2], confidence=series.values[:, k, 2],
                unit="pixels", timestamps=timestamps,
                reference_frame=(f"(0, 0) is the top-left corner of camera {cam}'s image, x to the right, "
                                 f"y down, in pixels"),
                confidence_definition="the pose model's likelihood for the keypoint, 0 to 1",
                description=f"{name} in camera {cam}; NaN where not found. Times: {clock.description}")
            items.append(item)
            timestamps = items[0]  # the other keypoints link the first one's timestamps
        per_camera.append(PoseEstimation(
            name=f"{POSE2D_PREFIX}{cam}", pose_estimation_series=items, skeleton=skeleton,
            device=devices[cam], source_video=videos.get(cam), scorer=model,
            description=f"2D pose in camera {cam}'s image from {source}, one row per posed trigger",
            **software))
    if pose3d is None:
        for item in per_camera:
            behavior.add(item)
        return
    world = (data.calibration.metadata.get("world") if data.calibration is not None else None)
    timestamps = clock.seconds(pose3d.t_pi_ns)
    items = []
    for k, name in enumerate(keypoints):
        items.append(PoseEstimationSeries(
            name=name, data=pose3d.xyz[:, k], unit="millimeters", timestamps=timestamps,
            confidence=pose3d.score[:, k] if pose3d.score is not None else None,
            confidence_definition=("the 2D score behind the point, 0 to 1" if pose3d.score is not None
                                   else None),
            reference_frame=("the world frame of the session's calibration.toml"
                             + (f" ({world})" if isinstance(world, str) and world else "")),
            description=f"{name} in 3D, mm; NaN where not triangulated. Times: {clock.description}"))
        timestamps = items[0]
    behavior.add(MultiCameraPoseEstimation(
        name=pose3d_name, pose_estimation_series=items, pose_estimations=per_camera, skeleton=skeleton,
        scorer=model, description=(f"3D pose triangulated from the cameras' 2D pose ({source}), one row "
                                   f"per triangulated trigger; the per-camera 2D pose is in its "
                                   f"{POSE2D_PREFIX}<camera> children"),
        **software))


def _columns(table: Any, columns: Sequence[tuple[str, str, np.ndarray]]) -> None:
    for name, description, values in columns:
        table.add_column(name=name, description=description, data=values)


def _add_pulses(nwbfile: Any, data: Session, clock: TimeBase) -> None:
    from pynwb.event import DurationVectorData, EventsTable, TimestampVectorData

    for line, (name, index_name, what) in _PULSE_LINES.items():
        if line not in data.pulses.lines:
            continue
        index, t = data.pulses.lines[line]
        start = clock.seconds(t)
        duration = clock.seconds(data.pulses.time(f"{line}-fall", index)) - start
        table = EventsTable(name=name, description=(
            f"{what}: rising edges (pulses.csv line {line!r}), duration to the falling edge ({line}-fall; "
            f"NaN when none was recorded). Times: {clock.description}"),
            source_description="the Raspberry Pi's pulse log (pulses.csv)",
            columns=[TimestampVectorData(name="timestamp", description="rising edge, s", data=start),
                     DurationVectorData(name="duration", description="to the falling edge, s",
                                        data=duration)])
        _columns(table, [(index_name, f"the pulse's index on the {line} line", index)])
        nwbfile.add_events_table(table)


def _add_firings(nwbfile: Any, data: Session, clock: TimeBase) -> None:
    from pynwb.epoch import TimeIntervals

    df = data.firings
    if df is None or not len(df):
        return
    path = data.folder / "firings.csv"
    trigger = column_numbers(df, "trigger_index", path, integer=True)
    t_pulse = column_numbers(df, "t_pi_ns", path, integer=True, blank=-1)
    t_pulse = np.where(t_pulse < 0, data.pulses.time("camera", trigger), t_pulse)

    def optional(column: str, integer: bool) -> np.ndarray:
        if column not in df.columns:
            return np.full(len(df), -1 if integer else np.nan, dtype=np.int64 if integer else np.float64)
        return column_numbers(df, column, path, integer=integer, blank=-1 if integer else np.nan)

    ttl_index = optional("ttl_index", True)
    t_rise = optional("t_ttl_ns", True)
    t_fall = data.pulses.time("ttl-fall", ttl_index)
    t_fall = np.where((t_fall < 0) & (ttl_index >= 0), optional("t_ttl_fall_due_ns", True), t_fall)
    start = clock.seconds(t_pulse)
    stop = np.where(np.isnan(clock.seconds(t_fall)), start, clock.seconds(t_fall))
    keep = ~np.isnan(start)
    if not keep.all():
        logger.warning("%s: %d firings without a trigger pulse time are left out", path, int((~keep).sum()))
    if not keep.any():
        return
    table = TimeIntervals(name="rule_firings", description=(
        f"closed-loop rule firings (firings.csv): from the trigger pulse of the frame set the rule "
        f"fired on (the rule's decision is timed on the host's clock, not mapped here) to the falling "
        f"edge of its TTL pulse (pulses.csv ttl-fall, else the fall it was due at); stop = start for a "
        f"firing without a TTL. Times: {clock.description}"))
    text = {c: (df[c].to_numpy(dtype=str) if c in df.columns else np.full(len(df), "")) for c in
            ("rule", "actions", "ttl_error")}
    latency = optional("total_ms", False)
    ttl_time = clock.seconds(t_rise)
    columns = [("rule", "the rule's name", text["rule"]),
               ("trigger_index", "the trigger index of the frame set it fired on", trigger),
               ("actions", "its actions, joined by '+'", text["actions"]),
               ("ttl_index", "its TTL pulse's index in ttl_pulses (-1: none)", ttl_index),
               ("ttl_time", "its TTL's rising edge, s (NaN: none)", ttl_time),
               ("latency_ms", "trigger pulse -> TTL edge (or decision), ms", latency),
               ("ttl_error", "why its TTL failed, if it did", text["ttl_error"])]
    for name, description, _ in columns:
        table.add_column(name=name, description=description)
    for i in np.nonzero(keep)[0]:
        table.add_interval(start_time=float(start[i]), stop_time=float(stop[i]),
                           **{name: values[i].item() if isinstance(values[i], np.generic) else values[i]
                              for name, _, values in columns})
    nwbfile.add_time_intervals(table)


def _add_clips(nwbfile: Any, data: Session, clock: TimeBase) -> None:
    from pynwb.epoch import TimeIntervals

    if not data.clips:
        return
    table = TimeIntervals(name="clips", description=(
        f"saved clips (clips/*/event.json): from the trigger pulse of their first frame (start_index) to "
        f"their last's (end_index). Times: {clock.description}"))
    for name, description in (("clip", "the clip's folder under clips/"),
                              ("start_index", "trigger index of its first frame"),
                              ("end_index", "trigger index of its last frame"),
                              ("event", "the event that asked for it"),
                              ("trigger_index", "the trigger index of that event (-1: none)")):
        table.add_column(name=name, description=description)
    for clip, doc in data.clips:
        t = clock.seconds(data.pulses.time("camera", np.array([doc["start_index"], doc["end_index"]])))
        if np.isnan(t).any():
            logger.warning("clips/%s: no trigger pulse for its start or end index; left out", clip)
            continue
        table.add_interval(start_time=float(t[0]), stop_time=float(t[1]), clip=clip, **doc)
    if len(table):
        nwbfile.add_time_intervals(table)


def _add_events(nwbfile: Any, data: Session, clock: TimeBase) -> None:
    from pynwb.event import EventsTable, TimestampVectorData

    df = data.events
    if df is None or not len(df):
        return
    path = data.folder / "events.csv"
    trigger = column_numbers(df, "trigger_index", path, integer=True, blank=-1)
    t = column_numbers(df, "t_pi_ns", path, integer=True, blank=-1)
    t = np.where(t < 0, data.pulses.time("camera", trigger), t)  # sent by trigger index: that pulse's time
    seconds = clock.seconds(t)
    keep = ~np.isnan(seconds)
    if not keep.all():
        logger.warning("%s: %d events without a time are left out", path, int((~keep).sum()))
    if not keep.any():
        return
    text = {c: (df[c].to_numpy(dtype=str)[keep] if c in df.columns else np.full(int(keep.sum()), ""))
            for c in ("name", "source", "clip")}
    table = EventsTable(name="events", description=(
        f"the session's events (events.csv): rule events, keys and other sources; an event sent by "
        f"trigger index has that trigger pulse's time. Times: {clock.description}"),
        source_description="rigstream's event log (events.csv)",
        columns=[TimestampVectorData(name="timestamp", description="the event's time, s",
                                     data=seconds[keep])])
    _columns(table, [("event_name", "the event's name", text["name"]),
                     ("source", "what sent it", text["source"]),
                     ("trigger_index", "the trigger index it refers to (-1: none)", trigger[keep]),
                     ("clip", "the clip it asked for (clips/<clip>), if any", text["clip"])])
    nwbfile.add_events_table(table)


def _write(nwbfile: Any, out: Path) -> None:
    """Write under a temporary name in ``out``'s folder, then rename over ``out``."""
    from pynwb import NWBHDF5IO

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.writing.nwb")  # pynwb wants the .nwb suffix
    try:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwbfile)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def export_session_nwb(session: str | Path, out: str | Path | None = None, *,
                       neural_rate_hz: float | None = None) -> Path:
    """A session's live outputs as one NWB file: ``pose2d.csv``, and ``pose3d_filtered.csv`` if
    present, else ``pose3d.csv``, through :func:`write_session_nwb` (with the model's skeleton).

    Args:
        session: the session folder.
        out: the file to write (default ``<session>/<session folder name>.nwb``).
        neural_rate_hz: the neural recorder's sample rate (see :func:`write_session_nwb`).

    Returns:
        The path written.

    Raises:
        NwbExportError: pynwb/ndx-pose missing, no pose2d.csv, malformed tables; nothing written.
    """
    folder = Path(session).expanduser()
    if not folder.is_dir():
        raise NwbExportError(f"{folder}: not a folder (expected a rigstream session folder)")
    if not (folder / POSE2D_FILE).is_file():
        raise NwbExportError(f"{folder / POSE2D_FILE}: not found (a session recorded with live pose has it)")
    require_nwb("rigstream NWB export")
    keypoints, pose2d = read_pose2d_csv(folder / POSE2D_FILE)
    pose3d, source = None, f"rigstream's live pose ({POSE2D_FILE}"
    for name in POSE3D_FILES:
        if (folder / name).is_file():
            pose3d = read_pose3d_csv(folder / name, keypoints, folder)
            source += f"; 3D: {name}"
            break
    model = session_model_name(folder)
    target = Path(out).expanduser() if out is not None else folder / f"{folder.resolve().name}.nwb"
    return write_session_nwb(folder, target, keypoints=keypoints,
                             skeleton=session_skeleton(folder, keypoints, model), pose2d=pose2d,
                             pose3d=pose3d, source=source + ")", model=model, neural_rate_hz=neural_rate_hz)


# ---------------------------------------------------------------------------------------------
# Reading back


def read_nwb_pose(path: str | Path) -> dict[str, Any]:
    """The pose in an NWB file written by :func:`write_session_nwb` (or laid out the same way).

    Returns a dict:
        ``keypoints``: list of K names; ``skeleton``: list of (name, name) edges;
        ``clock``: ``"neural"`` or ``"pi"`` (``"unknown"`` for a file that does not say);
        ``time_base``: the sentence saying what the times are;
        ``pose2d``: camera -> {``timestamps_s``: (N,) float64, ``values``: (N, K, 3) float64
        x px, y px, likelihood};
        ``pose3d``: {``timestamps_s``: (N,), ``xyz``: (N, K, 3) mm, ``score``: (N, K) or None}, or None;
        ``cameras``: camera -> {``matrix`` (3, 3), ``dist`` (D,), ``rotation`` (3, 3),
        ``translation`` (3,)} for the calibrated ones;
        ``videos``: camera -> {``external_file``: str, ``timestamps_s``: (F,)}.
    """
    require_nwb("reading an NWB file")
    from ndx_pose import CalibratedCamera as NwbCalibratedCamera
    from ndx_pose import MultiCameraPoseEstimation, PoseEstimation
    from pynwb import NWBHDF5IO
    from pynwb.image import ImageSeries

    path = Path(path).expanduser()
    if not path.is_file():
        raise NwbExportError(f"{path}: not found")
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        text = nwb.data_collection or ""
        clock = ("neural" if text.startswith(NEURAL_CLOCK) else "pi" if text.startswith(PI_CLOCK)
                 else "unknown")
        result: dict[str, Any] = {"keypoints": [], "skeleton": [], "clock": clock, "time_base": text,
                                  "pose2d": {}, "pose3d": None, "cameras": {}, "videos": {}}
        for name, device in nwb.devices.items():
            if isinstance(device, NwbCalibratedCamera):
                result["cameras"][name] = {
                    "matrix": np.asarray(device.intrinsic_matrix[:], dtype=np.float64),
                    "dist": np.asarray(device.distortion_coefficients[:], dtype=np.float64),
                    "rotation": np.asarray(device.rotation_matrix[:], dtype=np.float64),
                    "translation": np.asarray(device.translation_vector[:], dtype=np.float64)}
        for name, item in nwb.acquisition.items():
            if isinstance(item, ImageSeries) and item.external_file is not None:
                camera = item.device.name if item.device is not None else name.removeprefix(VIDEO_PREFIX)
                result["videos"][camera] = {"external_file": str(item.external_file[0]),
                                            "timestamps_s": np.asarray(item.timestamps[:], dtype=np.float64)}
        if BEHAVIOR not in nwb.processing:
            return result
        items = list(nwb.processing[BEHAVIOR].data_interfaces.values())
        for item in items:
            if getattr(item, "skeleton", None) is not None and not result["keypoints"]:
                nodes = [str(n) for n in item.skeleton.nodes[:]]
                edges = item.skeleton.edges[:] if item.skeleton.edges is not None else []
                result["keypoints"] = nodes
                result["skeleton"] = [(nodes[int(a)], nodes[int(b)]) for a, b in edges]
        per_camera = [item for item in items if isinstance(item, PoseEstimation)]
        for item in items:
            if isinstance(item, MultiCameraPoseEstimation):
                per_camera.extend(item.pose_estimations.values())
                if item.pose_estimation_series:
                    t, xyz, score = _series_arrays(item.pose_estimation_series, result["keypoints"])
                    result["pose3d"] = {"timestamps_s": t, "xyz": xyz, "score": score}
        for item in per_camera:
            camera = item.device.name if item.device is not None else item.name.removeprefix(POSE2D_PREFIX)
            t, xy, score = _series_arrays(item.pose_estimation_series, result["keypoints"])
            if score is None:
                score = np.full(xy.shape[:2], np.nan)
            result["pose2d"][camera] = {"timestamps_s": t, "values": np.concatenate([xy, score[..., None]],
                                                                                    axis=2)}
    return result


def _series_arrays(series: Mapping[str, Any], keypoints: Sequence[str],
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """PoseEstimationSeries by name -> (timestamps (N,), data (N, K, D), confidence (N, K) or
    None), keypoints in the order given (default: the series' order)."""
    keys = list(keypoints) or list(series)
    first = series[keys[0]]
    data = np.stack([np.asarray(series[k].data[:], dtype=np.float64) for k in keys], axis=1)
    score = None
    if first.confidence is not None:
        score = np.stack([np.asarray(series[k].confidence[:], dtype=np.float64) for k in keys], axis=1)
    return np.asarray(first.timestamps[:], dtype=np.float64), data, score


__all__ = [
    "NwbExportError",
    "Pose2DSeries",
    "Pose3DSeries",
    "export_session_nwb",
    "read_nwb_pose",
    "require_nwb",
    "write_session_nwb",
]
