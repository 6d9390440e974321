"""``rigstream report`` on a real demo session (a simulated knob input driving a named output,
a sync line fast enough to align 6 s, 2 % of frames dropped): every section has its figures and
the hit/miss table its numbers; the page loads in headless Chromium (Debian's, as in
tests/e2e/test_monitor_browser.py) with every image decoded and no console error; a damaged
session (no 3D tables, a malformed firings.csv, an empty inputs.csv) still gives a page that
says what is missing. The page's screenshot goes to /tmp/report_page.png for a person to look at."""

from __future__ import annotations

import base64
import csv
import re
import shutil
from pathlib import Path

import msgspec
import numpy as np
import pytest
import yaml

from rigstream.app.cli import main
from rigstream.app.session_report import Region, check_region, parse_region
from rigstream.config import InputError, load_rig
from tests.e2e.test_apparatus import KNOB
from tests.e2e.test_monitor_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser

SCREENSHOT = Path("/tmp/report_page.png")
FIGURES = {"summary": 0, "frames": 1, "latency": 2, "clock": 1, "trajectories": 1, "timeline": 1, "region": 1}
"""Images per section of a complete session with one simulated input."""
REWARD_ON_TOUCH = {"name": "reward_on_touch", "on_input": {"name": "knob"},
                   "actions": [{"output": {"name": "reward", "width_ms": 20}}]}


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    doc = msgspec.to_builtins(load_rig())
    doc["inputs"] = [KNOB]
    doc["outputs"] = [{"name": "reward", "pin": 12}]
    doc["rules"].append(REWARD_ON_TOUCH)
    doc["sync_line"].update(min_interval_s=0.05, max_interval_s=0.25)  # ~35 pulses in 6 s: aligned
    (folder / "rig.yaml").write_text(yaml.safe_dump(doc))
    out = folder / "s"
    assert main(["demo", "--config", str(folder / "rig.yaml"), "--seconds", "6", "--drop-rate", "0.02",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def page(session: Path) -> str:
    assert main(["report", str(session)]) == 0
    return (session / "report.html").read_text()


def sections(page: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="(\w+)">(.*?)</section>', page, re.S))


def notes(section: str) -> list[str]:
    return re.findall(r'<p class="note">(.*?)</p>', section)


def hit_table(section: str) -> dict[str, str]:
    table = re.search(r'<table class="hits">(.*?)</table>', section, re.S)
    assert table, "no hit/miss table"
    return dict(re.findall(r'<tr data-key="(\w+)"><th>.*?</th><td>(.*?)</td></tr>', table.group(1)))


@pytest.mark.slow
def test_every_section_has_its_figures_and_the_hit_table_its_numbers(session: Path, page: str) -> None:
    found = sections(page)
    assert {k: v.count("<img ") for k, v in found.items()} == FIGURES
    for uri in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page):
        assert base64.b64decode(uri)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing to fetch: one file
    assert all(not notes(found[k]) for k in ("summary", "frames", "latency", "timeline")), found
    assert "sync pulses matched" in found["summary"]
    assert "residuals stored in neural_mapping.json" in found["clock"]
    with open(session / "inputs.csv", newline="") as f:
        on = sum(r["input"] == "knob" and r["state"] == "on" for r in csv.DictReader(f))
    timeline = dict(re.findall(r"<tr><td>([^<]+)</td><td>[^<]+</td><td>(\d+)</td>", found["timeline"]))
    assert timeline["input knob"] == timeline["output reward"] == timeline["rule reward_on_touch"] == str(on)
    assert timeline.get("rule midline") == timeline.get("TTL")  # its ttl action, one pulse a firing
    t = hit_table(found["region"])
    counts = {k: int(t[k]) for k in ("entries", "edges", "hits", "entries_missed", "edges_missed")}
    assert counts["entries"] > 0 and 0 < counts["edges"] <= on, counts
    assert counts["hits"] + counts["entries_missed"] == counts["entries"]
    assert counts["edges_missed"] <= counts["edges"]
    if counts["hits"]:
        assert abs(float(t["median_ms"])) <= 100 and 0 <= float(t["p95_ms"]) <= 100
    assert "rig.yaml inputs[0].sim" in found["region"]


@pytest.mark.slow
def test_the_page_loads_in_chromium_with_every_figure(session: Path, page: str) -> None:
    pw = _require_browser()
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.goto((session / "report.html").as_uri(), wait_until="load")
            widths = tab.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
            tab.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert len(widths) == sum(FIGURES.values()) and all(w > 0 for w in widths), widths
    assert not errors, errors


@pytest.mark.slow
def test_a_damaged_session_gives_a_page_that_says_what_is_missing(session: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(session, damaged, ignore=shutil.ignore_patterns("video", "clips", "logs", "pose3d*.csv",
                                                                     "report.html"))
    text = (damaged / "firings.csv").read_text().splitlines()
    cells = text[1].split(",")
    cells[2] = "soon"  # t_pi_ns
    (damaged / "firings.csv").write_text("\n".join([text[0], ",".join(cells), *text[2:]]) + "\n")
    (damaged / "inputs.csv").write_text("")
    out = tmp_path / "page.html"
    assert main(["report", str(damaged), "--out", str(out)]) == 0
    found = sections(out.read_text())
    for sid in ("trajectories", "region"):
        assert notes(found[sid]) == ["no pose3d_filtered.csv or pose3d.csv in this session (no live 3D)"]
        assert "<img" not in found[sid]
    bad = "firings.csv: line 2: column t_pi_ns: expected a number, got &#x27;soon&#x27;"
    assert bad in notes(found["latency"])
    assert "inputs.csv is empty (not even a header)" in notes(found["timeline"])
    assert found["frames"].count("<img ") == 1 and found["clock"].count("<img ") == 1
    assert found["latency"].count("<img ") == 1  # pose_timing.csv's; firings.csv's is the line above


@pytest.mark.slow
def test_a_region_given_on_the_command_line(session: Path, tmp_path: Path) -> None:
    lo, hi = KNOB["sim"]["min"], KNOB["sim"]["max"]
    box = f"right_forepaw:{','.join(map(str, lo))}:{','.join(map(str, hi))}"
    out = tmp_path / "page.html"
    assert main(["report", str(session), "--out", str(out), "--region", box, "--input", "knob",
                 "--window-ms", "300"]) == 0
    region = sections(out.read_text())["region"]
    assert "vs input knob (--region)" in region and "±300 ms" in region
    t = hit_table(region)
    assert int(t["hits"]) + int(t["entries_missed"]) == int(t["entries"]) > 0
    assert main(["report", str(session), "--region", box]) == 2  # no --input for it


def test_region_entries_are_matched_to_the_nearest_edge_within_the_window() -> None:
    region = Region("paw", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "knob", "test")
    t_s = np.arange(0.0, 4.0, 0.25)
    inside = np.isin(t_s, [1.0, 1.25, 2.0, 3.0, 3.25, 3.5])
    xyz = np.where(inside[:, None], 0.5, 5.0) * np.ones((t_s.size, 3))
    xyz[13] = np.nan  # 3.25 s: no point, a row left out (not an exit, so 3.5 s is no entry)
    check = check_region(t_s, xyz, region, on_s=np.array([1.01, 2.6, 3.0]), window_ms=50.0)
    assert (check.entries, check.edges, check.hits) == (3, 3, 2)
    assert (check.entries_missed, check.edges_missed) == (1, 1)
    np.testing.assert_allclose(check.dt_ms, [10.0, 600.0, 0.0], atol=1e-9)
    none = check_region(t_s, xyz, region, on_s=np.zeros(0), window_ms=50.0)
    assert (none.edges, none.hits, none.entries_missed) == (0, 0, 3) and np.isnan(none.dt_ms).all()


@pytest.mark.parametrize("text", ["paw:0,0,0", "paw:0,0:1,1,1", "paw:0,0,x:1,1,1", "paw:1,0,0:0,1,1",
                                  ":0,0,0:1,1,1"])
def test_a_bad_region_says_the_form(text: str) -> None:
    with pytest.raises(InputError, match=r"--region: expected"):
        parse_region(text, "knob")
    region = parse_region("paw:0,-1,2:1,0,3.5", "knob")
    assert region == Region("paw", (0, -1, 2), (1, 0, 3.5), "knob", "--region")
