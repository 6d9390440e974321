"""``rigstream analyze SESSION [SESSION ...]``: every frame set posed after the session, on
this machine or a Dask cluster, with a progress line (frame sets/s and time left)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from rigstream.config import InputError


class ProgressLine:
    """Frame sets done over all sessions, the rate of this run and the time left: redrawn in
    place on a terminal, a line every ``every_s`` seconds otherwise (a log file, CI)."""

    def __init__(self, stream: TextIO = sys.stderr, every_s: float = 10.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every_s = every_s
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.first: dict[str, int] = {}
        self.t0 = time.perf_counter()
        self._shown = 0.0

    def __call__(self, session: str, done: int, total: int) -> None:
        self.totals[session] = total
        self.first.setdefault(session, done)  # resumed sets do not count toward the rate
        self.done[session] = done
        now = time.perf_counter()
        finished = sum(self.done.values()) == sum(self.totals.values())
        if self.tty or finished or now - self._shown >= self.every_s:
            self._shown = now
            self.stream.write(("\r" if self.tty else "") + self.text(now) + ("" if self.tty else "\n"))
            self.stream.flush()

    def text(self, now: float) -> str:
        done, total = sum(self.done.values()), sum(self.totals.values())
        new = done - sum(self.first.values())
        elapsed = max(now - self.t0, 1e-9)
        rate = new / elapsed
        left = (total - done) / rate if rate > 0 else float("nan")
        eta = f"{left:.0f} s left" if left == left else "time left: -"
        return (f"analyze: {done}/{total} frame sets ({100 * done / max(total, 1):.0f}%) "
                f"{rate:.1f} sets/s, {eta}   ")

    def close(self) -> None:
        if self.tty and self.totals:
            self.stream.write("\n")
            self.stream.flush()


def _outputs(sessions: list[str], out: str | None) -> list[Path | None]:
    if out is None:
        return [None] * len(sessions)
    root = Path(out).expanduser()
    if len(sessions) == 1:
        return [root]
    names = [Path(s).expanduser().resolve().name for s in sessions]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"--out {root}: sessions named {twice} would share a folder; analyse them "
                         f"separately or without --out (each into its own analysis/)")
    return [root / n for n in names]


def _preflight(args: argparse.Namespace, on_cluster: bool) -> None:
    """Fail before the work: the libraries the outputs (and a cluster) need."""
    from importlib.util import find_spec

    need = [("pandas", "pandas"), ("tables", "tables")]
    if not args.no_nwb:
        need += [("pynwb", "pynwb>=4"), ("ndx_pose", "ndx-pose>=0.4")]
    if on_cluster:
        need.append(("distributed", "dask[distributed]"))
    missing = [pip for mod, pip in need if find_spec(mod) is None]
    if missing:
        hint = " (or --no-nwb)" if any(m.startswith(("pynwb", "ndx")) for m in missing) else ""
        raise InputError(f"rigstream analyze needs {', '.join(missing)}: pip install "
                         + " ".join(f'"{m}"' for m in missing) + hint)


def cmd_analyze(args: argparse.Namespace) -> int:
    from rigstream.inference.analyze import AnalyzeSettings, analyze_serial, plan_session

    for noisy in ("numexpr", "distributed"):  # pandas' thread count; the cluster's comings and goings
        logging.getLogger(noisy).setLevel(logging.WARNING)
    workers = args.workers
    if workers is None and args.scheduler is None and len(args.sessions) > 1:
        workers = min(len(args.sessions), os.cpu_count() or 1)  # several sessions: a local cluster
    on_cluster = bool(args.scheduler) or bool(workers)
    _preflight(args, on_cluster)
    cpus = os.cpu_count() or 1
    threads = args.threads or (max(1, cpus // workers) if workers else min(4, cpus))
    settings = AnalyzeSettings(engine=args.engine, model=args.model, device=args.device, threads=threads,
                               batch=args.batch, chunk=args.chunk, smooth=not args.no_smooth,
                               meas_noise_mm=args.meas_noise_mm, nwb=not args.no_nwb,
                               neural_rate_hz=args.neural_rate_hz,
                               labeled_videos=args.labeled_videos)
    # every session read and checked before the first frame is posed
    outs = _outputs(args.sessions, args.out)
    plans = [plan_session(s, settings, out) for s, out in zip(args.sessions, outs, strict=True)]
    for plan in plans:
        print(f"{plan.name}: {len(plan.trigger_index)} frame sets x {len(plan.cameras)} cameras, "
              f"{plan.chunks} chunks of {settings.chunk}; model {plan.model_dir.name} on {settings.engine} "
              f"-> {plan.out}", file=sys.stderr)
    progress = ProgressLine()
    try:
        if on_cluster:
            from rigstream.inference.analyze_cluster import analyze_on_cluster

            reports = analyze_on_cluster(plans, workers=workers, scheduler=args.scheduler,
                                         restart=args.restart, progress=progress)
        else:
            reports = analyze_serial(plans, restart=args.restart, progress=progress)
    finally:
        progress.close()
    for report in reports:
        _print_report(report, print)
    return 0


def _print_report(r: dict[str, Any], say: Callable[[str], None]) -> None:
    if r.get("skipped"):
        say(f"{r['session']}: already analysed with these settings -> {r['out']} (--restart to redo)")
        return
    rate = f", {r['frame_sets_per_s']} sets/s" if r.get("frame_sets_per_s") else ""
    resumed = (f", {r['chunks_resumed']} of {r['chunks']} chunks from an earlier run"
               if r["chunks_resumed"] else "")
    say(f"{r['session']}: {r['frame_sets_posed']}/{r['frame_sets']} frame sets posed "
        f"({r['frame_sets_complete']} with every camera){rate}{resumed}")
    for cam, counts in r["rows"].items():
        lost = ", ".join(f"{n} {k}" for k, n in counts.items() if n and k != "posed")
        say(f"  {cam}: {counts['posed']} posed" + (f"; NaN rows: {lost}" if lost else ""))
    truth = r.get("error_vs_truth")
    if truth:
        e2 = truth["pose2d"]
        line = f"  vs truth: 2D median {e2.get('median_px')} px, p95 {e2.get('p95_px')} px"
        for key, label in (("points3d", "3D"), ("points3d_smoothed", "smoothed 3D")):
            if key in truth:
                line += f"; {label} median {truth[key].get('median_mm')} mm"
        say(line)
    say(f"  -> {r['out']}: {', '.join(r['files'])}")


def add_neural_rate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--neural-rate-hz", type=float, default=None,
                   help="NWB: the neural recorder's samples per second, for times on its clock when "
                        "the session's mapping is in samples (default: the rig's simulated recorder)")


def add_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    p = sub.add_parser("analyze", help="pose every frame set of recorded sessions (2D, 3D, smoothed; "
                                       "DeepLabCut, anipose and NWB files), here or on a Dask cluster")
    p.add_argument("sessions", nargs="+", metavar="SESSION",
                   help="session folders (video/, frames.csv, rig.yaml)")
    p.add_argument("--out", default=None, help="output folder (default SESSION/analysis; with several "
                                               "sessions, one subfolder each)")
    p.add_argument("--model", default=None, help="model name or folder (default: the session's)")
    p.add_argument("--engine", default="onnxruntime", choices=("onnxruntime", "torch", "tensorrt"))
    p.add_argument("--device", default="cpu", help="torch engine device (cpu, cuda, cuda:1)")
    p.add_argument("--threads", type=int, default=None, help="engine threads per process")
    p.add_argument("--batch", type=int, default=8, help="frame sets per engine call (x the cameras)")
    p.add_argument("--chunk", type=int, default=500, help="frame sets per chunk: the unit of resuming "
                                                          "and of a cluster task")
    p.add_argument("--workers", type=int, default=None,
                   help="run chunks on a local Dask cluster of N processes (default with several "
                        "sessions: one per session up to the CPU count; 0: in this process)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://host:8786)")
    p.add_argument("--restart", action="store_true", help="discard saved chunks and outputs; pose again")
    p.add_argument("--no-smooth", action="store_true", help="no Rauch-Tung-Striebel pass over 3D")
    p.add_argument("--meas-noise-mm", type=float, default=None,
                   help="the smoother's 3D measurement noise (default: estimated per keypoint)")
    p.add_argument("--no-nwb", action="store_true", help="do not write the NWB file")
    add_neural_rate(p)
    p.add_argument("--labeled-videos", action="store_true", help="also write each video with the "
                                                                 "keypoints and skeleton drawn")
    p.set_defaults(func=func)
