"""The page model: what the monitor page draws, worked out from the rig and its pose model.

These are pure functions of the rig's configuration (its rules, the boxes and spheres they test,
the pose model card's keypoints and skeleton) and of a few latency series (the histogram), and
:func:`json_safe`, which makes any of it something a browser's JSON parser takes. Nothing here
holds state or touches a socket; the state store and the web server both call in.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np

from rigstream.config import RigConfig
from rigstream.latency import latency_stats

logger = logging.getLogger(__name__)


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (browsers reject them in JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# -- the latency histogram ------------------------------------------------------------------------


def nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is >= ``x`` (``x`` > 0)."""
    exp = 10 ** math.floor(math.log10(x))
    for step in (1, 2, 5, 10):
        if step * exp >= x * (1 - 1e-9):
            return float(step * exp)
    return float(10 * exp)


def latency_histogram(series: dict[str, list[float]], bins: int = 25) -> dict[str, Any]:
    """Counts per series over shared bins from 0 to a round number above every series' p99;
    values beyond it count in the last bin."""
    finite = {k: np.asarray([v for v in vals if v is not None and math.isfinite(v)], float)
              for k, vals in series.items()}
    tops = [float(np.percentile(a, 99)) for a in finite.values() if a.size]
    top = nice_ceiling(max([*tops, 1.0]) * 1.1)
    edges = np.linspace(0.0, top, bins + 1)
    counts = {k: np.histogram(np.clip(a, 0.0, top), edges)[0].tolist() for k, a in finite.items()}
    return {"edges_ms": [round(float(e), 4) for e in edges], "counts": counts,
            "stats": {k: latency_stats(series[k], count=True) for k in series}}


# -- the rig's rules, keypoints and skeleton as the page draws them -------------------------------


def rig_rules(rig: RigConfig) -> list[dict[str, Any]]:
    """Name, kind (3d/2d), actions and the YAML form of each of the rig's rules."""
    out = []
    for rule in getattr(rig, "rules", None) or []:
        doc = msgspec.to_builtins(rule)
        actions = [next(iter(a)) for a in doc.get("actions", []) if isinstance(a, dict) and a]
        out.append({"name": doc.get("name", "?"), "kind": getattr(rule, "kind", "?"),
                    "actions": actions, "when": doc.get("when", {})})
    return out


def rule_regions(rig: RigConfig) -> list[dict[str, Any]]:
    """The boxes and spheres the rules test (3D in mm; 2D boxes in a camera's pixels)."""
    regions: list[dict[str, Any]] = []
    for rule in rig_rules(rig):
        for test, negated in _walk_condition(rule["when"], False):
            if "in_box" in test:
                box = test["in_box"]
                regions.append({"rule": rule["name"], "shape": "box", "keypoint": box.get("keypoint"),
                                "min": box.get("min"), "max": box.get("max"),
                                "camera": box.get("camera"), "negated": negated})
            elif "in_sphere" in test:
                sph = test["in_sphere"]
                regions.append({"rule": rule["name"], "shape": "sphere", "keypoint": sph.get("keypoint"),
                                "center": sph.get("center"), "radius_mm": sph.get("radius_mm"),
                                "camera": None, "negated": negated})
    return regions


def _walk_condition(cond: Any, negated: bool) -> Iterator[tuple[dict[str, Any], bool]]:
    if not isinstance(cond, dict):
        return
    for key in ("all", "any"):
        for sub in cond.get(key) or []:
            yield from _walk_condition(sub, negated)
    if isinstance(cond.get("not"), dict):
        yield from _walk_condition(cond["not"], not negated)
    if any(k in cond for k in ("in_box", "in_sphere")):
        yield cond, negated


def model_card_info(rig: RigConfig) -> tuple[list[str], list[list[str]]]:
    """Keypoints and skeleton of the rig's pose model card (the rig's keypoints and no edges
    when there is no card to read)."""
    if rig.pose is None:
        return [], []
    try:
        from rigstream.inference.modeldir import load_model, resolve_model_path

        card = load_model(resolve_model_path(rig.pose.model)).card
    except Exception as exc:  # the page works without it: the pose messages name the keypoints
        logger.info("monitor: no model card for the skeleton (%s)", exc)
        return list(rig.pose.keypoints or []), []
    return list(card.keypoints), [list(e) for e in card.skeleton]


def skeleton_for(card_skeleton: list[list[str]], keypoints: list[str]) -> list[tuple[str, str]]:
    """Edges to draw: the model card's skeleton, else the simulated rat's when the keypoint
    names are among its own, else none (points only)."""
    if card_skeleton:
        return [(e[0], e[1]) for e in card_skeleton if len(e) == 2]
    from rigstream.acquisition import sim_world

    if keypoints and set(keypoints) <= set(sim_world.KEYPOINTS):
        return list(sim_world.SKELETON)
    return []
