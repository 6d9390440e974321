"""Pixel-error statistics shared by training, evaluation and the live engine (latency statistics
are in :mod:`rigstream.latency`). Needs only numpy, so evaluating with ONNX Runtime needs no torch."""

from __future__ import annotations

from typing import Any

import numpy as np


def error_stats(e: np.ndarray) -> dict[str, float | int]:
    """Errors in pixels (finite values only) -> n, mean, median, p95 (px, 3 decimals)."""
    if e.size == 0:
        return {"n": 0, "mean_px": float("nan"), "median_px": float("nan"), "p95_px": float("nan")}
    return {"n": int(e.size), "mean_px": round(float(e.mean()), 3),
            "median_px": round(float(np.median(e)), 3), "p95_px": round(float(np.percentile(e, 95)), 3)}


def pixel_errors(pred: np.ndarray, truth: np.ndarray, keypoints: list[str]) -> dict[str, Any]:
    """Euclidean error per keypoint over the labeled (finite) points, and over all of them.

    ``pred`` (N, K, 2 or 3) px, ``truth`` (N, K, 2) px with NaN where unlabeled."""
    err = np.linalg.norm(pred[..., :2] - truth, axis=-1)  # (N, K), NaN where unlabeled
    table: dict[str, Any] = {name: error_stats(err[:, k][np.isfinite(err[:, k])])
                             for k, name in enumerate(keypoints)}
    table["all"] = error_stats(err[np.isfinite(err)])
    return table


def format_error_table(tables: dict[str, dict[str, Any]]) -> str:
    """Rows = keypoints (+ all), columns = mean and p95 px per split, e.g. {'train': t1, 'test': t2}."""
    names = list(next(iter(tables.values())).keys())
    head = f"{'keypoint':<16}" + "".join(f"{s + ' mean':>12}{s + ' p95':>11}{'n':>6}" for s in tables)
    lines = [head, "-" * len(head)]
    for name in names:
        row = f"{name:<16}"
        for t in tables.values():
            s = t[name]
            row += f"{s['mean_px']:>12.2f}{s['p95_px']:>11.2f}{s['n']:>6d}"
        lines.append(row)
    return "\n".join(lines)
