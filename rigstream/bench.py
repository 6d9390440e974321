"""Benchmarks that print numbers (never timed unit tests).

``rigstream bench throughput``: the highest trigger rate at which the simulated rig (2 cameras,
every component its own process) records ``--seconds`` without a drop, beside the raw ZeroMQ
throughput for the same frame size measured in the same run.

``rigstream bench closed-loop``: the simulated rig with its shipped rule plus one that fires on
every fast forepaw step (a few times a second), as shipped (640x480, lossless h264) and lean
(320x240, raw video) in one run: pulse -> TTL edge p50/p99/max, each step of the chain, and the
share spent in inference.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from rigstream.config import load_rig

logger = logging.getLogger(__name__)


def _publisher(address: str, shape: tuple[int, int], seconds: float, ready: Any) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 64)
    sock.bind(address)
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    header = b"h" * 120  # about the size of a FrameHeader
    ready.wait()
    time.sleep(0.2)  # let the subscription land
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock.send_multipart([header, pixels.data], copy=False)
    sock.send_multipart([b"end", b""])
    sock.close(linger=5000)
    ctx.term()


def zmq_throughput(width: int, height: int, seconds: float = 3.0) -> dict[str, Any]:
    """PUB in one process -> SUB in this one over ipc, [header, pixels] zero-copy, as the
    camera nodes send. Counts what the subscriber receives."""
    run = tempfile.mkdtemp(prefix="rigstream-bench-")
    address = f"ipc://{run}/bench"
    mpctx = mp.get_context("spawn")
    ready = mpctx.Event()
    proc = mpctx.Process(target=_publisher, args=(address, (height, width), seconds, ready))
    proc.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 64)
    sock.connect(address)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    ready.set()
    frames = 0
    t_first = t_last = 0.0
    while True:
        if not sock.poll(10_000):
            break
        parts = sock.recv_multipart(copy=False)
        if parts[0].bytes == b"end":
            break
        t_last = time.perf_counter()
        if frames == 0:
            t_first = t_last
        frames += 1
    proc.join(10)
    sock.close()
    ctx.term()
    shutil.rmtree(run, ignore_errors=True)
    elapsed = max(t_last - t_first, 1e-9)
    fps = (frames - 1) / elapsed if frames > 1 else 0.0
    return {"frame_bytes": width * height, "frames": frames, "frames_per_s": round(fps, 1),
            "gbytes_per_s": round(fps * width * height / 1e9, 3)}


def demo_trial(rate_hz: float, seconds: float, width: int, height: int, codec: str,
               out: Path) -> dict[str, Any]:
    """One run of the 2-camera simulated rig at ``rate_hz``; lossless if nothing dropped."""
    from rigstream.session import Session, SessionPlan, demo_rig

    rig = demo_rig(load_rig(), cameras=2, fps=rate_hz, width=width, height=height, codec=codec)
    pulses = round(seconds * rate_hz)
    t0 = time.monotonic()
    s = Session(SessionPlan(rig, out, pulses, [pulses // 2])).run()
    wall = time.monotonic() - t0
    gaps = sum(sum(v.values()) for v in s["transport_seq_gaps"].values())
    dropped = sum(s["frames_dropped"].values())
    flagged = sum(s["frames_flagged"].values())
    ok = (dropped == 0 and gaps == 0 and flagged == 0 and s["framesets_incomplete"] == 0
          and all(n == pulses for n in s["frames"].values()))
    return {"rate_hz": rate_hz, "pulses": pulses, "frames": s["frames"], "dropped": dropped,
            "transport_gaps": gaps, "flagged": flagged,
            "framesets_incomplete": s["framesets_incomplete"], "duration_s": s["duration_s"],
            "trigger_late_p99_us": s["trigger_late_p99_us"], "wall_s": round(wall, 1),
            "no_drop": ok}


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.seconds or 30.0
    rates = [float(r) for r in args.rates.split(",") if r] or [50, 100, 150, 200, 226, 300]
    base = Path(args.out or tempfile.mkdtemp(prefix="rigstream-throughput-"))
    zmq_runs = [zmq_throughput(args.width, args.height) for _ in range(3)]
    trials = []
    for rate in rates:
        out = base / f"rate-{rate:g}"
        trial = demo_trial(rate, seconds, args.width, args.height, args.codec, out)
        trials.append(trial)
        logger.warning("throughput: %s", trial)
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)  # raw video is ~0.3-0.7 GB/s
        if not trial["no_drop"]:
            break
    passing = [t["rate_hz"] for t in trials if t["no_drop"]]
    zmq_fps = statistics.median(r["frames_per_s"] for r in zmq_runs)
    return {
        "benchmark": "throughput",
        "frame": f"{args.width}x{args.height} mono8",
        "cameras": 2,
        "codec": args.codec,
        "seconds_per_trial": seconds,
        "cpu_count": os.cpu_count(),
        "highest_rate_without_drop_hz": max(passing) if passing else None,
        "zmq_raw": {"runs": zmq_runs, "median_frames_per_s": zmq_fps,
                    "median_gbytes_per_s": round(zmq_fps * args.width * args.height / 1e9, 3)},
        "trials": trials,
    }


STEP_RULE = {"name": "step", "when": {"speed_above": {"keypoint": "left_forepaw", "mm_per_s": 150.0,
                                                       "margin": 40.0}},
             "actions": [{"ttl": {"width_ms": 2.0}}]}
"""A rule that fires on every fast forepaw step of the simulated trot (3.5-4.5 steps a second)."""


def closed_loop(args: argparse.Namespace) -> dict[str, Any]:
    """Pulse -> TTL latency of the simulated rig's rules, shipped and lean, side by side."""
    import msgspec

    from rigstream.config import with_overrides
    from rigstream.rules import parse_rules
    from rigstream.session import Session, SessionPlan, demo_rig

    seconds = args.seconds or 30.0
    base = load_rig()  # the embedded simulated rig (bench has no --config)
    rules = [*base.rules, *parse_rules([STEP_RULE])]
    configs = {"shipped": demo_rig(base), "lean": demo_rig(base, width=320, height=240, codec="raw")}
    out_root = Path(args.out or tempfile.mkdtemp(prefix="rigstream-bench-loop-"))
    result: dict[str, Any] = {"benchmark": "closed-loop", "seconds": seconds, "cpus": os.cpu_count(),
                              "rules": [r.name for r in rules]}
    for name, rig in configs.items():
        rig = with_overrides(rig, rules=[msgspec.to_builtins(r) for r in rules])
        s = Session(SessionPlan(rig, out_root / name, round(seconds * rig.trigger.rate_hz))).run()
        pose = s["pose"]
        cl = pose["closed_loop"]
        result[name] = {
            "frames": f"{rig.cameras[0].width}x{rig.cameras[0].height} x {len(rig.cameras)} cameras at "
                      f"{rig.trigger.rate_hz:g} Hz, {rig.recording.codec}",
            "firings": {r: st["fired"] for r, st in pose["rules"].items()},
            "pulse_to_ttl_ms": cl["pulse_to_ttl_ms"],
            "steps_p50_ms": {k: v["p50"] for k, v in cl["steps_ms"].items()},
            "steps_p99_ms": {k: v["p99"] for k, v in cl["steps_ms"].items()},
            "infer_ms_at_firings": cl["infer_ms"],
            "infer_share_of_pulse_to_ttl": cl["infer_share_of_pulse_to_ttl"],
            "pulse_to_pose3d_ms": pose.get("pose3d", {}).get("latency_pulse_to_pose3d_ms"),
            "framesets_posed": pose["framesets_posed"], "framesets_skipped": pose["framesets_skipped"],
            "frames_dropped": s["frames_dropped"],
            "session": str(out_root / name),
        }
    if not args.out:
        shutil.rmtree(out_root, ignore_errors=True)
    return result


def run_bench(what: str, args: argparse.Namespace) -> dict[str, Any]:
    if what == "throughput":
        return throughput(args)
    if what == "closed-loop":
        return closed_loop(args)
    if what == "inference":
        from rigstream.inference.evaluate import bench_inference

        engines = [e for e in args.engine.split(",") if e]
        return bench_inference(args.model, engines, args.views, iterations=args.iterations,
                               threads=args.threads)
    if what == "triangulate":
        from rigstream.inference.bench3d import bench_triangulate

        cams = tuple(int(c) for c in args.cameras.split(",") if c)
        return bench_triangulate(cams, keypoints=args.keypoints, rounds=args.iterations)
    if what == "align":
        from rigstream.sync.align import bench_align

        seconds = args.seconds or 3600.0
        return {"benchmark": "align",
                "sync_0.1-1.0s": bench_align(duration_s=seconds),
                "rsync_0.55-9.5s": bench_align(duration_s=seconds, min_interval_s=0.55, max_interval_s=9.5)}
    raise ValueError(f"unknown benchmark {what!r}")
