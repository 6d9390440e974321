"""``rigstream calibrate``: the command-line side of the multi-camera calibration.

:func:`calibrate_main` checks the options and that the outputs can be written (before minutes
of board detection, not after), runs :func:`rigstream.inference.calibrate.detect_sources` and
:func:`~rigstream.inference.calibrate.calibrate`, writes the calibration and its JSON report,
and prints the report as a table (:func:`format_report`). The CLI (:mod:`rigstream.app.cli`)
parses the CAM=SOURCE pairs and calls it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rigstream.basics import write_error
from rigstream.inference.boards import parse_board
from rigstream.inference.calibrate import MODELS, CalibrateError, calibrate, detect_sources


def format_report(report: dict[str, Any]) -> str:
    """A readable table of :func:`calibrate`'s report: per camera the bundle-adjusted reprojection
    error (mean, median, RMSE) beside the aniposelib-style triangulated one ("3D px"), and a
    line on views found inverted, which says the board was printed white on black."""
    head = (f"{'camera':<12}{'frames':>7}{'corners':>9}{'dropped':>9}{'intr px':>9}{'mean px':>9}"
            f"{'median px':>11}{'rmse px':>9}{'3D px':>8}")
    lines = [f"lens model {report['model']}: {report['model_description']}", head]
    nan = float("nan")
    for name, c in report["cameras"].items():
        lines.append(f"{name:<12}{c['frames_used']:>7}{c['corners_used']:>9}{c['corners_dropped']:>9}"
                     f"{c['intrinsics_mean_px']:>9.3f}{c['mean_px']:>9.3f}{c['median_px']:>11.3f}"
                     f"{c.get('rmse_px', nan):>9.3f}{c['triangulated_mean_px']:>8.3f}")
    for name, why in report["not_placed"].items():
        lines.append(f"{name:<12}{why}")
    inverted = {n: c for n, c in report["cameras"].items() if c.get("frames_found_inverted")}
    if inverted:
        counts = ", ".join(f"{n} {c['frames_found_inverted']} of {c['frames_detected']}"
                           for n, c in inverted.items())
        marked = bool(report.get("board", {}).get("inverted"))
        hint = "" if marked else " (the board is not marked inverted: add the flag to skip the retry)"
        lines.append(f"views found inverted (white on black): {counts}{hint}")
    tri = report["triangulated"]
    rmse = f", rmse {report['rmse_px']:.3f} px" if "rmse_px" in report else ""
    lines.append(f"overall: mean {report['mean_px']:.3f} px, median {report['median_px']:.3f} px{rmse} "
                 f"(bundle adjustment, {report['frames_adjusted']} frames); triangulated: per-corner median "
                 f"{tri['point_median_px']:.3f} px, mean {tri['point_mean_px']:.3f} px "
                 f"({tri['points']} corners)")
    lines.append(f"world frame: {report['world']}")
    return "\n".join(lines)


def calibrate_main(args: argparse.Namespace, sources: Mapping[str, str]) -> int:
    """``rigstream calibrate``: detect, calibrate, write the calibration and its report, print the table.
    ``sources``: camera name -> image folder or video (parsed from CAM=SOURCE by the CLI)."""
    if not sources:
        raise CalibrateError("no cameras given (expected CAM=SOURCE pairs)")
    if args.model not in ("auto", *MODELS):
        raise CalibrateError(f"--model: expected one of auto, {', '.join(MODELS)}; got {args.model!r}")
    board = parse_board(args.board)
    if args.every < 1:
        raise CalibrateError(f"--every: expected an integer >= 1, got {args.every}")
    out = Path(args.out)
    report_path = Path(args.report) if args.report else out.with_suffix(".report.json")
    _check_writable(out, "--out")
    _check_writable(report_path, "--report")
    t0 = time.perf_counter()
    detections = detect_sources(board, sources, every=args.every, workers=args.workers)
    result = calibrate(board, detections, model=args.model)
    result.report["time_s"] = round(time.perf_counter() - t0, 2)
    result.report["sources"] = dict(sources)
    result.calibration.save(out)
    report_path.write_text(json.dumps(result.report, indent=2) + "\n")
    print(format_report(result.report))
    print(f"wrote {out} and {report_path} ({result.report['time_s']:.1f} s)")
    return 0


def _check_writable(path: Path, option: str) -> None:
    """Fail before the detection (minutes for long videos), not after it, where ``path`` cannot
    be written: its folder is missing or read-only, or it is a folder itself."""
    folder = path.parent
    if not folder.is_dir():
        raise CalibrateError(f"{option} {path}: folder {folder} does not exist")
    if path.is_dir():
        raise CalibrateError(f"{option} {path}: is a folder (expected a file name)")
    if why := write_error(folder):
        raise CalibrateError(f"{option} {path}: cannot write in {folder} ({why})")
