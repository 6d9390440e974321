"""The ``rigstream`` command: the demo, each component on its own, and tools."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from rigstream.config import ConfigError, RigConfig, load_rig

logger = logging.getLogger("rigstream")


def _rig(args: argparse.Namespace) -> RigConfig:
    return load_rig(args.config)


def _add_component_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="rig file (default: the embedded simulated rig)")
    p.add_argument("--run", default="/tmp/rigstream",
                   help="runtime folder for ipc sockets ({run} in addresses)")
    p.add_argument("--status", help="supervisor's status address (set by the session)")


def cmd_demo(args: argparse.Namespace) -> int:
    from rigstream.session import Session, SessionPlan, demo_rig

    rig = demo_rig(_rig(args), cameras=args.cameras, fps=args.fps, drop_rate=args.drop_rate,
                   width=args.width, height=args.height, codec=args.codec)
    pulses = round(args.seconds * rig.trigger.rate_hz)
    out = Path(args.out or Path(rig.recording.folder) / time.strftime("demo-%Y%m%d-%H%M%S"))
    post = rig.frames_per(rig.ring_buffer.post_s)
    pre = rig.frames_per(rig.ring_buffer.pre_s)
    # A clip with its full history, then two events close enough to merge into one clip.
    first = max(pre, pulses // 4)
    second = first + pre + post + 2
    events = [n for n in (first, second, second + max(1, post // 2)) if n + post < pulses]
    events = events or [max(0, pulses - post - 1)]
    print(f"rigstream demo: {len(rig.cameras)} simulated cameras at {rig.trigger.rate_hz:g} Hz "
          f"({rig.cameras[0].width}x{rig.cameras[0].height} {rig.cameras[0].pixel_format}), "
          f"{pulses} pulses, clips of [n-{pre}, n+{post}] -> {out}", file=sys.stderr)
    summary = Session(SessionPlan(rig, out, pulses, events),
                      progress=lambda line: print(line, file=sys.stderr, flush=True)).run()
    _print_summary(summary)
    return 0 if _summary_ok(summary) else 1


def _summary_ok(s: dict[str, Any]) -> bool:
    return (s["framesets_mixed"] == 0 and all(
        s["frames"].get(c, 0) + s["frames_dropped"].get(c, 0) == s["pulses_sent"]
        for c in s["frames"]))


def _print_summary(s: dict[str, Any]) -> None:
    lines = [
        "",
        f"session     {s['out']}",
        f"duration    {s['duration_s']:.2f} s at {s['rate_hz']:g} Hz; pulses sent "
        f"{s['pulses_sent']} (sync line: {s['sync_pulses_sent']})",
    ]
    for cam, n in s["frames"].items():
        dropped = s["frames_dropped"].get(cam, 0)
        check = "ok" if n + dropped == s["pulses_sent"] else "MISMATCH"
        lines.append(f"camera {cam:5s} {n} frames + {dropped} dropped = {n + dropped} ({check}); "
                     f"flagged {s['frames_flagged'].get(cam, 0)}")
    lines.append(f"frame sets  {s['framesets_complete']} complete, "
                 f"{s['framesets_incomplete']} incomplete, {s['framesets_mixed']} mixed")
    lines.append(f"clips       {len(s['clips'])}: {', '.join(s['clips']) or '-'}")
    gaps = {k: v for k, v in s["transport_seq_gaps"].items() if v}
    if gaps:
        lines.append(f"transport   messages lost: {gaps}")
    lines.append(f"summary     {Path(s['out']) / 'summary.json'}")
    print("\n".join(lines))


def cmd_trigger(args: argparse.Namespace) -> int:
    from rigstream.firmware.trigger import run_trigger

    run_trigger(_rig(args), args.run, autostart=args.start)
    return 0


def cmd_camera(args: argparse.Namespace) -> int:
    from rigstream.acquisition.camera_node import run_camera

    summary = run_camera(_rig(args), args.name, args.run, args.status, args.expect_subscribers)
    logger.info("camera %s done: %s", args.name, summary)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from rigstream.acquisition.recorder import run_recorder

    rig = _rig(args)
    out = args.out or str(Path(rig.recording.folder) / time.strftime("session-%Y%m%d-%H%M%S"))
    run_recorder(rig, args.run, out, args.status)
    return 0


def cmd_assemble(args: argparse.Namespace) -> int:
    from rigstream.sync.assembler import run_assembler

    run_assembler(_rig(args), args.run, args.status)
    return 0


def cmd_ringbuffer(args: argparse.Namespace) -> int:
    from rigstream.acquisition.ringbuffer import run_ringbuffer

    rig = _rig(args)
    out = args.out or str(Path(rig.recording.folder) / time.strftime("clips-%Y%m%d-%H%M%S"))
    run_ringbuffer(rig, args.run, out, args.status)
    return 0


def cmd_event(args: argparse.Namespace) -> int:
    import zmq

    from rigstream.acquisition.ringbuffer import send_event
    from rigstream.protocol import Event

    rig = _rig(args)
    event = Event(name=args.name, source="cli", trigger_index=args.index,
                  t_host_ns=time.monotonic_ns())
    send_event(zmq.Context.instance(), rig.address("events", args.run), event)
    where = args.index if args.index is not None else "latest"
    print(f"event {args.name!r} sent (trigger index: {where})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    rig = _rig(args)
    cams = ", ".join(f"{c.name} ({c.role}, {c.backend}, {c.width}x{c.height})" for c in rig.cameras)
    print(f"{args.config or 'embedded sim.yaml'}: rig {rig.name!r} ok: {cams}; trigger "
          f"{rig.trigger.rate_hz:g} Hz ({rig.trigger.backend})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from rigstream.verify import verify_session

    report = verify_session(args.session, truth=args.truth)
    print(json.dumps(report, indent=2))
    return 0 if not report["problems"] else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from rigstream.bench import run_bench

    result = run_bench(args.what, args)
    print(json.dumps(result, indent=2))
    return 0


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
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("trigger", help="run the trigger daemon (on the Pi, or simulated)")
    _add_component_args(p)
    p.add_argument("--start", action="store_true", help="start pulsing at once")
    p.set_defaults(func=cmd_trigger)

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

    p = sub.add_parser("assemble", help="match frames by trigger index into frame sets")
    _add_component_args(p)
    p.set_defaults(func=cmd_assemble)

    p = sub.add_parser("ringbuffer", help="keep the last seconds of every camera; save clips")
    _add_component_args(p)
    p.add_argument("--out")
    p.set_defaults(func=cmd_ringbuffer)

    p = sub.add_parser("event", help="send an event to the ring buffer (saves a clip)")
    _add_component_args(p)
    p.add_argument("--name", default="manual")
    p.add_argument("--index", type=int, help="trigger index (default: the latest)")
    p.set_defaults(func=cmd_event)

    p = sub.add_parser("check", help="validate a rig file")
    p.add_argument("--config")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("verify", help="check a session folder: rows, videos, clips")
    p.add_argument("session")
    p.add_argument("--truth", action="store_true",
                   help="simulated rig: compare every pixel with what the cameras rendered")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("bench", help="benchmarks that print JSON")
    p.add_argument("what", choices=["throughput"])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rates", default="", help="comma-separated trigger rates to try")
    p.add_argument("--width", type=int, default=1440)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--codec", default="raw", choices=["ffv1", "h264", "h264_lossless", "raw"])
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "demo":
        logging.getLogger().setLevel(logging.WARNING if not args.verbose else logging.DEBUG)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"rigstream: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
