"""The ``rigstream`` command: the demo, each component on its own, and tools.

This module is the parser and ``main``; the commands are in :mod:`rigstream.app.commands`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from rigstream.app import analyze_cmd, session_report
from rigstream.app.commands import (
    cmd_align,
    cmd_assemble,
    cmd_bench,
    cmd_bridge,
    cmd_build_engine,
    cmd_calibrate,
    cmd_camera,
    cmd_cameras,
    cmd_check,
    cmd_demo,
    cmd_doctor,
    cmd_evaluate,
    cmd_event,
    cmd_export,
    cmd_keys,
    cmd_monitor,
    cmd_pose,
    cmd_record,
    cmd_ringbuffer,
    cmd_run,
    cmd_train,
    cmd_triangulate,
    cmd_trigger,
    cmd_verify,
)
from rigstream.config import InputError


def _add_component_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="rig file (default: the embedded simulated rig)")
    p.add_argument("--run", default="/tmp/rigstream",
                   help="runtime folder for ipc sockets ({run} in addresses)")
    p.add_argument("--status", help="supervisor's status address (set by the session)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rigstream", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the simulated rig end to end, every component a process")
    p.add_argument("--config", help="rig file (default: the embedded simulated rig)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--cameras", type=int, help="number of simulated cameras (default: rig's)")
    p.add_argument("--fps", type=float, help="trigger rate in Hz (default: rig's)")
    p.add_argument("--drop-rate", type=float, help="share of frames each camera loses")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--codec", choices=["ffv1", "h264", "h264_lossless", "raw"])
    p.add_argument("--out", help="session folder (default: sessions/demo-<time>)")
    p.add_argument("--no-pose", action="store_true", help="run without the live pose engine")
    _add_monitor_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run a rig: every component a process, supervised, until Ctrl-C")
    p.add_argument("--config", help="rig file (default: the embedded simulated rig)")
    p.add_argument("--seconds", type=float, help="stop after this long (default: run until Ctrl-C)")
    p.add_argument("--out", help="session folder (default: <recording.folder>/session-<time>)")
    _add_monitor_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("trigger", help="run the trigger daemon (on the Pi, or simulated)")
    _add_component_args(p)
    p.add_argument("--start", action="store_true", help="start pulsing at once")
    p.add_argument("--realtime-priority", type=int, choices=range(1, 100), metavar="1..99",
                   help="run the pulse thread SCHED_FIFO at this priority (root or CAP_SYS_NICE)")
    p.set_defaults(func=cmd_trigger)

    p = sub.add_parser("keys", help="make a CURVE key pair for the trigger's control socket")
    p.add_argument("--out", required=True, help="folder to write NAME.key and NAME.key_secret to")
    p.add_argument("--name", default="rigstream", help="file name of the pair (default: rigstream)")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("camera", help="run one camera node")
    _add_component_args(p)
    p.add_argument("--name", required=True)
    p.add_argument("--expect-subscribers", type=int, default=0,
                   help="wait for this many consumers before taking frames")
    p.set_defaults(func=cmd_camera)

    p = sub.add_parser("record", help="record every frame to videos + frames.csv")
    _add_component_args(p)
    p.add_argument("--out")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("bridge", help="fill this host's store of a camera on another host "
                       "(one per camera)")
    _add_component_args(p)
    p.add_argument("--camera", required=True, help="the camera's name in the rig")
    p.add_argument("--source", help="the camera node's tcp address (default: the camera's address "
                   "in the rig)")
    p.set_defaults(func=cmd_bridge)

    p = sub.add_parser("assemble", help="match frames by trigger index into frame sets")
    _add_component_args(p)
    p.set_defaults(func=cmd_assemble)

    p = sub.add_parser("pose", help="run the live pose engine on frame sets (latest-wins)")
    _add_component_args(p)
    p.add_argument("--out", help="folder for pose2d.csv and pose_timing.csv (default: none)")
    p.set_defaults(func=cmd_pose)

    p = sub.add_parser("ringbuffer", help="keep the last seconds of every camera; save clips")
    _add_component_args(p)
    p.add_argument("--out")
    p.set_defaults(func=cmd_ringbuffer)

    p = sub.add_parser("monitor", help="serve the live monitor page (frames, keypoints, 3D, health)")
    _add_component_args(p)
    p.add_argument("--port", type=int, default=8800, help="TCP port (default 8800; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default loopback; any other needs a token)")
    p.add_argument("--token", default=None,
                   help="access token (default: $RIGSTREAM_MONITOR_TOKEN; made and printed when "
                        "the host is not loopback and none is given)")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("event", help="send an event to the ring buffer (saves a clip)")
    _add_component_args(p)
    p.add_argument("--name", default="manual")
    p.add_argument("--index", type=int, help="trigger index (default: the latest)")
    p.add_argument("--pre", type=float, metavar="S",
                   help="with --post: a clip of its own of exactly [n - S, n + post] (default: the "
                        "ring buffer's window, merged with overlapping clips)")
    p.add_argument("--post", type=float, metavar="S")
    p.set_defaults(func=cmd_event)

    p = sub.add_parser("check", help="validate a rig file")
    p.add_argument("--config")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("verify", help="check a session folder: rows, videos, clips")
    p.add_argument("session")
    p.add_argument("--truth", action="store_true",
                   help="simulated rig: compare every pixel with what the cameras rendered")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("doctor", help="check a rig step by step: cameras, settings, trigger and "
                                      "strobe wiring, disk speed")
    p.add_argument("--config", help="rig file (default: the embedded simulated rig)")
    p.add_argument("--pulses", type=int,
                   help="pulses of the wiring test (default: 2 s at the rig's rate, at least 100)")
    p.add_argument("--disk-mb", type=float,
                   help="size of the disk test file in MB (default 256; 16 for a simulated rig)")
    p.add_argument("--keep", metavar="DIR", help="keep the wiring test's session folder here")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("cameras", help="list the connected FLIR cameras (serial, model, firmware, "
                                       "interface)")
    p.add_argument("--sim", action="store_true", help="list the embedded simulated rig's cameras instead")
    p.set_defaults(func=cmd_cameras)

    p = sub.add_parser("train", help="train a pose model (DeepLabCut project or the simulated rig)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dlc-project", help="DeepLabCut project folder (config.yaml, labeled-data/)")
    src.add_argument("--sim", nargs="?", const="", metavar="RIG_FILE",
                     help="frames rendered by the simulated rig (default: the embedded one)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--iterations", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--crop", type=int, help="training crop side, model-input pixels")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share (DeepLabCut)")
    p.add_argument("--input-scale", type=float, default=0.5, help="sim: model input / camera size")
    p.add_argument("--input-width", type=int)
    p.add_argument("--input-height", type=int)
    p.add_argument("--eval-frames", type=int, default=200, help="sim: fresh frames for the error table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="pixel error of a model against a DeepLabCut project's labels")
    p.add_argument("--model", required=True)
    p.add_argument("--dlc-project", required=True)
    p.add_argument("--split", choices=["all", "test", "train"], default="all")
    p.add_argument("--engine", choices=["onnxruntime", "torch", "tensorrt"], default="onnxruntime")
    p.add_argument("--out", help="JSON report (default: MODEL/evaluation-SPLIT.json)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("build-engine", help="build (or load from the cache) and time a TensorRT engine")
    p.add_argument("--model", required=True)
    p.add_argument("--views", type=int, default=2, help="batch size = cameras per frame set")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--cache", help="engine cache folder (default ~/.cache/rigstream/engines)")
    p.add_argument("--fp32", action="store_true", help="build without FP16")
    p.set_defaults(func=cmd_build_engine)

    p = sub.add_parser("calibrate", help="calibrate cameras from views of a ChArUco board or checkerboard")
    p.add_argument("sources", nargs="+", metavar="CAM=SOURCE",
                   help="camera name and its folder of board images (paired across cameras by the "
                        "trailing number of the file name) or board video")
    p.add_argument("--board", required=True,
                   help="board file (anipose board.toml, or config.toml with [calibration]) or inline: "
                        "checkerboard:COLSxROWS:SQUARE (inner corners, e.g. checkerboard:9x6:30) or "
                        "charuco:XxY:SQUARE:MARKER[:4x4_1000] (squares)")
    p.add_argument("--out", required=True, help="calibration file to write (aniposelib TOML)")
    p.add_argument("--report", default=None, help="report JSON (default: OUT with .report.json)")
    p.add_argument("--model", default="auto",
                   help="lens model (auto: k1k2 with 8+ views per camera, else k1)")
    p.add_argument("--every", type=int, default=1, help="videos: use every k-th frame")
    p.add_argument("--workers", type=int, default=None, help="detection threads (default: CPU count)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("triangulate", help="2D keypoint files (one per camera) -> anipose 3D CSV")
    p.add_argument("files", nargs="+", metavar="CAM=FILE",
                   help="camera name and its 2D keypoints: DeepLabCut .h5/.csv or SLEAP analysis .h5")
    p.add_argument("--calibration", required=True, help="aniposelib calibration TOML")
    p.add_argument("--out", required=True, help="3D CSV to write (anipose layout)")
    p.add_argument("--min-score", type=float, default=0.3, help="views less confident are not used")
    p.add_argument("--max-error-px", type=float, default=15.0,
                   help="re-solve without the worst view above this mean reprojection error")
    p.add_argument("--unweighted", action="store_true", help="every used view counts the same")
    p.add_argument("--track", default=None, help="multi-animal files: the track or individual to use")
    p.add_argument("--report", default=None, help="also write the report as JSON")
    p.set_defaults(func=cmd_triangulate)

    p = sub.add_parser("export", help="a session's live pose as DeepLabCut prediction files "
                                      "(.h5 + .csv per camera video) and one NWB file")
    p.add_argument("session", help="session folder (pose2d.csv, frames.csv, video/)")
    p.add_argument("--out", default=None, help="folder for the files (default: SESSION/video, next to "
                                               "the videos)")
    p.add_argument("--scorer", default=None,
                   help="DeepLabCut scorer, also the file name's tail (default: DLC_rigstream_<model>)")
    p.add_argument("--no-nwb", action="store_true", help="no NWB file (default: SESSION/<session>.nwb, "
                                                         "or in --out)")
    analyze_cmd.add_neural_rate(p)
    p.set_defaults(func=cmd_export)

    analyze_cmd.add_parser(sub, analyze_cmd.cmd_analyze)
    session_report.add_parser(sub)

    p = sub.add_parser("align", help="match two sync-pulse trains and map one clock onto the other")
    p.add_argument("--a", help="edge times on clock A (the Pi's): CSV/TXT/NPY, FILE.ppd[:DIGITAL], "
                               "or an Open Ephys recording REC:LINE[:STREAM]")
    p.add_argument("--b", required=True, help="edge times on clock B (the recorder's), same forms")
    p.add_argument("--session", help="align a session folder's sync line (instead of --a) and add "
                                     "t_neural columns to its tables")
    p.add_argument("--out", help="mapping.json to write (converts times both ways)")
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("bench", help="benchmarks that print JSON")
    p.add_argument("what", choices=["throughput", "inference", "triangulate", "align", "closed-loop", "soak",
                                          "analyze"])
    p.add_argument("--seconds", type=float, default=None,
                   help="throughput: per trial (default 30); align: simulated session (default 3600); "
                        "closed-loop: per configuration (default 30); soak: the session (default 1800); "
                        "analyze: the demo session (default 20)")
    p.add_argument("--rates", default="", help="comma-separated trigger rates to try")
    p.add_argument("--width", type=int, default=1440)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--codec", default="raw", choices=["ffv1", "h264", "h264_lossless", "raw"])
    p.add_argument("--out", default=None)
    p.add_argument("--model", default="sim", help="inference: model folder (default: the shipped sim model)")
    p.add_argument("--engine", default="onnxruntime,torch",
                   help="inference: comma-separated engines, timed side by side")
    p.add_argument("--views", type=int, default=2, help="inference: batch = views of one frame set")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--threads", type=int, default=2, help="inference: CPU threads per engine")
    p.add_argument("--cameras", default=None,
                   help="comma-separated camera counts: throughput (default 2), triangulate (default 2,4,6), "
                        "analyze (default 2,6)")
    p.add_argument("--no-monitor", action="store_true", help="throughput: without the monitor")
    p.add_argument("--no-video", action="store_true",
                   help="throughput: whole-session video off (frames.csv still written)")
    p.add_argument("--pose", action="store_true", help="throughput: with the live pose engine")
    p.add_argument("--keep", action="store_true",
                   help="throughput, soak: keep the session folders (raw video: 0.7 GB/s at 2 x 226 Hz)")
    p.add_argument("--keypoints", type=int, default=20, help="triangulate: keypoints per frame set")
    p.add_argument("--runs", type=int, default=3, help="analyze: analyses of each session (median)")
    p.add_argument("--batch", type=int, default=8, help="analyze: frame sets per engine call")
    p.set_defaults(func=cmd_bench)
    return parser


def _add_monitor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--monitor", type=int, metavar="PORT",
                   help="serve the live monitor page on this port (0: any free port)")
    p.add_argument("--monitor-host", default="127.0.0.1",
                   help="address the monitor listens on (default loopback; any other needs a token, "
                        "made and printed if RIGSTREAM_MONITOR_TOKEN is not set)")


def _end_with_supervisor() -> None:
    """On Linux, have the kernel send this component SIGTERM (a clean stop: files closed) when its
    supervisor dies, even by SIGKILL, so no component of a killed session keeps running."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the supervisor died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


HOST_MODULES = ("scipy", "cv2", "av", "onnxruntime", "numba", "h5py", "pandas", "tables", "aiohttp",
                "matplotlib")
"""The imports of the ``host`` extra (pyproject.toml)."""


LIGHT_COMMANDS = frozenset({"trigger", "keys"})
"""What a light install (``rigstream[pi]`` on a Raspberry Pi) runs; every other command checks for
the host's libraries before it starts."""


def _missing_host_modules() -> list[str]:
    from importlib.util import find_spec

    return [m for m in HOST_MODULES if find_spec(m) is None]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if getattr(args, "status", None):  # a component started by a session's supervisor
        _end_with_supervisor()
        # A terminal's Ctrl-C is SIGINT to the whole foreground process group: the supervisor
        # handles it for every component, in order (SignalStop leaves an ignored SIGINT alone).
        # Not a process session of its own instead: with the kernel's autogroups each session
        # gets an equal CPU share, whatever its threads (the pose engine's inference pool among them).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.command not in LIGHT_COMMANDS and (missing := _missing_host_modules()):
        print(f"rigstream {args.command}: needs the host's libraries, and {', '.join(missing)} "
              f"{'is' if len(missing) == 1 else 'are'} not installed: pip install 'rigstream[host]' "
              "(a Raspberry Pi that runs only the trigger needs 'rigstream[pi]')", file=sys.stderr)
        return 2
    if args.command in ("demo", "run"):
        logging.getLogger().setLevel(logging.WARNING if not args.verbose else logging.DEBUG)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"rigstream: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
