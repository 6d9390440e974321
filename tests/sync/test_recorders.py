"""Recorder readers: edge files, Open Ephys Binary, pyPhotometry .ppd, and the read_edges spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rigstream.config import InputError
from rigstream.sync.edges import EdgeTimes, RecorderFileError
from rigstream.sync.open_ephys import describe_open_ephys, read_open_ephys
from rigstream.sync.recorders import read_edge_file, read_edges, read_pyphotometry, units_from_name
from tests.conftest import SHARED_DATA

OE_REAL = SHARED_DATA / "sync_openephys" / "v0.6.7_Binary"
PPD_REAL = SHARED_DATA / "sync_pyphotometry" / "m17-R-2018-12-12-090409.ppd"

# --------------------------------------------------------------------------------------------
# Writers for synthetic files


def write_oebin_recording(root: Path, streams: dict[str, list[tuple[int, int]]],
                          rate_hz: float = 30000.0, legacy: bool = False) -> Path:
    """An Open Ephys Binary recording under ``root``: one TTL folder per stream, events as
    ``(state, sample_number)``; ``legacy`` writes the GUI 0.5 files (channel_states.npy,
    channels.npy, int64 timestamps.npy)."""
    rec = root / "Record Node 101" / "experiment1" / "recording1"
    events_doc: list[dict[str, Any]] = []
    continuous_doc: list[dict[str, Any]] = []
    for name, events in streams.items():
        ttl = rec / "events" / name / "TTL"
        ttl.mkdir(parents=True)
        states = np.array([s for s, _ in events], dtype=np.int16)
        samples = np.array([n for _, n in events], dtype=np.int64)
        if legacy:
            np.save(ttl / "channel_states.npy", states)
            np.save(ttl / "channels.npy", np.abs(states).astype(np.int16))
            np.save(ttl / "timestamps.npy", samples)
        else:
            np.save(ttl / "states.npy", states)
            np.save(ttl / "sample_numbers.npy", samples)
            np.save(ttl / "timestamps.npy", samples / rate_hz)  # seconds, as GUI >= 0.6 writes
        processor, _, stream_name = name.partition(".")
        continuous_doc.append({"folder_name": f"{name}/", "sample_rate": rate_hz, "num_channels": 4,
                               "stream_name": stream_name, "channels": []})
        events_doc.append({"folder_name": f"{name}/TTL/", "channel_name": "TTL", "sample_rate": rate_hz,
                           "type": "int16", "stream_name": stream_name, "source_processor": processor})
    events_doc.append({"folder_name": "MessageCenter/", "type": "string", "sample_rate": rate_hz})
    doc = {"GUI version": "0.5.5" if legacy else "0.6.7", "continuous": continuous_doc,
           "events": events_doc, "spikes": []}
    (rec / "structure.oebin").write_text(json.dumps(doc, indent=2))
    return rec


def write_ppd(path: Path, header: dict[str, Any], analog: np.ndarray, digital: np.ndarray) -> Path:
    """A pyPhotometry .ppd file: uint16 header length, JSON header, then uint16 words, one row
    of ``analog`` (S, W) per sample, the low bit of word column ``c`` set from ``digital[:, c]``."""
    words = (analog.astype(np.uint16) << 1) | (digital.astype(np.uint16) & 1)
    blob = json.dumps(header).encode()
    path.write_bytes(len(blob).to_bytes(2, "little") + blob + words.astype("<u2").tobytes())
    return path


def pulse_train(n_samples: int, rises: list[int], width: int) -> np.ndarray:
    level = np.zeros(n_samples, dtype=np.uint16)
    for r in rises:
        level[r:r + width] = 1
    return level


# --------------------------------------------------------------------------------------------
# Edge files


def test_csv_with_header_gives_units(tmp_path: Path) -> None:
    p = tmp_path / "edges.csv"
    p.write_text("t_s\n0.5\n1.25,\n\n3.0\n")
    e = read_edge_file(p)
    assert isinstance(e, EdgeTimes)
    np.testing.assert_array_equal(e.times, [0.5, 1.25, 3.0])
    assert e.times.dtype == np.float64 and e.units == "s" and e.rate_hz is None and e.falling is None
    assert "edges.csv" in e.source and "t_s" in e.source
    np.testing.assert_array_equal(e.seconds(), [0.5, 1.25, 3.0])
    with pytest.raises(ValueError):
        e.times[0] = 9.0  # read-only


def test_txt_whitespace_without_header_has_unknown_units(tmp_path: Path) -> None:
    p = tmp_path / "edges.txt"
    p.write_text("# exported by hand\n  100  \n\t250\n400\n")
    e = read_edge_file(p)
    np.testing.assert_array_equal(e.times, [100, 250, 400])
    assert e.units == "?"
    with pytest.raises(RecorderFileError, match="cannot convert to seconds"):
        e.seconds()


@pytest.mark.parametrize(("name", "units"), [("t_s", "s"), ("time_ms", "ms"), ("sample", "samples"),
                                             ("time (us)", "us"), ("sample_numbers", "samples"),
                                             ("timestamp", "?"), ("t", "?")])
def test_units_from_header_names(name: str, units: str) -> None:
    assert units_from_name(name) == units


def test_csv_header_with_ms_round_trip(tmp_path: Path) -> None:
    times = np.array([12.5, 600.0, 1800.25])
    p = tmp_path / "e.csv"
    np.savetxt(p, times, header="time_ms", comments="", fmt="%.17g")
    e = read_edge_file(p)
    np.testing.assert_array_equal(e.times, times)
    assert e.units == "ms"
    np.testing.assert_allclose(e.seconds(), times / 1000)


def test_npy_round_trip(tmp_path: Path) -> None:
    times = np.array([3, 40, 512, 9000], dtype=np.int64)
    p = tmp_path / "e.npy"
    np.save(p, times)
    e = read_edge_file(p)
    np.testing.assert_array_equal(e.times, times)
    assert e.times.dtype == np.float64 and e.units == "?"


@pytest.mark.parametrize(("content", "message"), [
    ("", "empty file"),
    ("t_s\n", "empty file.*only a header 't_s'"),
    ("t_s\n1.0\nabc\n3.0\n", "line 3: expected a number, got 'abc'"),
    ("1.0\n2.0\nt_s\n", "line 3: expected a number"),
    ("1.0\n2.0,5.0\n", "line 2: expected one time per row, got 2 values"),
    ("1.0\nnan\n", "line 2: expected a finite time, got NaN"),
    ("1.0\n3.0\n2.0\n", "expected strictly increasing times, got 2 at line 3 after 3 at line 2"),
])
def test_text_errors_say_where(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(RecorderFileError, match=message) as info:
        read_edge_file(p)
    assert "bad.csv" in str(info.value)
    assert isinstance(info.value, InputError)


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((3, 2)), r"expected a 1-D array of edge times, got shape \(3, 2\)"),
    (np.array([], dtype=float), "empty file"),
    (np.array([1.0, np.nan, 3.0]), "expected finite times, got nan at index 1"),
    (np.array(["a", "b"]), "expected a numeric array"),
])
def test_npy_errors(tmp_path: Path, array: np.ndarray, message: str) -> None:
    p = tmp_path / "bad.npy"
    np.save(p, array)
    with pytest.raises(RecorderFileError, match=message):
        read_edge_file(p)


def test_missing_edge_file(tmp_path: Path) -> None:
    with pytest.raises(RecorderFileError, match="found nothing"):
        read_edge_file(tmp_path / "none.csv")


# --------------------------------------------------------------------------------------------
# Open Ephys, synthesized

STREAM_A = "Acquisition_Board-100.Rhythm Data"
STREAM_B = "NI-DAQmx-101.PXI-6133"
EVENTS_A = [(1, 100), (2, 150), (-1, 200), (-2, 260), (1, 1000), (-1, 1100), (1, 2500), (-1, 2600)]
EVENTS_B = [(2, 10), (-2, 20), (3, 50), (2, 70), (-2, 80), (-3, 90)]


@pytest.fixture
def oe_two_streams(tmp_path: Path) -> Path:
    write_oebin_recording(tmp_path / "session", {STREAM_A: EVENTS_A, STREAM_B: EVENTS_B})
    return tmp_path / "session"


def test_open_ephys_reads_each_line_of_each_stream(oe_two_streams: Path) -> None:
    rec = next(oe_two_streams.rglob("structure.oebin")).parent
    e = read_open_ephys(rec, 1, STREAM_A)
    np.testing.assert_array_equal(e.times, [100, 1000, 2500])
    np.testing.assert_array_equal(e.falling, [200, 1100, 2600])
    assert e.units == "samples" and e.rate_hz == 30000.0
    assert e.source.endswith(f"structure.oebin: {STREAM_A} TTL line 1")
    e = read_open_ephys(rec, 2, STREAM_A)
    np.testing.assert_array_equal(e.times, [150])
    np.testing.assert_array_equal(e.falling, [260])
    e = read_open_ephys(rec, 2, STREAM_B)
    np.testing.assert_array_equal(e.times, [10, 70])
    np.testing.assert_array_equal(e.falling, [20, 80])
    e = read_open_ephys(rec, 3, STREAM_B)
    np.testing.assert_array_equal(e.times, [50])
    np.testing.assert_array_equal(e.falling, [90])


def test_open_ephys_accepts_recording_oebin_or_parent(oe_two_streams: Path) -> None:
    rec = next(oe_two_streams.rglob("structure.oebin")).parent
    for where in (rec, rec / "structure.oebin", oe_two_streams, oe_two_streams / "Record Node 101"):
        np.testing.assert_array_equal(read_open_ephys(where, 1, STREAM_A).times, [100, 1000, 2500])


def test_open_ephys_stream_by_prefix_or_part(oe_two_streams: Path) -> None:
    assert read_open_ephys(oe_two_streams, 3, "NI-DAQmx-101").times.tolist() == [50]
    assert read_open_ephys(oe_two_streams, 3, "pxi").times.tolist() == [50]
    assert read_open_ephys(oe_two_streams, 1, f"{STREAM_A}/TTL").times.tolist() == [100, 1000, 2500]


def test_open_ephys_several_streams_need_a_choice(oe_two_streams: Path) -> None:
    with pytest.raises(RecorderFileError, match="2 streams have TTL events, choose one") as info:
        read_open_ephys(oe_two_streams, 1)
    msg = str(info.value)
    assert f"{STREAM_A} (8 events; lines 1-2)" in msg and f"{STREAM_B} (6 events; lines 2-3)" in msg
    with pytest.raises(RecorderFileError, match="stream 'nope' matches no stream"):
        read_open_ephys(oe_two_streams, 1, "nope")
    with pytest.raises(RecorderFileError, match="stream '-10' matches several streams"):
        read_open_ephys(oe_two_streams, 1, "-10")


def test_open_ephys_line_that_never_rises(oe_two_streams: Path) -> None:
    with pytest.raises(RecorderFileError) as info:
        read_open_ephys(oe_two_streams, 1, STREAM_B)
    msg = str(info.value)
    assert f"no rising edges on TTL line 1 in events/{STREAM_B}/TTL (lines seen: 2-3; 6 events)" in msg
    assert "recording1" in msg and STREAM_A in msg


def test_open_ephys_bad_line_number(oe_two_streams: Path) -> None:
    for line in (0, -1, True, 1.5):
        with pytest.raises(RecorderFileError, match="expected a positive integer"):
            read_open_ephys(oe_two_streams, line, STREAM_A)  # type: ignore[arg-type]


def test_open_ephys_single_stream_needs_no_choice_and_legacy_files(tmp_path: Path) -> None:
    write_oebin_recording(tmp_path, {"Rhythm_FPGA-100.0": EVENTS_A}, rate_hz=20000.0, legacy=True)
    e = read_open_ephys(tmp_path, 1)
    np.testing.assert_array_equal(e.times, [100, 1000, 2500])
    np.testing.assert_array_equal(e.falling, [200, 1100, 2600])
    assert e.units == "samples" and e.rate_hz == 20000.0
    np.testing.assert_allclose(e.seconds(), [0.005, 0.05, 0.125])


def test_open_ephys_folder_problems(tmp_path: Path) -> None:
    with pytest.raises(RecorderFileError, match="found none under it"):
        read_open_ephys(tmp_path, 1)
    write_oebin_recording(tmp_path / "a", {STREAM_A: EVENTS_A})
    write_oebin_recording(tmp_path / "b", {STREAM_A: EVENTS_A})
    with pytest.raises(RecorderFileError, match="expected one Open Ephys recording, found 2") as info:
        read_open_ephys(tmp_path, 1)
    assert "a/Record Node 101/experiment1/recording1" in str(info.value)
    oebin = next((tmp_path / "a").rglob("structure.oebin"))
    oebin.write_text("{not json")
    with pytest.raises(RecorderFileError, match="expected a JSON structure file"):
        read_open_ephys(oebin, 1)
    rec = next((tmp_path / "b").rglob("structure.oebin")).parent
    (rec / "events" / STREAM_A / "TTL" / "states.npy").unlink()
    with pytest.raises(RecorderFileError, match=r"expected states\.npy .* found sample_numbers\.npy"):
        read_open_ephys(rec, 1)


def test_describe_open_ephys(oe_two_streams: Path) -> None:
    d = describe_open_ephys(oe_two_streams)
    assert d["gui_version"] == "0.6.7" and d["recording"].endswith("recording1")
    assert [c["name"] for c in d["continuous"]] == [STREAM_A, STREAM_B]
    a, b = d["ttl_streams"]
    assert a["name"] == STREAM_A and a["events"] == 8 and a["sample_rate_hz"] == 30000.0
    assert a["lines"] == {1: {"rising": 3, "falling": 3}, 2: {"rising": 1, "falling": 1}}
    assert b["lines"] == {2: {"rising": 2, "falling": 2}, 3: {"rising": 1, "falling": 1}}
    assert a["error"] is None


# --------------------------------------------------------------------------------------------
# Open Ephys, the real v0.6.7 recording

needs_oe = pytest.mark.skipif(not OE_REAL.is_dir(), reason=f"{OE_REAL} not present")
REAL_FILE_READER = "File_Reader-100.example_data"
REAL_NETWORK = "Network_Events-108.example_data"


@needs_oe
def test_real_open_ephys_layout_loads() -> None:
    d = describe_open_ephys(OE_REAL)
    assert d["gui_version"] == "0.6.7"
    assert [c["name"] for c in d["continuous"]] == [REAL_FILE_READER]
    assert d["continuous"][0]["sample_rate_hz"] == 40000.0
    streams = {s["name"]: s for s in d["ttl_streams"]}
    assert list(streams) == [REAL_FILE_READER, REAL_NETWORK]  # MessageCenter is not TTL
    assert streams[REAL_FILE_READER]["events"] == 0 and streams[REAL_FILE_READER]["lines"] == {}
    # Network Events: a test fixture pulsing lines 1..64 once each, not a sync train.
    assert streams[REAL_NETWORK]["events"] == 128
    assert sorted(streams[REAL_NETWORK]["lines"]) == list(range(1, 65))
    assert all(s["error"] is None for s in streams.values())


@needs_oe
def test_real_open_ephys_line_1_gives_the_clear_message() -> None:
    with pytest.raises(RecorderFileError, match="2 streams have TTL events, choose one") as info:
        read_open_ephys(OE_REAL, 1)
    assert f"{REAL_FILE_READER} (0 events; lines none)" in str(info.value)
    assert f"{REAL_NETWORK} (128 events; lines 1-64)" in str(info.value)
    with pytest.raises(RecorderFileError) as info:
        read_edges(f"{OE_REAL}:1:File_Reader")
    assert (f"no rising edges on TTL line 1 in events/{REAL_FILE_READER}/TTL (lines seen: none; "
            f"0 events)") in str(info.value)
    # The network stream's line 1 rises once (and falls on the same sample): read, not a train.
    e = read_open_ephys(OE_REAL, 1, "Network_Events")
    assert e.times.tolist() == [40944.0] and e.falling.tolist() == [40944.0]
    assert e.rate_hz == 40000.0 and e.units == "samples"


# --------------------------------------------------------------------------------------------
# pyPhotometry, synthesized


def test_ppd_v02_round_trip_both_inputs(tmp_path: Path) -> None:
    n = 400
    d1_rises, d2_rises = [10, 90, 250], [5, 33, 120, 399]
    digital = np.stack([pulse_train(n, d1_rises, 7), pulse_train(n, d2_rises, 3)], axis=1)
    analog = np.random.default_rng(0).integers(0, 1 << 15, (n, 2))
    header = {"subject_ID": "m1", "date_time": "2024-01-01T10:00:00", "mode": "2 colour time div.",
              "sampling_rate": 130, "volts_per_division": [1e-4, 1e-4], "LED_current": [10, 10],
              "version": 0.2}
    p = write_ppd(tmp_path / "m1.ppd", header, analog, digital)
    e1 = read_pyphotometry(p, 1)
    np.testing.assert_array_equal(e1.times, d1_rises)
    np.testing.assert_array_equal(e1.falling, [r + 7 for r in d1_rises])
    assert e1.units == "samples" and e1.rate_hz == 130.0 and "digital input 1" in e1.source
    e2 = read_edges(f"{p}:2")
    np.testing.assert_array_equal(e2.times, d2_rises)
    np.testing.assert_array_equal(e2.falling, [8, 36, 123])  # the last pulse never falls
    np.testing.assert_allclose(e2.seconds(), np.array(d2_rises) / 130)


def test_ppd_v1_three_channels_and_v11_pulsed_pairs(tmp_path: Path) -> None:
    n = 200
    rises = [20, 150]
    base = {"sampling_rate": 1000, "volts_per_division": [1e-4] * 3, "n_analog_signals": 3,
            "n_digital_signals": 2}
    digital = np.zeros((n, 3), dtype=np.uint16)
    digital[:, 1] = pulse_train(n, rises, 5)
    digital[:, 2] = 1  # the third channel's low bit is not a digital input
    p = write_ppd(tmp_path / "v10.ppd", {**base, "mode": "3EX_3EM_pulsed", "version": "1.0.2"},
                  np.full((n, 3), 1234), digital)
    np.testing.assert_array_equal(read_pyphotometry(p, 2).times, rises)
    # 1.1, pulsed: an LED-on word then a baseline word per channel; digital in the LED-on word.
    digital = np.zeros((n, 6), dtype=np.uint16)
    digital[:, 2] = pulse_train(n, rises, 5)   # channel 2, LED-on word
    digital[:, 1] = pulse_train(n, [7], 2)     # channel 1 baseline word: must be ignored
    p = write_ppd(tmp_path / "v11.ppd", {**base, "mode": "2EX_2EM_pulsed", "version": "1.1"},
                  np.full((n, 6), 999), digital)
    np.testing.assert_array_equal(read_pyphotometry(p, 2).times, rises)
    with pytest.raises(RecorderFileError, match="no rising edges on digital input 1"):
        read_pyphotometry(p, 1)


def test_ppd_errors(tmp_path: Path) -> None:
    p = tmp_path / "bad.ppd"
    p.write_bytes(b"\x01")
    with pytest.raises(RecorderFileError, match="got 1 bytes"):
        read_pyphotometry(p)
    p.write_bytes((500).to_bytes(2, "little") + b"{}")
    with pytest.raises(RecorderFileError, match="runs past the end"):
        read_pyphotometry(p)
    p.write_bytes((5).to_bytes(2, "little") + b"{nope" + b"\x00\x00")
    with pytest.raises(RecorderFileError, match="expected a JSON header"):
        read_pyphotometry(p)
    n = 50
    write_ppd(p, {"version": 0.2}, np.zeros((n, 2)), np.zeros((n, 2)))
    with pytest.raises(RecorderFileError, match="sampling_rate: expected a positive number"):
        read_pyphotometry(p)
    write_ppd(p, {"version": 0.2, "sampling_rate": 100}, np.zeros((n, 2)), np.zeros((n, 2)))
    with pytest.raises(RecorderFileError, match=r"no rising edges on digital input 1 \(50 samples at "
                                                r"100 Hz; rising edges per input: input 1: 0, input 2: 0\)"):
        read_pyphotometry(p)
    with pytest.raises(RecorderFileError, match=r"digital input: expected 1\.\.2, got 3"):
        read_pyphotometry(p, 3)
    write_ppd(p, {"version": 0.2, "sampling_rate": 100}, np.zeros((0, 2)), np.zeros((0, 2)))
    with pytest.raises(RecorderFileError, match="no samples after the header"):
        read_pyphotometry(p)


# --------------------------------------------------------------------------------------------
# pyPhotometry, the real file

needs_ppd = pytest.mark.skipif(not PPD_REAL.is_file(), reason=f"{PPD_REAL} not present")


@needs_ppd
def test_real_ppd_rsync_train_on_digital_2() -> None:
    e = read_edges(f"{PPD_REAL}:2")
    assert e.rate_hz == 130.0 and e.units == "samples"
    assert len(e) == 722 and e.falling is not None and e.falling.size == 722
    intervals_s = np.diff(e.seconds())
    # pyControl Rsync: rising edge to rising edge = 50 ms pulse + randint(500, 9500) ms, so
    # 0.55-9.55 s, seen through 130 Hz sampling (one sample = 7.7 ms either way).
    one_sample_s = 1 / e.rate_hz
    assert intervals_s.min() >= 0.55 - one_sample_s and intervals_s.max() <= 9.55 + one_sample_s
    assert intervals_s.min() == pytest.approx(71 / 130) and intervals_s.max() == pytest.approx(1239 / 130)
    assert np.mean((intervals_s >= 0.55) & (intervals_s <= 9.5)) > 0.98
    widths = e.falling - e.times  # 50 ms pulses: 6 or 7 samples
    assert set(np.unique(widths)) == {6.0, 7.0}


@needs_ppd
def test_real_ppd_digital_1_is_another_signal() -> None:
    e = read_pyphotometry(PPD_REAL)  # digital 1 by default
    assert len(e) == 127
    assert np.diff(e.seconds()).min() > 8.0  # not the Rsync train: 0.5 s pulses, 8.6-370 s apart


# --------------------------------------------------------------------------------------------
# read_edges


def test_read_edges_dispatch(tmp_path: Path, oe_two_streams: Path) -> None:
    csv = tmp_path / "e.csv"
    csv.write_text("sample\n5\n9\n")
    assert read_edges(str(csv)).units == "samples"
    rec = next(oe_two_streams.rglob("structure.oebin")).parent
    assert read_edges(f"{rec}:1:{STREAM_A}").times.tolist() == [100, 1000, 2500]
    assert read_edges(f"{rec}/structure.oebin:3:{STREAM_B}").times.tolist() == [50]
    assert read_edges(f"{oe_two_streams}:2:NI-DAQmx").times.tolist() == [10, 70]


def test_read_edges_path_with_colon(tmp_path: Path) -> None:
    odd = tmp_path / "run:7.csv"
    odd.write_text("1\n2\n")
    assert read_edges(str(odd)).times.tolist() == [1.0, 2.0]


@pytest.mark.parametrize(("suffix", "message"), [
    ("", "needs the TTL line"),
    (":x", "LINE a positive integer, got 'x'"),
])
def test_read_edges_open_ephys_spec_errors(oe_two_streams: Path, suffix: str, message: str) -> None:
    with pytest.raises(RecorderFileError, match=message):
        read_edges(f"{oe_two_streams}{suffix}")


def test_read_edges_unknown_or_missing(tmp_path: Path) -> None:
    other = tmp_path / "edges.mat"
    other.write_bytes(b"\x00")
    with pytest.raises(RecorderFileError, match=r"unknown format \.mat; accepted forms: .*\.csv.*\.ppd"
                                                r".*RECORDING:LINE"):
        read_edges(str(other))
    with pytest.raises(RecorderFileError, match="no such file or folder; accepted forms"):
        read_edges(str(tmp_path / "missing.csv"))
    with pytest.raises(RecorderFileError, match="empty string"):
        read_edges("  ")
    csv = tmp_path / "e.csv"
    csv.write_text("1\n")
    with pytest.raises(RecorderFileError, match="takes no ':' suffix"):
        read_edges(f"{csv}:2")
