"""Closed-loop rules: conditions on the live pose that fire actions (a TTL pulse, a clip, an event).

The rules are typed config (:mod:`rigstream.rules`, re-exported here), so they sit in a rig file
under ``rules:``; that module's docstring lists the conditions and actions and gives the
motivating example. This module runs them; what follows is how a rule's truth and timing are
decided.

Missing data: a keypoint that is NaN (no 3D point; in 2D a camera absent from the frame set, or a
score below the engine's ``min_score_2d``), or a speed without a previous point, makes its
condition *unknown*. Unknown counts as false: it never starts, holds or fires a rule. The
combinators use three-valued (Kleene) logic, so ``not`` of unknown stays unknown (a keypoint lost
from view never makes ``not: {in_box: ...}`` true); ``all`` is false if any part is false, ``any``
true if any part is true, and unknown otherwise when a part is unknown.

Timing, per rule, all measured on the pose's pulse time ``t_pi_ns`` (the rig's clock, so
processing delay does not change it):

- An *episode* starts at the first pose where ``when`` is true, and lasts while ``when`` stays true
  with every ``margin`` applied (Schmitt-trigger hysteresis): ``margin`` loosens each numeric
  threshold for staying in (``in_box`` grows by ``margin`` on every side, ``in_sphere``'s radius
  and ``distance_below``'s limit grow by it, ``speed_above``'s and ``confidence_above``'s
  thresholds drop by it, ``angle_between``'s range widens by it at both ends; under ``not`` the
  inner thresholds tighten instead). ``margin`` is in its condition's units (mm, px, mm/s, deg,
  score) and defaults to 0 (no hysteresis).
- ``hold_ms``: the rule fires once an episode has lasted this long (0: at its first pose); a blip
  shorter than that never fires.
- Once fired, the rule is disarmed: it fires at most once per episode. It re-arms after the
  episode has ended and ``when`` has stayed not-true for ``rearm_when_false_ms`` (measured as
  ``hold_ms`` is, from the first pose where the episode is over to a pose where it still is; 0:
  at that first pose). So a paw that stays in the box fires once; leaving and coming
  back fires again, and ``rearm_when_false_ms`` debounces flicker (and tracking dropouts, which
  end an episode).
- ``refractory_ms``: the least time between two firings. An armed episode that reaches
  ``hold_ms`` within the refractory period fires at its first pose after the period, if it is
  still going on.

:class:`RuleEngine` runs the rules on each pose (:meth:`RuleEngine.update`) and returns its
:class:`Firing` s; :func:`validate_rules` checks rules against a rig's keypoints and cameras;
:func:`parse_rules` decodes YAML with one-line errors; :func:`bench_rules` times the engine.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from rigstream.protocol import Event, Pose2D, Pose3D
from rigstream.rules import (
    Action,
    AngleBetween,
    ClipAction,
    Condition,
    ConfidenceAbove,
    DistanceBelow,
    EventAction,
    InBox,
    InSphere,
    Rule,
    RuleError,
    SpeedAbove,
    TtlAction,
    _rule_label,
    iter_leaves,
    parse_rules,
    validate_rules,
)

logger = logging.getLogger(__name__)

__all__ = [
    "Action",
    "AngleBetween",
    "ClipAction",
    "Condition",
    "ConfidenceAbove",
    "DistanceBelow",
    "EventAction",
    "Firing",
    "InBox",
    "InSphere",
    "Rule",
    "RuleEngine",
    "RuleError",
    "RuleStatus",
    "SpeedAbove",
    "TtlAction",
    "bench_rules",
    "iter_leaves",
    "parse_rules",
    "validate_rules",
]

_NAN = math.nan


# -- the engine -------------------------------------------------------------------------------------


class Firing(msgspec.Struct, frozen=True, kw_only=True):
    """A rule fired on the pose of pulse ``trigger_index``."""

    rule: str
    trigger_index: int
    t_pi_ns: int
    """The pose's pulse on the Pi's clock (the time base of hold and refractory)."""
    actions: list[Action]
    """The rule's actions (shared with the rule: do not modify)."""
    t_eval_ns: int
    """When the engine decided, host ``time.monotonic_ns()`` (Pose*.t_host_ns's clock)."""

    def event(self, source: str = "rules") -> Event:
        """The protocol Event announcing this firing (``data``: the rule and its actions)."""
        name = next((a.event.name for a in self.actions if a.event is not None and a.event.name), self.rule)
        return Event(name=name, source=source, trigger_index=self.trigger_index, t_pi_ns=self.t_pi_ns,
                     t_host_ns=self.t_eval_ns,
                     data={"rule": self.rule, "actions": msgspec.to_builtins(self.actions)})


class RuleStatus(msgspec.Struct, kw_only=True):
    """One rule's state, from :meth:`RuleEngine.status`."""

    fired: int
    last_trigger_index: int | None
    """The pulse of the last firing (None before the first)."""
    last_t_pi_ns: int | None
    armed: bool
    """Whether the rule can fire (false from a firing until it re-arms)."""
    active: bool
    """Whether an episode (``when`` holding) is going on."""


# A test's measure: one float per pose, the signed room inside its threshold (>= 0 or > 0: true;
# NaN: unknown). With a margin m the loosened test is ``s >= -m`` (tightened: ``s >= m``).
Measure3D = Callable[[Sequence[Sequence[float]], Sequence[float], Any, float], float]
Measure2D = Callable[[dict[str, Any]], float]


class _Test:
    __slots__ = ("margin", "slot", "strict")

    def __init__(self, slot: int, margin: float, strict: bool) -> None:
        self.slot = slot
        self.margin = margin
        self.strict = strict

    def test(self, vals: list[float], sign: int) -> bool | None:
        s = vals[self.slot]
        if s != s:
            return None
        threshold = -sign * self.margin
        return s > threshold if self.strict else s >= threshold


class _All:
    __slots__ = ("parts",)

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts

    def test(self, vals: list[float], sign: int) -> bool | None:
        result: bool | None = True
        for part in self.parts:
            r = part.test(vals, sign)
            if r is False:
                return False
            if r is None:
                result = None
        return result


class _Any:
    __slots__ = ("parts",)

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts

    def test(self, vals: list[float], sign: int) -> bool | None:
        result: bool | None = False
        for part in self.parts:
            r = part.test(vals, sign)
            if r is True:
                return True
            if r is None:
                result = None
        return result


class _Not:
    __slots__ = ("part",)

    def __init__(self, part: Any) -> None:
        self.part = part

    def test(self, vals: list[float], sign: int) -> bool | None:
        r = self.part.test(vals, -sign)
        return None if r is None else not r


def _angle_deg(ux: float, uy: float, uz: float, vx: float, vy: float, vz: float) -> float:
    cx, cy, cz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
    if (ux == 0.0 and uy == 0.0 and uz == 0.0) or (vx == 0.0 and vy == 0.0 and vz == 0.0):
        return _NAN  # a zero-length limb has no angle
    return math.degrees(math.atan2(math.sqrt(cx * cx + cy * cy + cz * cz), ux * vx + uy * vy + uz * vz))


def _measure_3d(key: str, leaf: Any, ix: dict[str, int]) -> tuple[Measure3D, bool]:
    """(measure(xyz, score, prev_xyz, inv_dt_s), strict) for a 3D test."""
    if key == "in_box":
        k = ix[leaf.keypoint]
        lx, ly, lz = leaf.min
        hx, hy, hz = leaf.max

        def in_box(xyz: Any, score: Any, prev: Any, inv_dt: float) -> float:
            x, y, z = xyz[k]
            if x != x or y != y or z != z:
                return _NAN
            return min(x - lx, hx - x, y - ly, hy - y, z - lz, hz - z)

        return in_box, False
    if key == "in_sphere":
        k = ix[leaf.keypoint]
        center, radius = leaf.center, leaf.radius_mm
        return (lambda xyz, score, prev, inv_dt: radius - math.dist(xyz[k], center)), False
    if key == "speed_above":
        k = ix[leaf.keypoint]
        limit = leaf.mm_per_s

        def speed_above(xyz: Any, score: Any, prev: Any, inv_dt: float) -> float:
            if prev is None:
                return _NAN
            return math.dist(xyz[k], prev[k]) * inv_dt - limit

        return speed_above, True
    if key == "distance_below":
        a, b, limit = ix[leaf.a], ix[leaf.b], leaf.limit
        return (lambda xyz, score, prev, inv_dt: limit - math.dist(xyz[a], xyz[b])), True
    if key == "angle_between":
        a, b, c, lo, hi = ix[leaf.a], ix[leaf.b], ix[leaf.c], leaf.min_deg, leaf.max_deg

        def angle_between(xyz: Any, score: Any, prev: Any, inv_dt: float) -> float:
            bx, by, bz = xyz[b]
            ax, ay, az = xyz[a]
            cx, cy, cz = xyz[c]
            deg = _angle_deg(ax - bx, ay - by, az - bz, cx - bx, cy - by, cz - bz)
            return min(deg - lo, hi - deg) if deg == deg else _NAN

        return angle_between, False
    if key == "confidence_above":
        k, floor = ix[leaf.keypoint], leaf.min_score
        return (lambda xyz, score, prev, inv_dt: score[k] - floor), False
    raise ValueError(f"{key}: not a 3D test")


def _measure_2d(key: str, leaf: Any, ix: dict[str, int], min_score: float) -> tuple[Measure2D, bool]:
    """(measure(views), strict) for a 2D test on ``leaf.camera``; a point scored below ``min_score``
    is missing."""
    cam = leaf.camera

    def point(views: dict[str, Any], k: int) -> tuple[float, float]:
        rows = views.get(cam)
        if rows is None:
            return _NAN, _NAN
        x, y, s = rows[k]
        return (x, y) if s >= min_score else (_NAN, _NAN)

    if key == "in_box":
        k = ix[leaf.keypoint]
        lx, ly = leaf.min
        hx, hy = leaf.max

        def in_box(views: dict[str, Any]) -> float:
            x, y = point(views, k)
            if x != x or y != y:
                return _NAN
            return min(x - lx, hx - x, y - ly, hy - y)

        return in_box, False
    if key == "distance_below":
        a, b, limit = ix[leaf.a], ix[leaf.b], leaf.limit

        def distance_below(views: dict[str, Any]) -> float:
            ax, ay = point(views, a)
            bx, by = point(views, b)
            return limit - math.hypot(ax - bx, ay - by)

        return distance_below, True
    if key == "angle_between":
        a, b, c, lo, hi = ix[leaf.a], ix[leaf.b], ix[leaf.c], leaf.min_deg, leaf.max_deg

        def angle_between(views: dict[str, Any]) -> float:
            ax, ay = point(views, a)
            bx, by = point(views, b)
            cx, cy = point(views, c)
            deg = _angle_deg(ax - bx, ay - by, 0.0, cx - bx, cy - by, 0.0)
            return min(deg - lo, hi - deg) if deg == deg else _NAN

        return angle_between, False
    if key == "confidence_above":
        k, floor = ix[leaf.keypoint], leaf.min_score

        def confidence_above(views: dict[str, Any]) -> float:
            rows = views.get(cam)
            return _NAN if rows is None else rows[k][2] - floor

        return confidence_above, False
    raise ValueError(f"{key}: has no 2D form")


class InputLog:
    """Every edge of the apparatus's inputs seen so far, in time order per input, for the rules'
    input tests: the state at a pulse, an edge within a window before it."""

    def __init__(self) -> None:
        self._t: dict[str, list[int]] = {}
        self._on: dict[str, list[bool]] = {}

    def clear(self) -> None:
        self._t.clear()
        self._on.clear()

    def add(self, name: str, on: bool, t_ns: int) -> None:
        times, states = self._t.setdefault(name, []), self._on.setdefault(name, [])
        at = bisect.bisect_right(times, t_ns)  # edges can arrive a little out of order
        times.insert(at, t_ns)
        states.insert(at, on)

    def state_at(self, name: str, t_ns: int) -> bool:
        """On at ``t_ns``: its last edge at or before then was ``on`` (off before any edge)."""
        times = self._t.get(name)
        if not times:
            return False
        at = bisect.bisect_right(times, t_ns) - 1
        return at >= 0 and self._on[name][at]

    def edge_within(self, name: str, on: bool, t_ns: int, window_ns: int) -> bool:
        times = self._t.get(name)
        if not times:
            return False
        lo, hi = bisect.bisect_left(times, t_ns - window_ns), bisect.bisect_right(times, t_ns)
        return any(self._on[name][i] == on for i in range(lo, hi))


class _RuleState:
    __slots__ = ("active", "armed", "false_since_ns", "fired", "has_margin", "hold_ns", "last_fired_ns",
                 "last_index", "rearm_ns", "refractory_ns", "root", "rule", "since_ns")

    def __init__(self, rule: Rule, root: Any, has_margin: bool) -> None:
        self.rule = rule
        self.root = root
        self.has_margin = has_margin
        self.hold_ns = round(rule.hold_ms * 1e6)
        self.rearm_ns = round(rule.rearm_when_false_ms * 1e6)
        self.refractory_ns = round(rule.refractory_ms * 1e6)
        self.reset()

    def reset(self) -> None:
        self.armed = True
        self.active = False
        self.since_ns = 0
        self.false_since_ns = 0
        self.last_fired_ns: int | None = None
        self.last_index: int | None = None
        self.fired = 0


class RuleEngine:
    """Runs rules on a stream of poses; one instance per stream, not thread safe.

    Args:
        rules: the rules (check them first with :func:`validate_rules`).
        keypoints: the model's keypoints, in the poses' order; a pose with other keypoints is
            ignored (counted as ``keypoint_mismatch``).
        min_score_2d: in 2D tests a keypoint whose confidence is below this is missing (Pose2D
            carries x, y for every keypoint, however unsure; e.g. ``pose.triangulation.min_score``).

    :meth:`update` takes Pose3D and Pose2D messages as they arrive (3D rules run on Pose3D, 2D
    rules on Pose2D). Each kind must come in increasing ``trigger_index``: a repeated or older
    index is ignored and counted (``repeated``, ``out_of_order``), as is a pose whose pulse time is
    unknown (``t_pi_ns`` < 0: ``untimed``) or earlier than its predecessor's (``time_backwards``).
    The engine keeps a reference to the previous Pose3D's ``xyz`` (for speeds): do not modify it.
    """

    def __init__(self, rules: Sequence[Rule], keypoints: Sequence[str], *, min_score_2d: float = 0.0) -> None:
        self.keypoints = list(keypoints)
        self.min_score_2d = float(min_score_2d)
        ix = {kp: i for i, kp in enumerate(self.keypoints)}
        names = [r.name for r in rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise RuleError(f"rules: names must be unique, repeated: {', '.join(dup)}")
        self.counters: Counter[str] = Counter()
        """Poses taken (``poses_3d``, ``poses_2d``) and ignored (see the class docstring)."""
        self._states: dict[str, list[_RuleState]] = {"3d": [], "2d": []}
        self._measures3: list[Measure3D] = []
        self._measures2: list[Measure2D] = []
        self._vals3: list[float] = []
        self._vals2: list[float] = []
        self.inputs = InputLog()
        """The apparatus's edges (fed by :meth:`input_edge`)."""
        self._t_now = -1  # the pulse time of the pose being evaluated, for input tests
        self._on_input: dict[tuple[str, bool], list[_RuleState]] = {}
        for i, rule in enumerate(rules):
            kind = rule.kind
            if rule.on_input is not None:
                key = (rule.on_input.name, rule.on_input.edge == "on")
                self._on_input.setdefault(key, []).append(_RuleState(rule, None, False))
                continue
            assert rule.when is not None
            for path, _, leaf in iter_leaves(rule.when):
                for field in ("keypoint", "a", "b", "c"):
                    kp = getattr(leaf, field, None)
                    if kp is not None and kp not in ix:
                        raise RuleError(f"{_rule_label(i, rule.name)}: {path}.{field}: {kp!r} is not a "
                                        f"keypoint of the model (keypoints: {', '.join(self.keypoints)})")
            margins: list[float] = []
            root = self._compile(rule.when, kind, ix, margins)
            self._states[kind].append(_RuleState(rule, root, any(m > 0 for m in margins)))
        self._vals3 = [_NAN] * len(self._measures3)
        self._vals2 = [_NAN] * len(self._measures2)
        self._last_index: dict[str, int | None] = {"3d": None, "2d": None}
        self._last_t_ns: dict[str, int] = {"3d": -1, "2d": -1}
        self._prev_xyz: Any = None
        self._by_name = {s.rule.name: s for states in (*self._states.values(), *self._on_input.values())
                         for s in states}

    def _compile(self, cond: Condition, kind: str, ix: dict[str, int], margins: list[float]) -> Any:
        key, value = cond.key, cond.value
        if key == "all":
            return _All([self._compile(c, kind, ix, margins) for c in value])
        if key == "any":
            return _Any([self._compile(c, kind, ix, margins) for c in value])
        if key == "not":
            return _Not(self._compile(value, kind, ix, margins))
        if key in ("input", "input_edge"):
            return self._compile_input(key, value, kind)
        margins.append(value.margin)
        if kind == "3d":
            measure3, strict = _measure_3d(key, value, ix)
            self._measures3.append(measure3)
            return _Test(len(self._measures3) - 1, value.margin, strict)
        measure2, strict = _measure_2d(key, value, ix, self.min_score_2d)
        self._measures2.append(measure2)
        return _Test(len(self._measures2) - 1, value.margin, strict)

    def _compile_input(self, key: str, leaf: Any, kind: str) -> _Test:
        """An input test reads the log at the pose's pulse: +1 true, -1 false (never unknown:
        an input has a level at every moment)."""
        log, name = self.inputs, leaf.name
        if key == "input":
            want = leaf.state == "on"

            def measure(*_: Any) -> float:
                return 1.0 if log.state_at(name, self._t_now) == want else -1.0
        else:
            on, window = leaf.edge == "on", round(leaf.within_ms * 1e6)

            def measure(*_: Any) -> float:
                return 1.0 if log.edge_within(name, on, self._t_now, window) else -1.0
        measures: list[Any] = self._measures3 if kind == "3d" else self._measures2
        measures.append(measure)
        return _Test(len(measures) - 1, 0.0, False)

    def input_edge(self, name: str, on: bool, t_ns: int, trigger_index: int) -> list[Firing]:
        """An apparatus input's edge (``on``: it became active) at ``t_ns`` on the Pi's clock, in
        the frame of pulse ``trigger_index``: logged for the input tests, and the firings of the
        rules that fire on it (``on_input``), each at most once per ``refractory_ms``."""
        self.inputs.add(name, on, t_ns)
        self.counters["input_edges"] += 1
        firings = []
        for st in self._on_input.get((name, on), ()):
            if st.last_fired_ns is not None and t_ns - st.last_fired_ns < st.refractory_ns:
                self.counters["input_refractory"] += 1
                continue
            st.fired += 1
            st.last_fired_ns = t_ns
            st.last_index = trigger_index
            firings.append(Firing(rule=st.rule.name, trigger_index=trigger_index, t_pi_ns=t_ns,
                                  actions=st.rule.actions, t_eval_ns=time.monotonic_ns()))
        return firings

    def update(self, pose: Pose3D | Pose2D) -> list[Firing]:
        """Run the rules of the pose's kind on it; the firings, in the rules' order."""
        kind = "3d" if isinstance(pose, Pose3D) else "2d"
        index, t = pose.trigger_index, pose.t_pi_ns
        last = self._last_index[kind]
        if last is not None and index <= last:
            self._ignore("repeated" if index == last else "out_of_order", pose, kind)
            return []
        if t < 0:
            self._ignore("untimed", pose, kind)
            return []
        if t <= self._last_t_ns[kind]:
            self._ignore("time_backwards", pose, kind)
            return []
        if pose.keypoints != self.keypoints:
            self._ignore("keypoint_mismatch", pose, kind)
            return []
        self._last_index[kind] = index
        self._t_now = t
        self.counters["poses_" + kind] += 1
        if kind == "3d":
            xyz = pose.xyz  # type: ignore[union-attr]
            prev, t_prev = self._prev_xyz, self._last_t_ns["3d"]
            inv_dt = 1e9 / (t - t_prev) if prev is not None else 0.0
            vals = self._vals3
            score = pose.score  # type: ignore[union-attr]
            for slot, measure3 in enumerate(self._measures3):
                vals[slot] = measure3(xyz, score, prev, inv_dt)
            self._prev_xyz = xyz
        else:
            vals = self._vals2
            views = pose.views  # type: ignore[union-attr]
            for slot, measure2 in enumerate(self._measures2):
                vals[slot] = measure2(views)
        self._last_t_ns[kind] = t
        firings: list[Firing] = []
        for st in self._states[kind]:
            if st.active:
                if (st.root.test(vals, 1) if st.has_margin else st.root.test(vals, 0)) is not True:
                    st.active = False
                    st.false_since_ns = t
            elif st.root.test(vals, 0) is True:
                st.active = True
                st.since_ns = t
            if not st.active:
                if not st.armed and t - st.false_since_ns >= st.rearm_ns:
                    st.armed = True
                continue
            if (st.armed and t - st.since_ns >= st.hold_ns
                    and (st.last_fired_ns is None or t - st.last_fired_ns >= st.refractory_ns)):
                st.armed = False
                st.fired += 1
                st.last_fired_ns = t
                st.last_index = index
                firings.append(Firing(rule=st.rule.name, trigger_index=index, t_pi_ns=t,
                                      actions=st.rule.actions, t_eval_ns=time.monotonic_ns()))
                logger.debug("rule %s fired on pulse %d", st.rule.name, index)
        return firings

    def _ignore(self, why: str, pose: Pose3D | Pose2D, kind: str) -> None:
        self.counters[why] += 1
        if self.counters[why] == 1:
            logger.warning("rules: ignored a %s pose (%s: trigger_index %d, t_pi_ns %d, last index %s); "
                           "further ones are only counted", kind, why, pose.trigger_index, pose.t_pi_ns,
                           self._last_index[kind])

    def status(self) -> dict[str, RuleStatus]:
        """Per rule (by name): firings, the last firing's pulse, armed, active."""
        return {name: RuleStatus(fired=st.fired, last_trigger_index=st.last_index,
                                 last_t_pi_ns=st.last_fired_ns, armed=st.armed, active=st.active)
                for name, st in self._by_name.items()}

    def reset(self) -> None:
        """Forget all state (a new session): every rule armed, no previous pose, counters zero."""
        for st in self._by_name.values():
            st.reset()
        self._last_index = {"3d": None, "2d": None}
        self._last_t_ns = {"3d": -1, "2d": -1}
        self._prev_xyz = None
        self.inputs.clear()
        self._t_now = -1
        self.counters.clear()


# -- benchmark --------------------------------------------------------------------------------------


def bench_rules(n: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Time :meth:`RuleEngine.update` on ``n`` Pose3D (20 keypoints, 5 rules using every test kind,
    nesting and margins), made beforehand as msgspec would decode them (lists). Returns µs per
    update (mean, median, 99th percentile, max) and the firings."""
    import numpy as np

    rng = np.random.default_rng(seed)
    keypoints = [f"kp{i}" for i in range(20)]
    rules = parse_rules("""
- name: reach
  when:
    all:
      - in_sphere: {keypoint: kp0, center: [0, 0, 0], radius_mm: 10, margin: 3}
      - confidence_above: {keypoint: kp0, min_score: 0.5}
  hold_ms: 10
  rearm_when_false_ms: 100
  actions: [{clip: {pre_s: 5, post_s: 5}}]
- name: rear
  when: {in_box: {keypoint: kp1, min: [-20, -20, 10], max: [20, 20, 40], margin: 2}}
  actions: [{event: {}}]
- name: dash
  when: {speed_above: {keypoint: kp2, mm_per_s: 300, margin: 50}}
  refractory_ms: 500
  actions: [{ttl: {width_ms: 5}}]
- name: groom
  when:
    any:
      - distance_below: {a: kp3, b: kp4, mm: 8}
      - not: {angle_between: {a: kp5, b: kp6, c: kp7, min_deg: 30, max_deg: 150}}
  hold_ms: 50
  actions: [{event: {}}]
- name: still
  when:
    all:
      - not: {speed_above: {keypoint: kp8, mm_per_s: 20}}
      - in_box: {keypoint: kp8, min: [-50, -50, -50], max: [50, 50, 50]}
  hold_ms: 200
  actions: [{ttl: {width_ms: 1}}]
""")
    engine = RuleEngine(rules, keypoints)
    frame_ns = 4_424_779  # 226 Hz
    walk = np.cumsum(rng.normal(0.0, 0.6, (n, len(keypoints), 3)), axis=0)
    walk[rng.random((n, len(keypoints))) < 0.02] = np.nan
    score = rng.uniform(0.3, 1.0, (n, len(keypoints)))
    poses = [Pose3D(seq=i, frameset_seq=i, trigger_index=i, t_pi_ns=1_000_000_000 + i * frame_ns, t_host_ns=0,
                    keypoints=keypoints, xyz=walk[i].tolist(), error=[0.0] * len(keypoints),
                    ncams=[2] * len(keypoints), score=score[i].tolist()) for i in range(n)]
    took_ns = np.empty(n, np.int64)
    firings = 0
    clock = time.perf_counter_ns
    update = engine.update
    for i, pose in enumerate(poses):
        t0 = clock()
        fired = update(pose)
        took_ns[i] = clock() - t0
        firings += len(fired)
    us = took_ns / 1e3
    return {"n": n, "rules": len(rules), "keypoints": len(keypoints),
            "us_per_update_mean": round(float(us.mean()), 2),
            "us_per_update_median": round(float(np.median(us)), 2),
            "us_per_update_p99": round(float(np.percentile(us, 99)), 2),
            "us_per_update_max": round(float(us.max()), 2),
            "firings": firings, "fired": {k: v.fired for k, v in engine.status().items()}}
