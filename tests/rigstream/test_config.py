from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rigstream.config import ConfigError, load_rig, parse_rig

RIGS = Path(__file__).resolve().parents[2] / "hardware" / "rigs"


def sim_doc() -> dict:
    return yaml.safe_load((RIGS / "sim.yaml").read_text())


def error_for(doc: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_rig(yaml.safe_dump(doc), "rig.yaml")
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    return message


def test_embedded_default_is_the_sim_rig_file() -> None:
    embedded = load_rig()
    from_file = load_rig(RIGS / "sim.yaml")
    assert embedded == from_file
    assert [c.role for c in embedded.cameras] == ["primary", "secondary"]
    assert all(c.backend == "sim" for c in embedded.cameras)


def test_blackfly_pair_example_loads() -> None:
    rig = load_rig(RIGS / "blackfly_pair.yaml")
    assert rig.trigger.rate_hz == 226
    assert rig.trigger.backend == "rpigpio"
    assert {(c.width, c.height, c.pixel_format) for c in rig.cameras} == {(1440, 1080, "mono8")}
    assert rig.primary.name == "left"
    # exposure must fit in the 4425 us period
    assert all(c.exposure_us * 1000 < rig.trigger.period_ns for c in rig.cameras)


def test_unknown_key_names_its_path() -> None:
    doc = sim_doc()
    doc["cameras"][1]["exposur_us"] = 100
    assert error_for(doc) == "rig.yaml: cameras[1].exposur_us: unknown key"


def test_unknown_top_level_key() -> None:
    doc = sim_doc()
    doc["triger"] = {}
    assert error_for(doc) == "rig.yaml: triger: unknown key"


def test_negative_exposure_names_key_and_value() -> None:
    doc = sim_doc()
    doc["cameras"][1]["exposure_us"] = -5
    msg = error_for(doc)
    assert msg.startswith("rig.yaml: cameras[1].exposure_us: expected int >= 1")
    assert "got -5" in msg


def test_secondary_without_primary() -> None:
    doc = sim_doc()
    doc["cameras"][0]["role"] = "secondary"
    msg = error_for(doc)
    assert "primary" in msg and "cam0" in msg and "cam1" in msg


def test_bad_enum_and_missing_key() -> None:
    doc = sim_doc()
    doc["cameras"][0]["backend"] = "usb"
    assert "cameras[0].backend" in error_for(doc)
    doc = sim_doc()
    del doc["trigger"]["rate_hz"]
    assert error_for(doc) == "rig.yaml: trigger.rate_hz: required key is missing"


def test_exposure_longer_than_period_is_refused() -> None:
    doc = sim_doc()
    doc["trigger"]["rate_hz"] = 500
    doc["cameras"][0]["exposure_us"] = 2500
    assert "exposure_us (2500) must be shorter than the trigger period" in error_for(doc)


def test_duplicate_camera_names() -> None:
    doc = sim_doc()
    doc["cameras"][1]["name"] = "cam0"
    assert "repeated: cam0" in error_for(doc)


def test_not_yaml_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML \(line 1"):
        parse_rig("cameras: [", "rig.yaml")
    with pytest.raises(ConfigError, match="cannot read rig file"):
        load_rig(tmp_path / "missing.yaml")


def test_check_command_prints_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rigstream.app.cli import main

    doc = sim_doc()
    doc["cameras"][1]["exposure_us"] = -5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert main(["check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cameras[1].exposure_us" in err


def test_rules_in_the_rig_file_fail_with_the_rule_and_key_path() -> None:
    doc = sim_doc()
    doc["rules"][0]["when"]["all"][0]["in_box"]["max"] = [40, 300]
    assert error_for(doc) == ("rig.yaml: rules[0] 'midline': when.all[0].in_box.max: expected 3 values "
                              "[x, y, z] in mm (or give camera: NAME for a 2D box in px), got 2")
    doc = sim_doc()
    doc["rules"][0]["actions"].append({"ttl": {"width_ms": 5}, "clip": {"pre_s": 1, "post_s": 1}})
    assert "rules[0] 'midline': actions[3]: expected exactly one of ttl, clip, event" in error_for(doc)
    doc = sim_doc()
    doc["rules"] = None  # an empty rules: is no rules
    assert parse_rig(yaml.safe_dump(doc), "rig.yaml").rules == []


def test_rules_are_checked_against_the_model_and_need_the_pose_engine(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rigstream.app.cli import main

    doc = sim_doc()
    doc["calibration"] = str(RIGS / "sim_calibration.toml")
    doc["rules"][0]["when"]["all"][1]["confidence_above"]["keypoint"] = "nose"
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(doc))
    assert main(["check", "--config", str(tmp_path / "a.yaml")]) == 2
    err = capsys.readouterr().err
    assert "rules[0] 'midline': when.all[1].confidence_above.keypoint: 'nose' is not a keypoint" in err
    doc = sim_doc()
    doc["calibration"] = str(RIGS / "sim_calibration.toml")
    doc["pose"]["enabled"] = False
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(doc))
    assert main(["check", "--config", str(tmp_path / "b.yaml")]) == 2
    assert "rules (midline) run on the live pose: enable the pose section" in capsys.readouterr().err


def test_the_ring_buffer_keeps_the_longest_clip_a_rule_asks_for() -> None:
    doc = sim_doc()
    doc["rules"][0]["actions"][1] = {"clip": {"pre_s": 5, "post_s": 5}}  # the reach-to-knob clip
    rig = parse_rig(yaml.safe_dump(doc), "rig.yaml")
    assert rig.clip_window_max_s() == (5.0, 5.0)


def test_event_command_sends_an_exact_clip_window_or_refuses_half_of_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import zmq

    from rigstream import protocol
    from rigstream.app.cli import main
    from rigstream.transport import bind_address

    rig = load_rig()
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(bind_address(rig.address("events", str(tmp_path))))
    try:
        assert main(["event", "--run", str(tmp_path), "--index", "500", "--pre", "5", "--post", "2"]) == 0
        assert pull.poll(5000)
        event = protocol.decode(pull.recv(), protocol.Event)
        assert (event.trigger_index, event.data) == (500, {"clip": {"pre_s": 5.0, "post_s": 2.0}})
    finally:
        pull.close(linger=0)
        ctx.term()
    assert main(["event", "--run", str(tmp_path), "--pre", "5"]) == 2
    assert "give --pre and --post together" in capsys.readouterr().err


def test_the_readme_rule_example_parses_and_its_error_example_is_what_users_see() -> None:
    import re

    from rigstream.rules import RuleError, parse_rules

    readme = (RIGS.parents[1] / "README.md").read_text()
    block = re.search(r"```yaml\n(rules:\n.*?)```", readme, re.S)
    assert block is not None
    doc = yaml.safe_load(block.group(1))["rules"]
    assert [a.kind for a in parse_rules(doc)[0].actions] == ["ttl", "clip", "event"]
    doc[0]["when"]["all"][0]["in_sphere"]["radius_mm"] = 0
    with pytest.raises(RuleError) as info:
        parse_rules(doc, "rig.yaml")
    assert f"`{info.value}`" in readme.replace("\n", " ")
