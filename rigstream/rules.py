"""Closed-loop rules as typed config: conditions on the live pose and the actions they fire.

A rig file lists its rules under ``rules:`` (decoded with the rest of the rig into these strict
models: unknown keys and bad values are errors naming the rule and the key path). The engine that
runs them on the live pose is :mod:`rigstream.inference.rules`; its docstring describes the
conditions' semantics (missing data, hysteresis, hold, re-arm, refractory). The motivating case,
"save 5 s before and after every time the rat's paw reaches the knob"::

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
- ``input: {name, state?}``: the apparatus input ``name`` (``inputs:`` in the rig file) is ``on``
  (the default) or ``off`` at the pose's pulse; ``input_edge: {name, within_ms, edge?}``: it had an
  ``on`` (or ``off``) edge in the ``within_ms`` before the pulse. Input tests combine with pose tests
  of either kind (a rule needs at least one pose test).
- ``all: [...]``, ``any: [...]``, ``not: {...}``: combinators, nested freely.

Instead of ``when``, a rule can fire on an input's edges: ``on_input: {name, edge?}`` fires at every
``on`` (or ``off``) edge, at most once per ``refractory_ms``, on the frame the edge falls in (the
seed lab's "the rat touches the knob -> 5 s before and 2 s after")::

    - name: touch
      on_input: {name: knob}
      actions: [{clip: {pre_s: 5, post_s: 2}}, {output: {name: reward, width_ms: 40}}]

Actions: ``ttl: {width_ms}`` (the trigger's TTL line), ``clip: {pre_s, post_s}``, ``event: {name?}``,
``output: {name, width_ms, count?, rate_hz?}`` (a pulse, or a train of ``count`` at ``rate_hz``, on a
named output line of the rig: a reward valve, an LED, a laser).

:func:`parse_rules` decodes rules with one-line errors; :func:`validate_rules` checks them against
a rig's keypoints and cameras.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import msgspec

from rigstream.basics import InputError, Name

__all__ = [
    "Action",
    "AngleBetween",
    "ClipAction",
    "Condition",
    "ConfidenceAbove",
    "DistanceBelow",
    "EventAction",
    "InBox",
    "InSphere",
    "Rule",
    "RuleError",
    "SpeedAbove",
    "TtlAction",
    "iter_leaves",
    "parse_rules",
    "validate_rules",
]



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


class InputIs(_Model):
    """The apparatus input ``name`` is ``on`` (active: touched, pressed) or ``off`` at the pose's
    pulse, as its last edge at or before that pulse left it."""

    name: Name
    state: Literal["on", "off"] = "on"


class InputEdgeWithin(_Model):
    """The input ``name`` had an ``edge`` (``on``: it became active; ``off``: released) in the
    ``within_ms`` before the pose's pulse (the pulse included)."""

    name: Name
    within_ms: float
    edge: Literal["on", "off"] = "on"

    def __post_init__(self) -> None:
        _above("within_ms", self.within_ms, 0.0, " ms")


Leaf = (InBox | InSphere | SpeedAbove | DistanceBelow | AngleBetween | ConfidenceAbove | InputIs
        | InputEdgeWithin)

_LEAF_KEYS = ("in_box", "in_sphere", "speed_above", "distance_below", "angle_between", "confidence_above",
              "input", "input_edge")
_INPUT_KEYS = ("input", "input_edge")
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
    input: InputIs | None = None
    input_edge: InputEdgeWithin | None = None
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
    """``3d``, ``camera NAME``, or ``input`` (a test of the apparatus, on either pose)."""
    if key in _INPUT_KEYS:
        return "input"
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


class OutputAction(_Model):
    """A pulse (``count`` 1) or a train (``count`` pulses at ``rate_hz``) on a named output line
    of the rig (``outputs:``), driven by the trigger daemon."""

    name: Name
    width_ms: float
    count: int = 1
    rate_hz: float | None = None

    def __post_init__(self) -> None:
        _above("width_ms", self.width_ms, 0.0, " ms")
        if self.count < 1:
            raise ValueError(f"count: expected at least 1, got {self.count}")
        if self.count > 1:
            if self.rate_hz is None:
                raise ValueError(f"rate_hz: a train of {self.count} pulses needs a rate")
            _above("rate_hz", self.rate_hz, 0.0, " Hz")
            if self.width_ms >= 1000.0 / self.rate_hz:
                raise ValueError(f"width_ms: {self.width_ms:g} ms does not fit the train's period "
                                 f"({1000.0 / self.rate_hz:g} ms at {self.rate_hz:g} Hz)")


_ACTION_KEYS = ("ttl", "clip", "event", "output")


class Action(_Model, omit_defaults=True):
    """Exactly one of ``ttl``, ``clip``, ``event``, ``output``."""

    ttl: TtlAction | None = None
    clip: ClipAction | None = None
    event: EventAction | None = None
    output: OutputAction | None = None

    def __post_init__(self) -> None:
        given = [k for k in _ACTION_KEYS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"expected exactly one of {', '.join(_ACTION_KEYS)}; got "
                             f"{' and '.join(given) or 'none'}")

    @property
    def kind(self) -> Literal["ttl", "clip", "event", "output"]:
        return next(k for k in _ACTION_KEYS if getattr(self, k) is not None)  # type: ignore[return-value]


# -- rules ------------------------------------------------------------------------------------------


class OnInput(_Model):
    """Fire on every ``edge`` of the apparatus input ``name`` (``on``: it became active)."""

    name: Name
    edge: Literal["on", "off"] = "on"


class Rule(_Model):
    """A condition on the live pose (``when``), or an edge of an apparatus input (``on_input``),
    and what to do when it holds (see the module's docstring)."""

    name: Name
    actions: list[Action]
    when: Condition | None = None
    on_input: OnInput | None = None
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
            raise ValueError(f"actions: expected at least one action ({', '.join(_ACTION_KEYS)}), got []")
        if (self.when is None) == (self.on_input is None):
            raise ValueError("when: a rule has either when (a condition on the pose) or on_input (an "
                             "input's edge), " + ("not both" if self.when is not None else "got neither"))
        if self.when is None:
            return
        spaces: dict[str, str] = {}
        for path, key, leaf in iter_leaves(self.when):
            space = _leaf_space(key, leaf)
            if space != "input":
                spaces.setdefault("3d" if space == "3d" else "2d", path)
        if len(spaces) == 2:
            raise ValueError(f"when: mixes 3D tests ({spaces['3d']}) with 2D ones ({spaces['2d']}, with "
                             f"camera); a rule runs on either the 3D or the 2D pose, split it in two")
        if not spaces:
            raise ValueError("when: tests only inputs; give it a pose test too, or fire on the input "
                             "itself with on_input")

    @property
    def kind(self) -> Literal["3d", "2d", "input"]:
        """What the rule runs on: ``3d`` (Pose3D), ``2d`` (Pose2D) or ``input`` (edges)."""
        if self.when is None:
            return "input"
        space = next(_leaf_space(key, leaf) for _, key, leaf in iter_leaves(self.when)
                     if key not in _INPUT_KEYS)
        return "3d" if space == "3d" else "2d"


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
                   *, max_clip_pre_s: float | None = None, inputs: Sequence[str] = (),
                   outputs: Sequence[str] = ()) -> None:
    """Check rules against a rig: keypoints of the model, cameras of the rig, 3D only with a
    calibration (``has_3d``: live 3D is on), unique names, and (with ``max_clip_pre_s``, the ring
    buffer's history) clips it can serve, inputs and outputs the rig has. Returns nothing or
    raises :class:`RuleError` naming the rule and the field."""
    kp_set = set(keypoints)
    cam_set = set(cameras)
    names: dict[str, int] = {}
    for i, rule in enumerate(rules):
        label = _rule_label(i, rule.name)
        if rule.name in names:
            raise RuleError(f"{label}: name: repeats the name of rules[{names[rule.name]}]; rule names "
                            f"must be unique")
        names[rule.name] = i
        if rule.on_input is not None and rule.on_input.name not in inputs:
            raise RuleError(f"{label}: on_input.name: {rule.on_input.name!r} is not an input of the rig "
                            f"(inputs: {', '.join(inputs) or 'none'})")
        for path, key, leaf in iter_leaves(rule.when) if rule.when is not None else ():
            if key in _INPUT_KEYS:
                if leaf.name not in inputs:
                    raise RuleError(f"{label}: {path}.name: {leaf.name!r} is not an input of the rig "
                                    f"(inputs: {', '.join(inputs) or 'none'})")
                continue
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
            if action.output is not None and action.output.name not in outputs:
                raise RuleError(f"{label}: actions[{j}].output.name: {action.output.name!r} is not an output "
                                f"of the rig (outputs: {', '.join(outputs) or 'none'})")
            if max_clip_pre_s is not None and action.clip is not None and action.clip.pre_s > max_clip_pre_s:
                raise RuleError(f"{label}: actions[{j}].clip.pre_s: {action.clip.pre_s:g} s is more "
                                f"history than the ring buffer keeps ({max_clip_pre_s:g} s)")
