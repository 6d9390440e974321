"""Rules on the apparatus: input tests combined with pose tests, rules fired by an input's edge,
output actions; and the live feed that puts each edge on its frame."""

from __future__ import annotations

import time

import pytest
import zmq

from rigstream import protocol
from rigstream.inference.input_feed import InputFeed
from rigstream.inference.rules import RuleEngine, RuleError, parse_rules, validate_rules
from rigstream.protocol import Pose3D, Pulse

KEYPOINTS = ["paw", "nose"]
MS = 1_000_000


def pose(n: int, paw_x: float) -> Pose3D:
    return Pose3D(seq=n, frameset_seq=n, trigger_index=n, t_pi_ns=n * 10 * MS, t_host_ns=0,
                  keypoints=KEYPOINTS, xyz=[[paw_x, 0.0, 0.0], [0.0, 0.0, 0.0]], error=[0.0, 0.0],
                  ncams=[2, 2], score=[1.0, 1.0])


RULES = """
- name: held_and_in_box
  when:
    all:
      - input: {name: knob}
      - in_box: {keypoint: paw, min: [0, -1, -1], max: [10, 1, 1]}
  actions: [{event: {}}]
- name: touched
  on_input: {name: knob}
  refractory_ms: 50
  actions: [{clip: {pre_s: 5, post_s: 2}}, {output: {name: reward, width_ms: 20}}]
- name: just_pressed
  when:
    all:
      - input_edge: {name: knob, within_ms: 25}
      - in_box: {keypoint: paw, min: [-100, -1, -1], max: [100, 1, 1]}
  actions: [{output: {name: laser, width_ms: 1, count: 5, rate_hz: 100}}]
"""


def test_input_and_pose_tests_fire_on_their_crossings_only() -> None:
    rules = parse_rules(RULES)
    validate_rules(rules, KEYPOINTS, [], has_3d=True, inputs=["knob"], outputs=["reward", "laser"])
    engine = RuleEngine(rules, KEYPOINTS)
    fired: dict[str, list[int]] = {}

    def run(n: int, paw_x: float) -> None:
        for f in engine.update(pose(n, paw_x)):
            fired.setdefault(f.rule, []).append(f.trigger_index)

    run(0, 5.0)  # in the box, knob not held: nothing
    for f in engine.input_edge("knob", True, 15 * MS, 1):  # pressed between pulses 1 and 2
        fired.setdefault(f.rule, []).append(f.trigger_index)
    for f in engine.input_edge("knob", True, 30 * MS, 3):  # bounce within the refractory period
        fired.setdefault(f.rule, []).append(f.trigger_index)
    run(1, 5.0)  # pulse 1 (10 ms) is before the press: not held yet
    run(2, 5.0)  # held and in the box; pressed within 25 ms
    run(3, 20.0)  # held, out of the box
    run(4, 5.0)  # back in: a new episode
    engine.input_edge("knob", False, 45 * MS, 4)
    run(5, 5.0)  # released: no
    assert fired == {"touched": [1], "held_and_in_box": [2, 4], "just_pressed": [2]}
    assert engine.counters["input_refractory"] == 1
    assert engine.inputs.state_at("knob", 44 * MS) and not engine.inputs.state_at("knob", 46 * MS)


@pytest.mark.parametrize(("text", "message"), [
    ("- {name: a, on_input: {name: lever}, actions: [{event: {}}]}",
     "rules[0] 'a': on_input.name: 'lever' is not an input of the rig (inputs: knob)"),
    ("- {name: a, when: {all: [{input: {name: lever}}, {in_box: {keypoint: paw, min: [0, 0, 0], "
     "max: [1, 1, 1]}}]}, actions: [{event: {}}]}",
     "rules[0] 'a': when.all[0].input.name: 'lever' is not an input of the rig (inputs: knob)"),
    ("- {name: a, on_input: {name: knob}, actions: [{output: {name: valve, width_ms: 5}}]}",
     "rules[0] 'a': actions[0].output.name: 'valve' is not an output of the rig (outputs: reward)"),
])
def test_rules_name_only_lines_the_rig_has(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        validate_rules(parse_rules(text), KEYPOINTS, [], has_3d=True, inputs=["knob"], outputs=["reward"])


@pytest.mark.parametrize(("text", "message"), [
    ("- {name: a, when: {input: {name: knob}}, actions: [{event: {}}]}", "tests only inputs"),
    ("- {name: a, when: {input: {name: knob}}, on_input: {name: knob}, actions: [{event: {}}]}", "not both"),
    ("- {name: a, on_input: {name: knob}, actions: [{output: {name: r, width_ms: 5, count: 3}}]}",
     "needs a rate"),
    ("- {name: a, on_input: {name: knob}, actions: [{output: {name: r, width_ms: 20, count: 3, "
     "rate_hz: 100}}]}", "does not fit the train's period"),
])
def test_bad_input_rules_are_refused(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_rules(text)


def test_the_feed_puts_each_edge_on_the_last_pulse_at_or_before_it(tmp_path) -> None:
    ctx = zmq.Context()
    address = f"ipc://{tmp_path}/pulses"
    pub = ctx.socket(zmq.PUB)
    pub.bind(address)
    feed = InputFeed(ctx, address)
    try:
        time.sleep(0.2)  # the subscription reaches the publisher
        sends = [Pulse(index=0, t_pi_ns=100, line="camera"),
                 Pulse(index=0, t_pi_ns=200, line="input:knob"),  # before pulse 1's message: held
                 Pulse(index=1, t_pi_ns=200, line="camera"),
                 Pulse(index=0, t_pi_ns=250, line="input:knob-off"),
                 Pulse(index=2, t_pi_ns=300, line="camera")]
        for p in sends:
            pub.send(protocol.encode(p))
        pub.send(b"\x93garbage")
        got: list[tuple[str, bool, int, int]] = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            got += feed.poll()
            time.sleep(0.01)
        assert got == [("knob", True, 200, 1), ("knob", False, 250, 1)]
        assert feed.malformed.total == 1
    finally:
        feed.close()
        pub.close(0)
        ctx.term()
