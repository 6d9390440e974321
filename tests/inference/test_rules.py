"""Closed-loop rules: every test kind (true, false, missing), combinators, hold, refractory, re-arm,
hysteresis, 2D on a named camera, ordering, validation messages, YAML decoding, the knob reach."""

from __future__ import annotations

import math
import re

import msgspec
import pytest
import yaml

from rigstream import protocol
from rigstream import rules as rule_models
from rigstream.config import InputError
from rigstream.inference.rules import (
    Action,
    ClipAction,
    Condition,
    Firing,
    InBox,
    Rule,
    RuleEngine,
    RuleError,
    bench_rules,
    iter_leaves,
    parse_rules,
    validate_rules,
)
from rigstream.protocol import Pose2D, Pose3D

KEYPOINTS = ["nose", "paw", "elbow", "shoulder", "tail"]
CAMERAS = ["top", "side"]
FRAME_NS = 5_000_000  # 200 Hz
T0_NS = 1_000_000_000
NAN = math.nan


def pose3d(i: int, points: dict[str, tuple[float, float, float]] | None = None,
           scores: dict[str, float] | None = None, t_ns: int | None = None) -> Pose3D:
    """Pose of pulse ``i`` (at ``T0 + i * 5 ms`` unless ``t_ns``); unlisted keypoints are NaN."""
    points = points or {}
    xyz = [list(points.get(kp, (NAN, NAN, NAN))) for kp in KEYPOINTS]
    score = [(scores or {}).get(kp, 0.9 if kp in points else 0.0) for kp in KEYPOINTS]
    t_pi_ns = T0_NS + i * FRAME_NS if t_ns is None else t_ns
    return Pose3D(seq=i, frameset_seq=i, trigger_index=i, t_pi_ns=t_pi_ns, t_host_ns=0, keypoints=KEYPOINTS,
                  xyz=xyz, error=[0.0] * len(KEYPOINTS),
                  ncams=[2 if kp in points else 0 for kp in KEYPOINTS], score=score)


def pose2d(i: int, views: dict[str, dict[str, tuple[float, float, float]]]) -> Pose2D:
    """Pose of pulse ``i``; per camera {keypoint: (x, y, score)}, unlisted keypoints (0, 0, 0)."""
    rows = {cam: [list(pts.get(kp, (0.0, 0.0, 0.0))) for kp in KEYPOINTS] for cam, pts in views.items()}
    return Pose2D(seq=i, frameset_seq=i, trigger_index=i, t_pi_ns=T0_NS + i * FRAME_NS, t_host_ns=0,
                  model="test", keypoints=KEYPOINTS, views=rows,
                  missing=[c for c in CAMERAS if c not in views])


def rule(when: dict, name: str = "r", **extra: object) -> Rule:
    doc = {"name": name, "when": when, "actions": [{"event": {}}], **extra}
    return msgspec.convert(doc, Rule, strict=True)


def truth(when: dict, *poses: Pose3D | Pose2D, **engine_kw: object) -> bool | None:
    """Whether ``when`` holds at the last of ``poses``: True, False, or None when it is unknown
    (neither ``when`` nor ``not: when`` holds)."""
    engine = RuleEngine([rule(when, "yes"), rule({"not": when}, "no")], KEYPOINTS,
                        **engine_kw)  # type: ignore[arg-type]
    for p in poses:
        engine.update(p)
    status = engine.status()
    assert not (status["yes"].active and status["no"].active)
    return True if status["yes"].active else False if status["no"].active else None


def run(engine: RuleEngine, poses: list[Pose3D] | list[Pose2D]) -> list[Firing]:
    return [f for p in poses for f in engine.update(p)]


# -- every test kind ---------------------------------------------------------------------------------

BOX = {"in_box": {"keypoint": "paw", "min": [0, 0, 0], "max": [10, 20, 30]}}


@pytest.mark.parametrize(("point", "expected"), [
    ((5, 5, 5), True), ((0, 20, 30), True),  # edges included
    ((-0.1, 5, 5), False), ((5, 5, 30.1), False), ((NAN, 5, 5), None),
])
def test_in_box(point, expected):
    assert truth(BOX, pose3d(0, {"paw": point})) is expected


def test_in_sphere():
    cond = {"in_sphere": {"keypoint": "paw", "center": [10, 0, 0], "radius_mm": 5}}
    assert truth(cond, pose3d(0, {"paw": (13, 4, 0)})) is True
    assert truth(cond, pose3d(0, {"paw": (10, 0, 5.01)})) is False
    assert truth(cond, pose3d(0, {"nose": (10, 0, 0)})) is None  # paw missing


def test_speed_from_a_trajectory():
    cond = {"speed_above": {"keypoint": "paw", "mm_per_s": 400}}
    # 3 mm per 5 ms frame = 600 mm/s; 1 mm per frame = 200 mm/s.
    fast = [pose3d(i, {"paw": (3.0 * i, 0, 0)}) for i in range(3)]
    slow = [pose3d(i, {"paw": (0, 1.0 * i, 0)}) for i in range(3)]
    assert truth(cond, *fast) is True
    assert truth(cond, *slow) is False
    assert truth(cond, fast[0]) is None  # the first sample has no speed
    gap = [pose3d(0, {}), pose3d(1, {"paw": (0, 0, 0)})]
    assert truth(cond, *gap) is None  # no previous point
    # Speed over the pulses' time, not the poses' count: a skipped frame set halves it.
    skipped = [pose3d(0, {"paw": (0, 0, 0)}), pose3d(2, {"paw": (3, 0, 0)})]
    assert truth(cond, *skipped) is False  # 3 mm in 10 ms = 300 mm/s
    engine = RuleEngine([rule(cond)], KEYPOINTS)
    firings = run(engine, fast + [pose3d(3 + i, {"paw": (6.0, 0, 0)}) for i in range(2)]
                  + [pose3d(5 + i, {"paw": (6.0 - 3 * i, 0, 0)}) for i in range(1, 3)])
    # Re-armed once the paw stopped; pulse 6 is 3 mm from pulse 4's point in 10 ms (300 mm/s).
    assert [f.trigger_index for f in firings] == [1, 7]


def test_distance_below():
    cond = {"distance_below": {"a": "nose", "b": "paw", "mm": 5}}
    assert truth(cond, pose3d(0, {"nose": (0, 0, 0), "paw": (3, 0, 3.9)})) is True
    assert truth(cond, pose3d(0, {"nose": (0, 0, 0), "paw": (3, 0, 4)})) is False  # 5 mm is not below
    assert truth(cond, pose3d(0, {"nose": (0, 0, 0)})) is None


@pytest.mark.parametrize(("c", "expected"), [
    ((0, 10, 0), True),   # 90 deg at the elbow
    ((-10, 0, 0), False),  # 180 deg: a straight arm
    ((10, 10, 0), False),  # 45 deg
    ((0, 0, 0), None),    # c on the vertex: no angle
    ((NAN, 0, 0), None),
])
def test_angle_between(c, expected):
    cond = {"angle_between": {"a": "paw", "b": "elbow", "c": "shoulder", "min_deg": 80, "max_deg": 100}}
    p = pose3d(0, {"paw": (10, 0, 0), "elbow": (0, 0, 0), "shoulder": c})
    assert truth(cond, p) is expected


def test_confidence_above():
    cond = {"confidence_above": {"keypoint": "paw", "min_score": 0.6}}
    assert truth(cond, pose3d(0, {"paw": (0, 0, 0)}, {"paw": 0.6})) is True
    assert truth(cond, pose3d(0, {"paw": (0, 0, 0)}, {"paw": 0.59})) is False
    assert truth(cond, pose3d(0, {"paw": (0, 0, 0)}, {"paw": NAN})) is None


def test_2d_tests_on_a_named_camera():
    box = {"in_box": {"keypoint": "paw", "camera": "side", "min": [100, 50], "max": [200, 80]}}
    inside = {"paw": (150.0, 60.0, 0.9)}
    outside = {"paw": (150.0, 90.0, 0.9)}
    assert truth(box, pose2d(0, {"side": inside, "top": outside})) is True
    assert truth(box, pose2d(0, {"side": outside, "top": inside})) is False
    assert truth(box, pose2d(0, {"top": inside})) is None  # side absent from the frame set
    # A point scored below min_score_2d is missing.
    low = {"paw": (150.0, 60.0, 0.2)}
    assert truth(box, pose2d(0, {"side": low}), min_score_2d=0.3) is None
    assert truth(box, pose2d(0, {"side": low})) is True

    dist = {"distance_below": {"a": "nose", "b": "paw", "px": 10, "camera": "top"}}
    assert truth(dist, pose2d(0, {"top": {"nose": (0, 0, 1), "paw": (6, 7.9, 1)}})) is True
    assert truth(dist, pose2d(0, {"top": {"nose": (0, 0, 1), "paw": (6, 8, 1)}})) is False
    angle = {"angle_between": {"a": "paw", "b": "elbow", "c": "shoulder", "max_deg": 60, "camera": "top"}}
    bent = {"paw": (10, 0, 1), "elbow": (0, 0, 1), "shoulder": (10, 10, 1)}  # 45 deg
    straight = {"paw": (10, 0, 1), "elbow": (0, 0, 1), "shoulder": (-10, 0, 1)}
    assert truth(angle, pose2d(0, {"top": bent})) is True
    assert truth(angle, pose2d(0, {"top": straight})) is False
    conf = {"confidence_above": {"keypoint": "paw", "min_score": 0.5, "camera": "side"}}
    assert truth(conf, pose2d(0, {"side": {"paw": (0, 0, 0.5)}})) is True
    assert truth(conf, pose2d(0, {"side": {"paw": (0, 0, 0.4)}})) is False
    assert truth(conf, pose2d(0, {"top": {"paw": (0, 0, 0.9)}})) is None


def test_2d_and_3d_rules_each_run_on_their_own_pose():
    r3 = rule(BOX)
    r2 = msgspec.convert({"name": "r2", "when": {"confidence_above": {"keypoint": "paw", "min_score": 0.5,
                                                                      "camera": "top"}},
                          "actions": [{"ttl": {"width_ms": 2}}]}, Rule, strict=True)
    engine = RuleEngine([r3, r2], KEYPOINTS)
    assert [f.rule for f in engine.update(pose3d(0, {"paw": (5, 5, 5)}))] == ["r"]
    # The Pose2D of the same pulse is not "repeated": each kind has its own order.
    assert [f.rule for f in engine.update(pose2d(0, {"top": {"paw": (1, 1, 0.9)}}))] == ["r2"]
    assert engine.counters["poses_3d"] == engine.counters["poses_2d"] == 1


# -- combinators ----------------------------------------------------------------------------------

IN = {"paw": (5.0, 5.0, 5.0), "nose": (0.0, 0.0, 0.0)}
NEAR = {"distance_below": {"a": "nose", "b": "paw", "mm": 100}}
FAR = {"distance_below": {"a": "nose", "b": "paw", "mm": 1}}
UNKNOWN = {"in_box": {"keypoint": "tail", "min": [0, 0, 0], "max": [1, 1, 1]}}


def test_all_any_not_and_nesting():
    p = pose3d(0, IN)
    assert truth({"all": [BOX, NEAR]}, p) is True
    assert truth({"all": [BOX, FAR]}, p) is False
    assert truth({"any": [FAR, BOX]}, p) is True
    assert truth({"any": [FAR, {"not": BOX}]}, p) is False
    assert truth({"not": {"not": BOX}}, p) is True
    nested = {"any": [{"all": [FAR, BOX]}, {"all": [{"not": FAR}, {"any": [{"not": BOX}, NEAR]}]}]}
    assert truth(nested, p) is True
    assert truth({"all": [nested, {"not": NEAR}]}, p) is False


def test_missing_keypoints_are_unknown_and_not_does_not_flip_them():
    p = pose3d(0, IN)  # tail missing
    assert truth(UNKNOWN, p) is None
    assert not RuleEngine([rule({"not": UNKNOWN})], KEYPOINTS).update(p)  # lost never makes `not` true
    assert truth({"all": [BOX, UNKNOWN]}, p) is None
    assert truth({"all": [FAR, UNKNOWN]}, p) is False  # false whatever the tail does
    assert truth({"any": [BOX, UNKNOWN]}, p) is True
    assert truth({"any": [FAR, UNKNOWN]}, p) is None


# -- timing: hold, blips, refractory, re-arm, hysteresis ---------------------------------------------


def box_track(inside: list[bool], start: int = 0) -> list[Pose3D]:
    return [pose3d(start + i, {"paw": (5, 5, 5) if flag else (50, 5, 5)}) for i, flag in enumerate(inside)]


def test_hold_ms_fires_after_being_true_long_enough():
    engine = RuleEngine([rule(BOX, hold_ms=20)], KEYPOINTS)
    firings = run(engine, box_track([False] * 3 + [True] * 8))
    # True from pulse 3 (t = 15 ms); 20 ms later is pulse 7.
    assert [f.trigger_index for f in firings] == [7]
    assert firings[0].t_pi_ns - (T0_NS + 3 * FRAME_NS) == 20_000_000


def test_hold_ms_is_measured_on_t_pi_ns_not_on_pose_count():
    engine = RuleEngine([rule(BOX, hold_ms=20)], KEYPOINTS)
    # Two poses 25 ms apart (frame sets skipped between them) are enough.
    assert [f.trigger_index for f in run(engine, [pose3d(0, {"paw": (5, 5, 5)}),
                                                   pose3d(5, {"paw": (5, 5, 5)})])] == [5]


def test_a_single_frame_blip_does_not_fire():
    engine = RuleEngine([rule(BOX, hold_ms=10)], KEYPOINTS)
    assert run(engine, box_track([False, True, False, True, False, True, True, False])) == []
    # A dropout (NaN) also breaks the hold.
    track = [*box_track([True, True]), pose3d(2), *box_track([True, True], start=3)]
    assert run(RuleEngine([rule(BOX, hold_ms=10)], KEYPOINTS), track) == []


def test_stays_in_fires_once_leaves_and_comes_back_fires_again():
    engine = RuleEngine([rule(BOX)], KEYPOINTS)
    firings = run(engine, box_track([True] * 10 + [False] * 2 + [True] * 5))
    assert [f.trigger_index for f in firings] == [0, 12]
    st = engine.status()["r"]
    assert (st.fired, st.last_trigger_index, st.armed, st.active) == (2, 12, False, True)


def test_rearm_when_false_ms_debounces_short_exits():
    engine = RuleEngine([rule(BOX, rearm_when_false_ms=15)], KEYPOINTS)
    # Measured as hold_ms is, from the first pose out to a pose still out: 3 poses out span 10 ms
    # (not re-armed), 4 span 15 ms (re-armed).
    firings = run(engine, box_track([True] * 3 + [False] * 3 + [True] * 3 + [False] * 4 + [True] * 2))
    assert [f.trigger_index for f in firings] == [0, 13]


def test_refractory_ms_spaces_firings():
    engine = RuleEngine([rule(BOX, refractory_ms=30)], KEYPOINTS)
    # In and out every pose: each entry would fire, refractory keeps 30 ms between firings.
    firings = run(engine, box_track([True, False] * 10))
    assert [f.trigger_index for f in firings] == [0, 6, 12, 18]
    # An armed episode that qualifies during the period fires at its first pose after it.
    engine = RuleEngine([rule(BOX, refractory_ms=30)], KEYPOINTS)
    firings = run(engine, box_track([True, False] + [True] * 8))
    assert [f.trigger_index for f in firings] == [0, 6]


def test_margin_is_hysteresis():
    cond = {"in_box": {"keypoint": "paw", "min": [0, 0, 0], "max": [10, 10, 10], "margin": 2}}
    engine = RuleEngine([rule(cond)], KEYPOINTS)
    # Jitter across the edge (x 9.5 .. 11.5) stays within the grown box: one episode, one firing.
    xs = [9.5, 10.5, 11.5, 9.8, 11.9, 10.2, 12.5, 10.5, 9.0]
    firings = run(engine, [pose3d(i, {"paw": (x, 5, 5)}) for i, x in enumerate(xs)])
    # Out past the margin at x 12.5 (pulse 6); 10.5 is not in the box, 9.0 is: fires again.
    assert [f.trigger_index for f in firings] == [0, 8]


def test_margin_under_not_tightens():
    cond = {"not": {"in_box": {"keypoint": "paw", "min": [0, 0, 0], "max": [10, 10, 10], "margin": 2}}}
    engine = RuleEngine([rule(cond)], KEYPOINTS)
    # "Out of the box": starts outside the box, lasts until the paw is 2 mm deep inside.
    xs = [10.5, 9.5, 8.5, 7.9, 10.5]
    firings = run(engine, [pose3d(i, {"paw": (x, 5, 5)}) for i, x in enumerate(xs)])
    assert [f.trigger_index for f in firings] == [0, 4]


def test_sphere_speed_distance_angle_confidence_margins():
    cases = [  # (test, value that enters, value inside the margin, value past it)
        ({"in_sphere": {"keypoint": "paw", "center": [0, 0, 0], "radius_mm": 10, "margin": 2}},
         lambda v: {"paw": (v, 0, 0)}, 9, 11.5, 12.5),
        ({"distance_below": {"a": "nose", "b": "paw", "mm": 10, "margin": 2}},
         lambda v: {"nose": (0, 0, 0), "paw": (0, v, 0)}, 9, 11.5, 12.5),
        ({"angle_between": {"a": "paw", "b": "elbow", "c": "shoulder", "max_deg": 45, "margin": 5}},
         lambda v: {"paw": (1, 0, 0), "elbow": (0, 0, 0),
                    "shoulder": (math.cos(math.radians(v)), math.sin(math.radians(v)), 0)}, 40, 48, 51),
    ]
    for cond, points, enter, within, past in cases:
        engine = RuleEngine([rule(cond)], KEYPOINTS)
        values = [enter, within, enter, within, past, enter]
        firings = run(engine, [pose3d(i, points(v)) for i, v in enumerate(values)])
        assert [f.trigger_index for f in firings] == [0, 5], cond


# -- ordering and status ------------------------------------------------------------------------------


def test_out_of_order_and_repeated_poses_are_ignored_and_counted():
    engine = RuleEngine([rule(BOX)], KEYPOINTS)
    inside = {"paw": (5, 5, 5)}
    assert engine.update(pose3d(5, inside))
    assert engine.update(pose3d(5, {"paw": (50, 5, 5)})) == []  # repeated: not an exit
    assert engine.update(pose3d(3, {"paw": (50, 5, 5)})) == []  # older
    assert engine.update(pose3d(6, inside)) == []  # still the same episode
    untimed = pose3d(7, inside, t_ns=-1)
    assert engine.update(untimed) == []
    backwards = pose3d(8, inside, t_ns=T0_NS)
    assert engine.update(backwards) == []
    other = Pose3D(seq=9, frameset_seq=9, trigger_index=9, t_pi_ns=T0_NS + 9 * FRAME_NS, t_host_ns=0,
                   keypoints=["a"], xyz=[[0, 0, 0]], error=[0], ncams=[2], score=[1])
    assert engine.update(other) == []
    assert dict(engine.counters) == {"poses_3d": 2, "repeated": 1, "out_of_order": 1, "untimed": 1,
                                     "time_backwards": 1, "keypoint_mismatch": 1}
    assert engine.status()["r"].fired == 1
    engine.reset()
    assert engine.update(pose3d(0, inside))
    assert engine.status()["r"].last_trigger_index == 0


def test_firing_carries_the_pulse_actions_and_an_event():
    r = parse_rules("""
- name: zap
  when: {in_box: {keypoint: paw, min: [0, 0, 0], max: [10, 10, 10]}}
  actions: [{ttl: {width_ms: 2.5}}, {event: {name: paw_in}}]
""")[0]
    engine = RuleEngine([r], KEYPOINTS)
    (firing,) = engine.update(pose3d(4, {"paw": (5, 5, 5)}))
    assert (firing.rule, firing.trigger_index, firing.t_pi_ns) == ("zap", 4, T0_NS + 4 * FRAME_NS)
    assert [a.kind for a in firing.actions] == ["ttl", "event"]
    assert firing.actions[0].ttl.width_ms == 2.5
    assert firing.t_eval_ns > 0
    event = protocol.decode(protocol.encode(firing.event()), protocol.Event)
    assert (event.name, event.source, event.trigger_index) == ("paw_in", "rules", 4)
    assert event.data["actions"] == [{"ttl": {"width_ms": 2.5}}, {"event": {"name": "paw_in"}}]


# -- the motivating case: save 5 s before and after every reach to the knob --------------------------

KNOB_MM = (12.0, -40.0, 85.0)


def _docstring_rules() -> list[Rule]:
    """The example in the rule models' docstring (rigstream.rules), where a rig file's author reads it."""
    doc = rule_models.__doc__ or ""
    block = doc.split("rules:\n", 1)[1].split("\n\n", 1)[0]
    return parse_rules(yaml.safe_load("rules:\n" + block)["rules"])


def test_docstring_example_decodes():
    (reach,) = _docstring_rules()
    assert reach.name == "reach"
    assert reach.actions[0].clip == ClipAction(pre_s=5, post_s=5)
    validate_rules([reach], KEYPOINTS, CAMERAS, has_3d=True)


def test_paw_reaching_the_knob_fires_one_clip_per_reach():
    (reach,) = _docstring_rules()
    engine = RuleEngine([reach], KEYPOINTS)
    rest = (12.0, -40.0, 40.0)  # 45 mm below the knob
    poses: list[Pose3D] = []
    touches: list[range] = []
    i = 0
    for n_reach in range(3):
        # Rest 1.25 s (longer than the refractory 1 s), reach up over 100 ms, touch the knob for
        # 60-120 ms (1.5 mm jitter; a tracking dropout on the second reach), then pull back.
        for _ in range(250):
            poses.append(pose3d(i, {"paw": rest}))
            i += 1
        for s in range(20):
            z = rest[2] + (KNOB_MM[2] - 3.0 - rest[2]) * (s + 1) / 20
            poses.append(pose3d(i, {"paw": (KNOB_MM[0], KNOB_MM[1], z)}))
            i += 1
        touches.append(range(i - 3, i + 12 + 6 * n_reach))  # from 3 mm in: the sphere's radius is 8
        for s in range(12 + 6 * n_reach):
            jitter = 1.5 * math.sin(s * 1.7)
            paw = (KNOB_MM[0] + jitter, KNOB_MM[1] - jitter, KNOB_MM[2] - 7.0 + jitter)  # edge: 7-9.5 mm
            poses.append(pose3d(i, {} if (n_reach == 1 and s == 5) else {"paw": paw}))
            i += 1
        for s in range(20):
            z = KNOB_MM[2] - 3.0 - (KNOB_MM[2] - 3.0 - rest[2]) * (s + 1) / 20
            poses.append(pose3d(i, {"paw": (KNOB_MM[0], KNOB_MM[1], z)}))
            i += 1
    firings = run(engine, poses)
    assert len(firings) == 3
    for f, touch in zip(firings, touches, strict=True):  # one per reach, 10 ms into it
        assert f.trigger_index in touch
        assert touch.start + 2 <= f.trigger_index <= touch.start + 3
    for f in firings:
        assert [a.clip for a in f.actions if a.clip] == [ClipAction(pre_s=5.0, post_s=5.0)]
        assert [a.kind for a in f.actions] == ["clip", "event"]
    assert engine.status()["reach"].fired == 3


# -- validation ----------------------------------------------------------------------------------------


def _rules(text: str) -> list[Rule]:
    return msgspec.convert(yaml.safe_load(text), list[Rule], strict=True)


VALID = """
- name: rear
  when: {in_box: {keypoint: nose, min: [0, 0, 50], max: [100, 100, 200]}}
  actions: [{event: {}}]
- name: reach
  when:
    all:
      - in_box: {keypoint: paw, min: [0, 0, 0], max: [1, 1, 1]}
      - confidence_above: {keypoint: paw, min_score: 0.5}
  actions: [{ttl: {width_ms: 5}}]
"""


def test_validate_rules_accepts_good_rules():
    validate_rules(_rules(VALID), KEYPOINTS, CAMERAS, has_3d=True)


@pytest.mark.parametrize(("edit", "has_3d", "message"), [
    (lambda d: d[1]["when"]["all"][0]["in_box"].update(keypoint="hand"), True,
     "rules[1] 'reach': when.all[0].in_box.keypoint: 'hand' is not a keypoint of the model "
     "(keypoints: nose, paw, elbow, shoulder, tail)"),
    (lambda d: d[0]["when"]["in_box"].update(camera="front", min=[0, 0], max=[1, 1]), True,
     "rules[0] 'rear': when.in_box.camera: 'front' is not a camera of the rig (cameras: top, side)"),
    (lambda d: None, False,
     "rules[0] 'rear': when.in_box: a 3D test needs live 3D (a calibration in the rig and "
     "pose.triangulation enabled); or give camera: NAME to test one camera's 2D pose"),
    (lambda d: d[0].update(when={"in_sphere": {"keypoint": "paw", "center": [0, 0, 0], "radius_mm": 1}}),
     False, "rules[0] 'rear': when.in_sphere: a 3D test needs live 3D"),
    (lambda d: d[1].update(name="rear"), True,
     "rules[1] 'rear': name: repeats the name of rules[0]; rule names must be unique"),
    (lambda d: d[0]["actions"].append({"clip": {"pre_s": 5, "post_s": 1}}), True,
     "rules[0] 'rear': actions[1].clip.pre_s: 5 s is more history than the ring buffer keeps (2 s)"),
])
def test_validate_rules_names_the_rule_and_field(edit, has_3d, message):
    doc = yaml.safe_load(VALID)
    edit(doc)
    rules = _rules(yaml.safe_dump(doc))
    with pytest.raises(RuleError) as err:
        validate_rules(rules, KEYPOINTS, CAMERAS, has_3d=has_3d, max_clip_pre_s=2.0)
    assert str(err.value).startswith(message)
    assert isinstance(err.value, InputError)


def test_engine_rejects_unknown_keypoints_too():
    with pytest.raises(RuleError, match=r"rules\[0\] 'r': when.in_box.keypoint: 'paw' is not a keypoint"):
        RuleEngine([rule(BOX)], ["nose"])


@pytest.mark.parametrize(("snippet", "message"), [
    ("when: {in_box: {keypoint: paw, min: [0, 5, 0], max: [1, 1, 1]}}",
     "rules[0] 'x': when.in_box.min[1]: 5 is above max[1] = 1 (expected min <= max)"),
    ("when: {in_box: {keypoint: paw, min: [0, 0], max: [1, 1]}}",
     "rules[0] 'x': when.in_box.min: expected 3 values [x, y, z] in mm (or give camera: NAME for a 2D box "
     "in px), got 2"),
    ("when: {in_box: {keypoint: paw, camera: top, min: [0, 0, 0], max: [1, 1, 1]}}",
     "rules[0] 'x': when.in_box.min: expected 2 values [x, y] in px, got 3"),
    ("when: {in_sphere: {keypoint: paw, center: [0, 0, 0], radius_mm: -5}}",
     "rules[0] 'x': when.in_sphere.radius_mm: expected a number > 0 mm, got -5.0"),
    ("when: {any: [{not: {in_box: {keypoint: paw, min: [0, 0, 0], max: [1, 1, 1], margin: -1}}}]}",
     "rules[0] 'x': when.any[0].not.in_box.margin: expected a number >= 0, got -1.0"),
    ("when: {speed_above: {keypoint: paw, mm_per_s: 10, camera: top}}",
     "rules[0] 'x': when.speed_above.camera: unknown key"),
    ("when: {distance_below: {a: paw, b: paw, mm: 3}}",
     "rules[0] 'x': when.distance_below.b: 'paw' is already a; the keypoints must differ"),
    ("when: {distance_below: {a: paw, b: nose, mm: 3, camera: top}}",
     "rules[0] 'x': when.distance_below.mm: a 2D distance (camera: top) is in px, give px"),
    ("when: {angle_between: {a: paw, b: elbow, c: nose, min_deg: 100, max_deg: 90}}",
     "rules[0] 'x': when.angle_between.min_deg: 100 is above max_deg = 90"),
    ("when: {confidence_above: {keypoint: paw, min_score: 1.5}}",
     "rules[0] 'x': when.confidence_above.min_score: expected 0..1, got 1.5"),
    ("when: {all: []}", "rules[0] 'x': when.all: expected at least one condition, got []"),
    ("when: {}", "rules[0] 'x': when: expected one of in_box, in_sphere, speed_above, distance_below, "
                 "angle_between, confidence_above, input, input_edge, all, any, not; got none"),
    ("when: {in_box: {keypoint: paw, min: [0, 0, 0], max: [1, 1, 1]}, "
     "not: {in_box: {keypoint: paw, min: [0, 0, 0], max: [1, 1, 1]}}}",
     "rules[0] 'x': when: expected exactly one of in_box, in_sphere, speed_above, distance_below, "
     "angle_between, confidence_above, input, input_edge, all, any, not; got in_box and not (combine them "
     "under all: [...])"),
    ("when: {all: [{in_box: {keypoint: paw, min: [0, 0, 0], max: [1, 1, 1]}}, "
     "{in_box: {keypoint: paw, camera: top, min: [0, 0], max: [1, 1]}}]}",
     "rules[0] 'x': when: mixes 3D tests (when.all[0].in_box) with 2D ones (when.all[1].in_box, "
     "with camera)"),
])
def test_bad_conditions_are_rejected_with_their_path(snippet, message):
    text = f"- name: x\n  {snippet}\n  actions: [{{event: {{}}}}]\n"
    with pytest.raises(RuleError) as err:
        parse_rules(text)
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize(("actions", "message"), [
    ("[]", "rules[0] 'x': actions: expected at least one action (ttl, clip, event, output), got []"),
    ("[{ttl: {width_ms: 0}}]", "rules[0] 'x': actions[0].ttl.width_ms: expected a number > 0 ms, got 0.0"),
    ("[{clip: {pre_s: -1, post_s: 5}}]", "rules[0] 'x': actions[0].clip.pre_s: expected a number >= 0 s"),
    ("[{clip: {pre_s: 5}}]", "rules[0] 'x': actions[0].clip.post_s: required key is missing"),
    ("[{ttl: {width_ms: 1}, event: {}}]",
     "rules[0] 'x': actions[0]: expected exactly one of ttl, clip, event, output; got ttl and event"),
    ("[{beep: {}}]", "rules[0] 'x': actions[0].beep: unknown key"),
])
def test_bad_actions_are_rejected_with_their_path(actions, message):
    text = f"- name: x\n  when: {BOX}\n  actions: {actions}\n"
    with pytest.raises(RuleError) as err:
        parse_rules(text)
    assert str(err.value).startswith(message), str(err.value)


def test_bad_rule_fields():
    with pytest.raises(RuleError, match=re.escape("rules[1] 'no spaces': name: expected str matching regex")):
        parse_rules(f"- {{name: a, when: {BOX}, actions: [{{event: {{}}}}]}}\n"
                    f"- {{name: 'no spaces', when: {BOX}, actions: [{{event: {{}}}}]}}")
    message = "rules[0] 'a': hold_ms: expected a number >= 0 ms, got -1.0"
    with pytest.raises(RuleError, match=re.escape(message)):
        parse_rules(f"- {{name: a, when: {BOX}, hold_ms: -1, actions: [{{event: {{}}}}]}}")
    neither = ("rules[0] 'a': when: a rule has either when (a condition on the pose) or on_input "
               "(an input's edge)")
    with pytest.raises(RuleError, match=re.escape(neither + ", got neither")):
        parse_rules("- {name: a, actions: [{event: {}}]}")
    with pytest.raises(RuleError, match=re.escape("rules: expected a list of rules, got dict")):
        parse_rules("name: a")
    assert parse_rules("") == []


# -- YAML decoding with msgspec directly ------------------------------------------------------------

YAML_RULES = """
- name: reach
  when:
    all:
      - in_sphere: {keypoint: paw, center: [12, -40, 85], radius_mm: 8, margin: 4}
      - any:
          - confidence_above: {keypoint: paw, min_score: 0.5}
          - not: {speed_above: {keypoint: paw, mm_per_s: 500}}
  hold_ms: 10
  rearm_when_false_ms: 200
  refractory_ms: 1000
  actions:
    - clip: {pre_s: 5, post_s: 5}
    - ttl: {width_ms: 10}
    - event: {}
- name: look_left
  when:
    angle_between: {a: nose, b: shoulder, c: tail, min_deg: 0, max_deg: 150, camera: top}
  actions: [{event: {name: looked_left}}]
"""


def test_decode_from_yaml():
    rules = msgspec.convert(yaml.safe_load(YAML_RULES), list[Rule], strict=True)
    reach, look = rules
    assert reach.kind == "3d" and look.kind == "2d"
    assert (reach.hold_ms, reach.rearm_when_false_ms, reach.refractory_ms) == (10, 200, 1000)
    assert [a.kind for a in reach.actions] == ["clip", "ttl", "event"]
    assert reach.when.all_[0].in_sphere.radius_mm == 8  # type: ignore[index, union-attr]
    assert [(path, key) for path, key, _ in iter_leaves(reach.when)] == [
        ("when.all[0].in_sphere", "in_sphere"),
        ("when.all[1].any[0].confidence_above", "confidence_above"),
        ("when.all[1].any[1].not.speed_above", "speed_above"),
    ]
    validate_rules(rules, KEYPOINTS, CAMERAS, has_3d=True)
    # Round trip: what a rig file would hold.
    again = msgspec.convert(msgspec.to_builtins(rules), list[Rule], strict=True)
    assert again == rules
    assert msgspec.to_builtins(reach.when)["all"][0] == {
        "in_sphere": {"keypoint": "paw", "center": [12.0, -40.0, 85.0], "radius_mm": 8.0, "margin": 4.0}}


@pytest.mark.parametrize("bad", [
    "hold: 10",  # a misspelt rule field
    "when: {in_box: {keypoint: paw, min: [0, 0, 0], max: [1, 1, 1], radius_mm: 3}}",
    "when: {inbox: {keypoint: paw}}",
    "actions: [{clip: {pre_s: 1, post_s: 1, fps: 30}}]",
])
def test_unknown_fields_are_rejected(bad):
    doc = {"name": "x", "when": BOX, "actions": [{"event": {}}], **yaml.safe_load(bad)}
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert([doc], list[Rule], strict=True)


def test_strict_decoding_rejects_strings_for_numbers():
    with pytest.raises(msgspec.ValidationError, match=r"Expected `float`, got `str` - at `\$\[0\].hold_ms`"):
        msgspec.convert([{"name": "x", "when": BOX, "hold_ms": "10", "actions": [{"event": {}}]}],
                        list[Rule], strict=True)


def test_models_validate_direct_construction():
    with pytest.raises(ValueError, match=re.escape("min[0]: 2 is above max[0] = 1")):
        InBox(keypoint="paw", min=[2, 0, 0], max=[1, 1, 1])
    with pytest.raises(ValueError, match="got none"):
        Condition()
    r = Rule(name="direct", when=Condition(in_box=InBox(keypoint="paw", min=[0, 0, 0], max=[1, 1, 1])),
             actions=[Action(clip=ClipAction(pre_s=1, post_s=0))])
    assert r.kind == "3d"


def test_bench_rules_reports_microseconds_per_update():
    result = bench_rules(n=300)
    assert result["rules"] == 5 and result["keypoints"] == 20 and result["n"] == 300
    assert result["us_per_update_mean"] > 0
    assert set(result["fired"]) == {"reach", "rear", "dash", "groom", "still"}
