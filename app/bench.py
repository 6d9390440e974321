"""Benchmarks that print numbers (never timed unit tests).

``rigstream bench throughput``: the highest trigger rate at which the simulated rig (2 cameras
by default, every component its own process, the monitor open, pre-rendered cameras that cost
the host one copy per frame as a real camera does) records ``--seconds`` without a dropped or
overrun frame, per camera count, beside memcpy and raw ZeroMQ for the same frame size measured
in the same run, and the rig's bytes/s as a share of each.

``rigstream bench closed-loop``: the simulated rig with its shipped rule plus one that fires on
every fast forepaw step (a few times a second), as shipped (640x480, lossless h264) and lean
(320x240, raw video) in one run, and lean again with the pose engine's sets taken from the
assembler's messages instead of the stores (``pose.sets``): pulse -> TTL edge p50/p99/max, each
step of the chain, inference, ``overhead_ms`` (pulse -> TTL minus the camera and inference),
and the part of it a set waited behind the engine's previous set (``queued_ms``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
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


def memcpy_bandwidth(width: int, height: int, seconds: float = 1.0) -> dict[str, Any]:
    """One frame copied into a slot of a preallocated ring, as the camera node writes its store:
    GB/s on this host (the ceiling for moving pixels at all)."""
    src = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
    ring = np.zeros((16, height, width), np.uint8)
    ring[:] = src  # touch every page first
    copies = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        np.copyto(ring[copies % 16], src)
        copies += 1
    return {"frames_per_s": round(copies / elapsed, 1),
            "gbytes_per_s": round(copies * src.nbytes / elapsed / 1e9, 3)}


def demo_trial(rate_hz: float, seconds: float, width: int, height: int, codec: str,
               out: Path, cameras: int = 2, monitor: bool = True, pose: bool = False,
               video: bool = True) -> dict[str, Any]:
    """One run of the simulated rig (pre-rendered cameras: each frame costs the host one copy,
    as a real camera's does) at ``rate_hz``; lossless if nothing dropped or overran."""
    from rigstream.app.demo import demo_rig
    from rigstream.app.session import MonitorPlan, Session, SessionPlan
    from rigstream.config import with_overrides

    rig = demo_rig(load_rig(), cameras=cameras, fps=rate_hz, width=width, height=height, codec=codec,
                   pose=pose, prerender_s=1.0)
    if not video:
        rig = with_overrides(rig, recording={**msgspec.to_builtins(rig.recording), "video": "off"})
    pulses = round(seconds * rate_hz)
    t0 = time.monotonic()
    plan = SessionPlan(rig, out, pulses, [pulses // 2], monitor=MonitorPlan(port=0) if monitor else None)
    s = Session(plan).run()
    wall = time.monotonic() - t0
    dropped = sum(s["frames_dropped"].values())
    overrun = sum(s.get("frames_overrun", {}).values())
    flagged = sum(s["frames_flagged"].values())
    ok = (dropped == 0 and overrun == 0 and flagged == 0 and s["framesets_incomplete"] == 0
          and all(n == pulses for n in s["frames"].values()))
    decoded = None
    if video and ok:
        from rigstream.acquisition.video import count_frames

        decoded = {c: count_frames(out / "video" / f"{c}.mkv") for c in s["frames"]}
        ok = all(decoded[c] == pulses for c in decoded)
    return {"rate_hz": rate_hz, "cameras": cameras, "pulses": pulses, "frames": s["frames"],
            "decoded": decoded, "dropped": dropped, "overrun": overrun, "flagged": flagged,
            "framesets_incomplete": s["framesets_incomplete"], "duration_s": s["duration_s"],
            "trigger_late_p99_us": s["trigger_late_p99_us"], "wall_s": round(wall, 1),
            "mbytes_per_s": round(cameras * rate_hz * width * height / 1e6, 1),
            "no_drop": ok}


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """The highest drop-free rate of the simulated rig for each camera count, beside memcpy and
    raw ZeroMQ for the same frame size measured in the same run."""
    seconds = args.seconds or 30.0
    rates = [float(r) for r in args.rates.split(",") if r] or [100, 150, 226, 300]
    counts = [int(c) for c in (args.cameras or "2").split(",") if c]
    base = Path(args.out or tempfile.mkdtemp(prefix="rigstream-throughput-"))
    memcpy_runs = [memcpy_bandwidth(args.width, args.height) for _ in range(3)]
    zmq_runs = [zmq_throughput(args.width, args.height) for _ in range(3)]
    trials = []
    best: dict[int, float | None] = {}
    for cams in counts:
        best[cams] = None
        for rate in rates:
            out = base / f"cams-{cams}-rate-{rate:g}"
            trial = demo_trial(rate, seconds, args.width, args.height, args.codec, out, cameras=cams,
                               monitor=not args.no_monitor, pose=args.pose, video=not args.no_video)
            trials.append(trial)
            logger.warning("throughput: %s", trial)
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)  # raw video at 2 x 226 Hz is 0.7 GB/s
            if not trial["no_drop"]:
                break
            best[cams] = rate
    if not args.keep and not args.out:
        shutil.rmtree(base, ignore_errors=True)
    zmq_gbs = statistics.median(r["gbytes_per_s"] for r in zmq_runs)
    memcpy_gbs = statistics.median(r["gbytes_per_s"] for r in memcpy_runs)
    for t in trials:
        t["share_of_memcpy"] = round(t["mbytes_per_s"] / 1e3 / memcpy_gbs, 4)
        t["share_of_zmq"] = round(t["mbytes_per_s"] / 1e3 / zmq_gbs, 4)
    return {
        "benchmark": "throughput",
        "frame": f"{args.width}x{args.height} mono8",
        "codec": args.codec if not args.no_video else "video off",
        "monitor": not args.no_monitor, "pose": args.pose,
        "seconds_per_trial": seconds,
        "cpu_count": os.cpu_count(),
        "highest_rate_without_drop_hz": {str(c): r for c, r in best.items()},
        "memcpy": {"runs": memcpy_runs, "median_gbytes_per_s": memcpy_gbs},
        "zmq_raw": {"runs": zmq_runs, "median_gbytes_per_s": zmq_gbs},
        "trials": trials,
    }


QUEUED_MS = 0.2
"""A firing counts in ``queued_firings`` when its set waited longer than this for the engine
(below it, the wait is the engine's own turn between sets, not a set in the way)."""

STEP_RULE = {"name": "step", "when": {"speed_above": {"keypoint": "left_forepaw", "mm_per_s": 150.0,
                                                       "margin": 40.0}},
             "actions": [{"ttl": {"width_ms": 2.0}}]}
"""A rule that fires on every fast forepaw step of the simulated trot (3.5-4.5 steps a second)."""


def firing_overheads(session: Path) -> dict[str, Any]:
    """Per TTL firing in ``firings.csv``: pulse -> TTL edge, the camera's share (pulse -> frame in
    the host's store: exposure, readout, transfer; for the simulated camera the trigger line and
    one copy), inference, and ``overhead_ms`` = pulse -> TTL minus those two: what rigstream
    itself adds (moving frames, matching sets, pre/post-processing, 3D, the rule, the TTL).

    ``queued_ms`` is the part of the overhead a set spent complete in the stores while the engine
    was still busy with the set before it (its inference, mostly); ``overhead_unqueued_ms`` is
    the overhead without it: what the path adds when the engine is free to take the set."""
    import csv

    cols: dict[str, list[float]] = {k: [] for k in ("total", "camera", "infer", "queued")}
    path = session / "firings.csv"
    if path.is_file():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if not row["t_ttl_ns"] or row["ttl_error"]:
                    continue
                cols["total"].append((int(row["t_ttl_ns"]) - int(row["t_pi_ns"])) / 1e6)
                for key, col in (("camera", "frames_ms"), ("infer", "infer_ms"), ("queued", "queued_ms")):
                    cols[key].append(float(row[col]) if row.get(col) else float("nan"))
    overheads = [t - c - i for t, c, i in zip(cols["total"], cols["camera"], cols["infer"], strict=True)]
    unqueued = [o - q for o, q in zip(overheads, cols["queued"], strict=True)]
    from rigstream.latency import latency_stats

    return {"pulse_to_ttl_ms": latency_stats(cols["total"], count=True),
            "camera_ms": latency_stats(cols["camera"], count=True),
            "infer_ms": latency_stats(cols["infer"], count=True),
            "overhead_ms": latency_stats(overheads, count=True),
            "queued_ms": latency_stats(cols["queued"], count=True),
            "queued_firings": sum(q > QUEUED_MS for q in cols["queued"]),
            "overhead_unqueued_ms": latency_stats(unqueued, count=True)}


def closed_loop(args: argparse.Namespace) -> dict[str, Any]:
    """Pulse -> TTL latency of the simulated rig's rules, shipped and lean, side by side (the
    cameras pre-rendered, so each frame costs the host one copy, as a real camera's does)."""
    from rigstream.app.demo import demo_rig
    from rigstream.app.session import Session, SessionPlan
    from rigstream.config import with_overrides
    from rigstream.rules import parse_rules

    seconds = args.seconds or 30.0
    base = load_rig()  # the embedded simulated rig (bench has no --config)
    rules = [*base.rules, *parse_rules([STEP_RULE])]
    lean = demo_rig(base, width=320, height=240, codec="raw", prerender_s=2.0)
    assert lean.pose is not None
    configs = {"shipped": demo_rig(base, prerender_s=2.0), "lean": lean,
               # the same with the sets from the assembler's messages (pose.sets: assembler)
               "lean_assembler": with_overrides(
                   lean, pose={**msgspec.to_builtins(lean.pose), "sets": "assembler"})}
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
            **firing_overheads(out_root / name),
            "steps_p50_ms": {k: v["p50"] for k, v in cl["steps_ms"].items()},
            "steps_p99_ms": {k: v["p99"] for k, v in cl["steps_ms"].items()},
            "infer_share_of_pulse_to_ttl": cl["infer_share_of_pulse_to_ttl"],
            "pulse_to_pose3d_ms": pose.get("pose3d", {}).get("latency_pulse_to_pose3d_ms"),
            "framesets_posed": pose["framesets_posed"], "framesets_skipped": pose["framesets_skipped"],
            "frames_dropped": s["frames_dropped"],
            "session": str(out_root / name),
        }
    if not args.out:
        shutil.rmtree(out_root, ignore_errors=True)
    return result


SOAK_CLIP_EVERY_S = 20.0
"""The soak's clips: the shipped midline rule with this refractory period, about the pace of a
lab's behavioural events (each clip of 1.5 s at 2 x 1440x1080 is 1 GB of raw video)."""
SOAK_KEEP_CLIPS = 4
"""Clips the soak leaves in the session for the final ``rigstream verify``; older ones are
checked by the same code as they are saved and then removed (disk)."""


def _component_memory() -> dict[str, dict[str, int]]:
    """Resident memory of this process's children (the session's components), MiB: private
    (``RssAnon``: what grows if something leaks) and shared (``RssShmem``: frame stores)."""
    me = os.getpid()
    out: dict[str, dict[str, int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["PPid"]) != me:
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, KeyError, ValueError):
            continue
        words = [a.decode(errors="replace") for a in argv]
        role = words[words.index("rigstream") + 1] if "rigstream" in words[:4] else proc.name
        if role == "camera" and "--name" in words:
            role = f"camera {words[words.index('--name') + 1]}"
        out[role] = {k: int(fields.get(f"Rss{k.capitalize()}", "0 kB").split()[0]) // 1024
                     for k in ("anon", "shmem")}
    return out


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """The seed lab's mode for ``--seconds`` (default 1800): 2 x 1440x1080 at 226 Hz, whole-session
    video off (the tables still written), ring + pose + rules + clips + monitor. Each clip is
    checked as it is saved (exact window on every camera, video decodes to its rows) and then
    removed, but for the last few; the memory of every component is read after a minute and
    at the end; ``rigstream verify`` runs on the session afterwards."""
    import threading

    from rigstream.app.demo import demo_rig
    from rigstream.app.session import MonitorPlan, Session, SessionPlan
    from rigstream.app.verify import verify_clip, verify_session
    from rigstream.config import with_overrides

    seconds = args.seconds or 1800.0
    rate = float(args.rates.split(",")[0]) if args.rates else 226.0
    cams = int((args.cameras or "2").split(",")[0])
    base = load_rig()
    rig = demo_rig(base, cameras=cams, fps=rate, width=args.width, height=args.height, codec="raw",
                   pose=True, prerender_s=8.0)
    rules = [{**msgspec.to_builtins(r), "refractory_ms": SOAK_CLIP_EVERY_S * 1000} for r in base.rules]
    rig = with_overrides(rig, rules=rules,
                         recording={**msgspec.to_builtins(rig.recording), "video": "off"})
    out = Path(args.out or tempfile.mkdtemp(prefix="rigstream-soak-")) / "session"
    pulses = round(seconds * rate)
    checked: list[dict[str, Any]] = []
    problems: list[str] = []
    memory: dict[str, Any] = {}
    done = threading.Event()

    def watch() -> None:
        seen: set[str] = set()
        started = time.monotonic()
        while not done.wait(2.0):
            if "start" not in memory and time.monotonic() - started > 60:
                memory["start"] = _component_memory()
            if memory.get("start"):
                now = _component_memory()
                if set(now) == set(memory["start"]):  # all still running (not yet stopping)
                    memory["end"] = now
            for info in sorted((out / "clips").glob("*/event.json")):
                clip = info.parent
                if clip.name in seen:
                    continue
                try:
                    checked.append(verify_clip(clip, rig, None, problems))
                except (OSError, ValueError, KeyError):
                    continue  # still being written: next round
                seen.add(clip.name)
                older = sorted(seen)[:-SOAK_KEEP_CLIPS]
                for name in older:
                    shutil.rmtree(out / "clips" / name, ignore_errors=True)

    watcher = threading.Thread(target=watch, name="soak-watch", daemon=True)
    watcher.start()
    t0 = time.monotonic()
    try:
        s = Session(SessionPlan(rig, out, pulses, [], monitor=MonitorPlan(port=0))).run()
    finally:
        done.set()
        watcher.join(30)
    wall = time.monotonic() - t0
    report = verify_session(out)
    result = {
        "benchmark": "soak", "seconds": seconds, "rate_hz": rate, "cameras": cams,
        "frame": f"{args.width}x{args.height} mono8", "video": "off", "wall_s": round(wall, 1),
        "pulses": pulses, "frames": s["frames"], "frames_dropped": s["frames_dropped"],
        "frames_overrun": s.get("frames_overrun"), "framesets_incomplete": s["framesets_incomplete"],
        "pose": {k: s["pose"].get(k) for k in ("framesets_posed", "framesets_skipped")},
        "rule_firings": {r: st["fired"] for r, st in s["pose"]["rules"].items()},
        "clips_saved": s["clips_saved"],
        "clips_checked_during_run": len(checked),
        "clips_with_problems": problems,
        "memory_mib": memory,
        "verify_problems": report["problems"],
        "session": str(out),
    }
    if not args.keep:
        shutil.rmtree(out.parent, ignore_errors=True)
    return result


def analyze_speed(args: argparse.Namespace) -> dict[str, Any]:
    """Record a demo session per camera count (the embedded rig's frame size, live pose on), pose
    every frame set ``runs`` times with ``rigstream analyze`` (serial, this process), and print the
    median rate beside the live and offline errors against the simulated truth."""
    from rigstream.app.cli import main
    from rigstream.inference.analyze import AnalyzeSettings, analyze_serial, plan_session

    seconds = args.seconds or 20.0
    out = Path(args.out or tempfile.mkdtemp(prefix="rigstream-bench-analyze-"))
    result: dict[str, Any] = {"benchmark": "analyze", "seconds": seconds, "runs": args.runs, "cameras": {}}
    try:
        for cams in (int(c) for c in (args.cameras or "2,6").split(",") if c):
            session = out / f"demo_{cams}cam"
            with contextlib.redirect_stdout(sys.stderr):  # stdout is the bench's JSON
                code = main(["demo", "--out", str(session), "--seconds", str(seconds),
                             "--cameras", str(cams)])
            if code != 0:
                raise RuntimeError(f"the {cams}-camera demo failed; see {session}/logs")
            live = json.loads((session / "summary.json").read_text())["pose"]
            settings = AnalyzeSettings(threads=args.threads, batch=args.batch, nwb=False)
            runs = [analyze_serial([plan_session(session, settings)], restart=True)[0]
                    for _ in range(args.runs)]
            rates = [r["frame_sets_per_s"] for r in runs]
            last = runs[-1]
            truth = last.get("error_vs_truth", {})
            live3d = live.get("pose3d", {})
            result["cameras"][str(cams)] = {
                "frame_sets": last["frame_sets"], "frame_sets_posed": last["frame_sets_posed"],
                "live_posed": live["framesets_posed"],
                "frame_sets_per_s_runs": rates, "frame_sets_per_s_median": float(np.median(rates)),
                "frames_per_s_median": round(float(np.median(rates)) * cams, 1),
                "error_2d_median_px": {"live": live.get("error_2d_vs_truth", {}).get("median_px"),
                                       "offline": truth.get("pose2d", {}).get("median_px")},
                "error_3d_median_mm": {
                    "live": live3d.get("error_3d_vs_truth", {}).get("median_mm"),
                    "live_filtered": live3d.get("error_3d_filtered_vs_truth", {}).get("median_mm"),
                    "offline": truth.get("points3d", {}).get("median_mm"),
                    "offline_smoothed": truth.get("points3d_smoothed", {}).get("median_mm")},
            }
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    return result


def run_bench(what: str, args: argparse.Namespace) -> dict[str, Any]:
    if what == "analyze":
        return analyze_speed(args)
    if what == "throughput":
        return throughput(args)
    if what == "soak":
        return soak(args)
    if what == "closed-loop":
        return closed_loop(args)
    if what == "inference":
        from rigstream.inference.evaluate import bench_inference

        engines = [e for e in args.engine.split(",") if e]
        return bench_inference(args.model, engines, args.views, iterations=args.iterations,
                               threads=args.threads)
    if what == "triangulate":
        from rigstream.inference.bench3d import bench_triangulate

        cams = tuple(int(c) for c in (args.cameras or "2,4,6").split(",") if c)
        return bench_triangulate(cams, keypoints=args.keypoints, rounds=args.iterations)
    if what == "align":
        from rigstream.sync.align import bench_align

        seconds = args.seconds or 3600.0
        return {"benchmark": "align",
                "sync_0.1-1.0s": bench_align(duration_s=seconds),
                "rsync_0.55-9.5s": bench_align(duration_s=seconds, min_interval_s=0.55, max_interval_s=9.5)}
    raise ValueError(f"unknown benchmark {what!r}")
