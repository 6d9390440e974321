"""Closed-loop rules: conditions on the live pose that fire actions (a TTL pulse, a clip, an event).

A rule is typed config (msgspec Structs that reject unknown keys, like the rig file), so a list of
rules can sit in a rig file under ``rules:``. The motivating case, "save 5 s before and after every
time the rat's paw reaches the knob"::

    rules:
      - name: reach
        when:
          all:
            - in_sphere: {keypoint: paw, center: [12.0, -40.0, 85.0], radius_mm: 8, margin: 4}
            - confidence_above: {keypoint: paw, min_score: 0.5}
        hold_ms: 10               # in the sphere for 10 ms (2-3 frames) before it counts
        rearm_when_false_ms: 200  # out (of the sphere grown by margin) for 200 ms before the next reach
        refractory_ms: 1000       # at most one firing a second
        actions:
          - clip: {pre_s: 5, post_s: 5}
          - event: {}

Conditions (each a one-key mapping; ``camera: NAME`` makes a condition 2D, on that camera's
full-frame pixels, else it is 3D, in the calibration's frame and mm):

- ``in_box: {keypoint, min, max, camera?, margin?}``: inside an axis-aligned box, edges included;
  ``min``/``max`` are ``[x, y, z]`` mm, or ``[x, y]`` px with ``camera``.
- ``in_sphere: {keypoint, center, radius_mm, margin?}``: within ``radius_mm`` of ``center``
  ``[x, y, z]`` mm (3D only).
- ``speed_above: {keypoint, mm_per_s, margin?}``: speed above ``mm_per_s`` (3D only), the distance
  to the keypoint in the previous Pose3D the engine took over the time between their pulses
  (``t_pi_ns``; skipped frame sets lengthen it). The first pose has no speed.
- ``distance_below: {a, b, mm | px, camera?, margin?}``: the keypoints ``a`` and ``b`` closer than
  ``mm`` (3D) or ``px`` (2D, with ``camera``).
- ``angle_between: {a, b, c, min_deg?, max_deg?, camera?, margin?}``: the angle at ``b`` between
  ``b->a`` and ``b->c`` (0..180 deg) within ``[min_deg, max_deg]``, edges included.
- ``confidence_above: {keypoint, min_score, camera?, margin?}``: the keypoint's score
  ``>= min_score`` (3D: Pose3D.score, the mean confidence of the views used, 0 without a point;
  2D: that camera's confidence).
- ``all: [...]``, ``any: [...]``, ``not: {...}``: combinators, nested freely.

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

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import msgspec

from rigstream.config import InputError, Name
from rigstream.protocol import Event, Pose2D, Pose3D

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


class RuleError(InputError):
    """Rules that cannot be used; the message names the rule (``rules[i] 'name'``) and the field."""


class _Model(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


# -- checks shared by the models (they run on decoding and on direct construction) ----------------


def _finite(field: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{field}: expected a finite number, got {value!r}")


def _at_least(field: str, value: float, low: float, unit: str = "") -> None:
    _finite(field, value)
    if value < low:
        raise ValueError(f"{field}: expected a number >= {low:g}{unit}, got {value!r}")


def _above(field: str, value: float, low: float, unit: str = "") -> None:
    _finite(field, value)
    if value <= low:
        raise ValueError(f"{field}: expected a number > {low:g}{unit}, got {value!r}")


def _point(field: str, values: list[float], dims: int, what: str) -> None:
    if len(values) != dims:
        raise ValueError(f"{field}: expected {dims} values {what}, got {len(values)}")
    for i, v in enumerate(values):
        _finite(f"{field}[{i}]", v)


def _distinct(**names: str) -> None:
    seen: dict[str, str] = {}
    for field, kp in names.items():
        if kp in seen:
            raise ValueError(f"{field}: {kp!r} is already {seen[kp]}; the keypoints must differ")
        seen[kp] = field


# -- conditions -------------------------------------------------------------------------------------


class InBox(_Model):
    """``keypoint`` inside an axis-aligned box, edges included."""

    keypoint: str
    min: list[float]
    """3D: ``[x, y, z]`` mm; 2D (with ``camera``): ``[x, y]`` px."""
    max: list[float]
    camera: str | None = None
    """Test this camera's 2D pose instead of the 3D one."""
    margin: float = 0.0
    """Hysteresis, mm (px in 2D): an episode lasts until the keypoint leaves the box grown by this
    much on every side."""

    def __post_init__(self) -> None:
        dims = 3 if self.camera is None else 2
        what = "[x, y, z] in mm (or give camera: NAME for a 2D box in px)" if dims == 3 else "[x, y] in px"
        _point("min", self.min, dims, what)
        _point("max", self.max, dims, what)
        for i, (lo, hi) in enumerate(zip(self.min, self.max, strict=True)):
            if lo > hi:
                raise ValueError(f"min[{i}]: {lo:g} is above max[{i}] = {hi:g} (expected min <= max)")
        _at_least("margin", self.margin, 0.0)


class InSphere(_Model):
    """``keypoint`` within ``radius_mm`` of ``center`` (3D only)."""

    keypoint: str
    center: list[float]
    """``[x, y, z]`` mm."""
    radius_mm: float
    margin: float = 0.0
    """Hysteresis, mm: an episode lasts until the keypoint is further than ``radius_mm + margin``."""

    def __post_init__(self) -> None:
        _point("center", self.center, 3, "[x, y, z] in mm")
        _above("radius_mm", self.radius_mm, 0.0, " mm")
        _at_least("margin", self.margin, 0.0)


class SpeedAbove(_Model):
    """``keypoint`` moving faster than ``mm_per_s`` (3D only; from consecutive Pose3D)."""

    keypoint: str
    mm_per_s: float
    margin: float = 0.0
    """Hysteresis, mm/s: an episode lasts until the speed drops to ``mm_per_s - margin``."""

    def __post_init__(self) -> None:
        _at_least("mm_per_s", self.mm_per_s, 0.0, " mm/s")
        _at_least("margin", self.margin, 0.0)


class DistanceBelow(_Model):
    """Keypoints ``a`` and ``b`` closer than ``mm`` (3D) or ``px`` (2D, with ``camera``)."""

    a: str
    b: str
    mm: float | None = None
    px: float | None = None
    camera: str | None = None
    margin: float = 0.0
    """Hysteresis, mm (px in 2D): an episode lasts until the distance reaches the limit + margin."""

    def __post_init__(self) -> None:
        _distinct(a=self.a, b=self.b)
        if self.camera is None:
            if self.px is not None:
                raise ValueError("px: a 2D limit needs camera: NAME (3D distances are in mm)")
            if self.mm is None:
                raise ValueError("mm: required (the 3D distance limit; or camera: NAME and px for 2D)")
            _above("mm", self.mm, 0.0, " mm")
        else:
            if self.mm is not None:
                raise ValueError(f"mm: a 2D distance (camera: {self.camera}) is in px, give px")
            if self.px is None:
                raise ValueError(f"px: required (the 2D distance limit on camera {self.camera})")
            _above("px", self.px, 0.0, " px")
        _at_least("margin", self.margin, 0.0)

    @property
    def limit(self) -> float:
        return self.mm if self.mm is not None else self.px  # type: ignore[return-value]


class AngleBetween(_Model):
    """The joint angle at ``b`` formed by ``a``-``b``-``c``, in ``[min_deg, max_deg]`` (edges
    included); 3D, or in one camera's image plane with ``camera``."""

    a: str
    b: str
    """The vertex."""
    c: str
    min_deg: float = 0.0
    max_deg: float = 180.0
    camera: str | None = None
    margin: float = 0.0
    """Hysteresis, deg: an episode lasts until the angle leaves the range widened by this much."""

    def __post_init__(self) -> None:
        _distinct(a=self.a, b=self.b, c=self.c)
        _finite("min_deg", self.min_deg)
        _finite("max_deg", self.max_deg)
        if not 0.0 <= self.min_deg <= 180.0:
            raise ValueError(f"min_deg: expected 0..180, got {self.min_deg!r}")
        if not 0.0 <= self.max_deg <= 180.0:
            raise ValueError(f"max_deg: expected 0..180, got {self.max_deg!r}")
        if self.min_deg > self.max_deg:
            raise ValueError(f"min_deg: {self.min_deg:g} is above max_deg = {self.max_deg:g}")
        _at_least("margin", self.margin, 0.0)


class ConfidenceAbove(_Model):
    """``keypoint``'s score ``>= min_score``: Pose3D.score in 3D, the camera's confidence in 2D."""

    keypoint: str
    min_score: float
    camera: str | None = None
    margin: float = 0.0
    """Hysteresis: an episode lasts until the score drops below ``min_score - margin``."""

    def __post_init__(self) -> None:
        _finite("min_score", self.min_score)
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score: expected 0..1, got {self.min_score!r}")
        _at_least("margin", self.margin, 0.0)


Leaf = InBox | InSphere | SpeedAbove | DistanceBelow | AngleBetween | ConfidenceAbove

_LEAF_KEYS = ("in_box", "in_sphere", "speed_above", "distance_below", "angle_between", "confidence_above")
_COMBINATOR_KEYS = ("all", "any", "not")
_KEY_ATTR = {**{k: k for k in _LEAF_KEYS}, "all": "all_", "any": "any_", "not": "not_"}


class Condition(_Model, omit_defaults=True):
    """Exactly one of a test (``in_box`` ...) or a combinator (``all``, ``any``, ``not``).

    In Python the combinators are ``all_``, ``any_`` and ``not_``:
    ``Condition(all_=[Condition(in_box=InBox(...)), Condition(not_=Condition(...))])``.
    """

    in_box: InBox | None = None
    in_sphere: InSphere | None = None
    speed_above: SpeedAbove | None = None
    distance_below: DistanceBelow | None = None
    angle_between: AngleBetween | None = None
    confidence_above: ConfidenceAbove | None = None
    all_: list[Condition] | None = msgspec.field(default=None, name="all")
    any_: list[Condition] | None = msgspec.field(default=None, name="any")
    not_: Condition | None = msgspec.field(default=None, name="not")

    def __post_init__(self) -> None:
        given = [key for key, attr in _KEY_ATTR.items() if getattr(self, attr) is not None]
        if len(given) != 1:
            keys = ", ".join(_KEY_ATTR)
            if not given:
                raise ValueError(f"expected one of {keys}; got none")
            raise ValueError(f"expected exactly one of {keys}; got {' and '.join(given)} "
                             f"(combine them under all: [...])")
        for key in ("all", "any"):
            if getattr(self, _KEY_ATTR[key]) == []:
                raise ValueError(f"{key}: expected at least one condition, got []")

    @property
    def key(self) -> str:
        """The YAML key this condition has (``in_box``, ..., ``all``, ``any``, ``not``)."""
        return next(key for key, attr in _KEY_ATTR.items() if getattr(self, attr) is not None)

    @property
    def value(self) -> Any:
        return getattr(self, _KEY_ATTR[self.key])


def _leaf_space(key: str, leaf: Leaf) -> str:
    """``3d`` or ``camera NAME``."""
    camera = getattr(leaf, "camera", None)
    return "3d" if camera is None else f"camera {camera}"


def iter_leaves(cond: Condition, path: str = "when") -> Iterator[tuple[str, str, Leaf]]:
    """Every test in ``cond``, depth first: ``(path, key, leaf)``, e.g.
    ``("when.all[0].in_box", "in_box", InBox(...))``."""
    key = cond.key
    value = cond.value
    if key in ("all", "any"):
        for i, sub in enumerate(value):
            yield from iter_leaves(sub, f"{path}.{key}[{i}]")
    elif key == "not":
        yield from iter_leaves(value, f"{path}.not")
    else:
        yield f"{path}.{key}", key, value


# -- actions ----------------------------------------------------------------------------------------


class TtlAction(_Model):
    """A pulse on the trigger daemon's closed-loop TTL output."""

    width_ms: float

    def __post_init__(self) -> None:
        _above("width_ms", self.width_ms, 0.0, " ms")


class ClipAction(_Model):
    """Save the cameras' frames from ``pre_s`` before the firing's pulse to ``post_s`` after it."""

    pre_s: float
    post_s: float

    def __post_init__(self) -> None:
        _at_least("pre_s", self.pre_s, 0.0, " s")
        _at_least("post_s", self.post_s, 0.0, " s")
        if self.pre_s + self.post_s == 0:
            raise ValueError("pre_s: a clip needs pre_s or post_s above 0, got both 0")


class EventAction(_Model):
    """Publish an Event (to the session's event log and any listener)."""

    name: str | None = None
    """The event's name; default: the rule's name."""


class Action(_Model, omit_defaults=True):
    """Exactly one of ``ttl``, ``clip``, ``event``."""

    ttl: TtlAction | None = None
    clip: ClipAction | None = None
    event: EventAction | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("ttl", "clip", "event") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"expected exactly one of ttl, clip, event; got {' and '.join(given) or 'none'}")

    @property
    def kind(self) -> Literal["ttl", "clip", "event"]:
        return "ttl" if self.ttl is not None else "clip" if self.clip is not None else "event"


# -- rules ------------------------------------------------------------------------------------------


class Rule(_Model):
    """A condition on the live pose and what to do when it holds (see the module's docstring)."""

    name: Name
    when: Condition
    actions: list[Action]
    hold_ms: float = 0.0
    """The condition must hold this long (on the pulses' clock) before the rule fires."""
    rearm_when_false_ms: float = 0.0
    """After a firing, the episode must be over for this long before the rule can fire again."""
    refractory_ms: float = 0.0
    """The least time between two firings."""

    def __post_init__(self) -> None:
        _at_least("hold_ms", self.hold_ms, 0.0, " ms")
        _at_least("rearm_when_false_ms", self.rearm_when_false_ms, 0.0, " ms")
        _at_least("refractory_ms", self.refractory_ms, 0.0, " ms")
        if not self.actions:
            raise ValueError("actions: expected at least one action (ttl, clip or event), got []")
        spaces: dict[str, str] = {}
        for path, key, leaf in iter_leaves(self.when):
            spaces.setdefault("3d" if _leaf_space(key, leaf) == "3d" else "2d", path)
        if len(spaces) == 2:
            raise ValueError(f"when: mixes 3D tests ({spaces['3d']}) with 2D ones ({spaces['2d']}, with "
                             f"camera); a rule runs on either the 3D or the 2D pose, split it in two")

    @property
    def kind(self) -> Literal["3d", "2d"]:
        """Which pose the rule runs on: ``3d`` (Pose3D) or ``2d`` (Pose2D)."""
        _, key, leaf = next(iter_leaves(self.when))
        return "3d" if _leaf_space(key, leaf) == "3d" else "2d"


def _rule_label(i: int, name: object) -> str:
    return f"rules[{i}] {name!r}" if isinstance(name, str) else f"rules[{i}]"


_AT = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>[^`]*)`$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]+)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<key>[^`]+)`$")
_FIELD_FIRST = re.compile(r"^(?P<field>[A-Za-z_]\w*(?:\[\d+\])*): (?P<rest>.*)$", re.S)
_INDEX_FIRST = re.compile(r"^\[(?P<i>\d+)\]\.?(?P<rest>.*)$")


def parse_rules(doc: str | bytes | list[Any] | None, source: str = "rules") -> list[Rule]:
    """Decode rules from YAML text or an already loaded list; raises :class:`RuleError` with one line
    naming the rule and the key path (``rules[1] 'reach': when.all[0].in_box.min[2]: ...``).
    ``None`` (an empty ``rules:``) is no rules."""
    if isinstance(doc, (str, bytes)):
        import yaml

        try:
            doc = yaml.safe_load(doc)
        except yaml.YAMLError as exc:
            raise RuleError(f"{source}: not valid YAML: {exc}") from None
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise RuleError(f"{source}: expected a list of rules, got {type(doc).__name__}")
    try:
        return msgspec.convert(doc, list[Rule], strict=True)
    except msgspec.ValidationError as exc:
        raise RuleError(_format_error(str(exc), doc, source)) from None


def _format_error(text: str, doc: list[Any], source: str) -> str:
    msg, path = text, ""
    if m := _AT.match(text):
        msg, path = m["msg"], m["path"]
    if m := _UNKNOWN.match(msg):
        path, msg = f"{path}.{m['key']}", "unknown key"
    elif m := _MISSING.match(msg):
        path, msg = f"{path}.{m['key']}", "required key is missing"
    elif m := _FIELD_FIRST.match(msg):  # a __post_init__ message names its field first
        path, msg = f"{path}.{m['field']}", m["rest"]
    else:
        msg = re.sub(r"^Expected `(\w+)`", lambda g: f"expected {g[1]}", msg)
    m = _INDEX_FIRST.match(path)
    if not m:
        return f"{source}: {path or '(top level)'}: {msg}"
    i = int(m["i"])
    item = doc[i] if i < len(doc) else None
    label = _rule_label(i, item.get("name") if isinstance(item, dict) else None)
    if source != "rules":
        label = f"{source}: {label}"
    return f"{label}: {m['rest'] or '(the rule)'}: {msg}"


def validate_rules(rules: Sequence[Rule], keypoints: Sequence[str], cameras: Sequence[str], has_3d: bool,
                   *, max_clip_pre_s: float | None = None) -> None:
    """Check rules against a rig: keypoints of the model, cameras of the rig, 3D only with a
    calibration (``has_3d``: live 3D is on), unique names, and (with ``max_clip_pre_s``, the ring
    buffer's history) clips it can serve. Returns nothing or raises :class:`RuleError` naming the
    rule and the field."""
    kp_set = set(keypoints)
    cam_set = set(cameras)
    names: dict[str, int] = {}
    for i, rule in enumerate(rules):
        label = _rule_label(i, rule.name)
        if rule.name in names:
            raise RuleError(f"{label}: name: repeats the name of rules[{names[rule.name]}]; rule names "
                            f"must be unique")
        names[rule.name] = i
        for path, key, leaf in iter_leaves(rule.when):
            camera = getattr(leaf, "camera", None)
            if camera is not None and camera not in cam_set:
                raise RuleError(f"{label}: {path}.camera: {camera!r} is not a camera of the rig "
                                f"(cameras: {', '.join(cameras)})")
            if camera is None and not has_3d:
                hint = (f"{key} has no 2D form" if key in ("in_sphere", "speed_above")
                        else "or give camera: NAME to test one camera's 2D pose")
                raise RuleError(f"{label}: {path}: a 3D test needs live 3D (a calibration in the rig and "
                                f"pose.triangulation enabled); {hint}")
            for field in ("keypoint", "a", "b", "c"):
                kp = getattr(leaf, field, None)
                if kp is not None and kp not in kp_set:
                    raise RuleError(f"{label}: {path}.{field}: {kp!r} is not a keypoint of the model "
                                    f"(keypoints: {', '.join(keypoints)})")
        for j, action in enumerate(rule.actions):
            if max_clip_pre_s is not None and action.clip is not None and action.clip.pre_s > max_clip_pre_s:
                raise RuleError(f"{label}: actions[{j}].clip.pre_s: {action.clip.pre_s:g} s is more "
                                f"history than the ring buffer keeps ({max_clip_pre_s:g} s)")


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
        for i, rule in enumerate(rules):
            kind = rule.kind
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
        self._by_name = {s.rule.name: s for states in self._states.values() for s in states}

    def _compile(self, cond: Condition, kind: str, ix: dict[str, int], margins: list[float]) -> Any:
        key, value = cond.key, cond.value
        if key == "all":
            return _All([self._compile(c, kind, ix, margins) for c in value])
        if key == "any":
            return _Any([self._compile(c, kind, ix, margins) for c in value])
        if key == "not":
            return _Not(self._compile(value, kind, ix, margins))
        margins.append(value.margin)
        if kind == "3d":
            measure3, strict = _measure_3d(key, value, ix)
            self._measures3.append(measure3)
            return _Test(len(self._measures3) - 1, value.margin, strict)
        measure2, strict = _measure_2d(key, value, ix, self.min_score_2d)
        self._measures2.append(measure2)
        return _Test(len(self._measures2) - 1, value.margin, strict)

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
