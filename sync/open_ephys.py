"""Sync-line edge times from an Open Ephys Binary recording (:func:`read_open_ephys`, GUI >= 0.5;
layout from the Open Ephys "Binary format" documentation): ``structure.oebin`` lists the event
streams; TTL events of a stream live in ``events/<stream folder>/TTL/`` as ``states.npy`` (int16,
``+line`` for a rising edge, ``-line`` for a falling one, lines 1-based) and ``sample_numbers.npy``
(int64). GUI 0.5 writes ``channel_states.npy`` (same sign convention) and ``timestamps.npy`` (int64
sample numbers) instead. Times are **sample numbers** of that stream (units ``"samples"``), counted
from the start of acquisition, like the continuous ``sample_numbers.npy``, not from the start of
the recording. :func:`describe_open_ephys` lists what a recording holds, for messages when the
requested line is not there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.sync.edges import EdgeTimes, RecorderFileError

logger = logging.getLogger(__name__)

OEBIN = "structure.oebin"


@dataclass(frozen=True)
class _TtlStream:
    name: str                 # events folder without its TTL part: "Acquisition_Board-100.Rhythm Data"
    folder: str               # relative to the recording: "events/<name>/TTL"
    stream_name: str          # the oebin's "stream_name" ("" for GUI 0.5)
    rate_hz: float | None


@dataclass(frozen=True)
class _TtlEvents:
    states: np.ndarray        # (K,) int64, +line rising, -line falling
    times: np.ndarray         # (K,) int64 sample numbers (float64 seconds when units == "s")
    units: str


def find_open_ephys_recording(path: str | Path) -> Path:
    """The recording folder (the one holding ``structure.oebin``) that ``path`` designates: the
    folder itself, its ``structure.oebin``, or a parent folder holding exactly one recording."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".oebin":
            return path.parent
        raise RecorderFileError(f"{path}: expected an Open Ephys recording folder or its "
                                f"{OEBIN}, got a file")
    if not path.is_dir():
        raise RecorderFileError(f"{path}: expected an Open Ephys recording folder, found nothing there")
    if (path / OEBIN).is_file():
        return path
    found = sorted(p.parent for p in path.rglob(OEBIN))
    if not found:
        raise RecorderFileError(f"{path}: expected an Open Ephys Binary recording (a {OEBIN} in "
                                f"Record Node */experiment*/recording*/), found none under it")
    if len(found) > 1:
        listed = ", ".join(str(p.relative_to(path)) for p in found[:12])
        more = f" and {len(found) - 12} more" if len(found) > 12 else ""
        raise RecorderFileError(f"{path}: expected one Open Ephys recording, found {len(found)}: "
                                f"{listed}{more}; pass one recording folder")
    return found[0]


def _load_oebin(recording: Path) -> dict[str, Any]:
    oebin = recording / OEBIN
    try:
        doc = json.loads(oebin.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecorderFileError(f"{oebin}: expected a JSON structure file: {exc}") from exc
    if not isinstance(doc, dict):
        raise RecorderFileError(f"{oebin}: expected a JSON object, got {type(doc).__name__}")
    return doc


def positive_rate(value: Any) -> float | None:
    """``value`` as a sampling rate: a positive finite float, or None when it is not one."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        return None
    return rate if rate > 0 and np.isfinite(rate) else None


def _ttl_streams(recording: Path, doc: dict[str, Any]) -> list[_TtlStream]:
    continuous_rates = {str(c.get("folder_name", "")).strip("/"): positive_rate(c.get("sample_rate"))
                        for c in doc.get("continuous") or [] if isinstance(c, dict)}
    streams: list[_TtlStream] = []
    seen: set[str] = set()
    for entry in doc.get("events") or []:
        if not isinstance(entry, dict):
            continue
        folder = str(entry.get("folder_name", "")).strip("/")
        parts = folder.split("/")
        ttl_at = [i for i, part in enumerate(parts) if part.upper().startswith("TTL")]
        if not ttl_at or folder in seen:
            continue
        seen.add(folder)
        name = "/".join(parts[:ttl_at[-1]]) or folder
        rate = positive_rate(entry.get("sample_rate")) or continuous_rates.get(name)
        streams.append(_TtlStream(name=name, folder=f"events/{folder}",
                                  stream_name=str(entry.get("stream_name", "")), rate_hz=rate))
    names = [s.name for s in streams]
    if len(set(names)) != len(names):  # GUI 0.5 may have TTL_1, TTL_2 under one processor
        streams = [_TtlStream(s.folder.removeprefix("events/"), s.folder, s.stream_name, s.rate_hz)
                   for s in streams]
    if not streams:  # an oebin that lists none: look on disk
        for ttl in sorted((recording / "events").glob("*/TTL*")):
            if ttl.is_dir():
                name = ttl.parent.name
                streams.append(_TtlStream(name, f"events/{name}/{ttl.name}", "",
                                          continuous_rates.get(name)))
    return streams


def _load_ttl(recording: Path, stream: _TtlStream) -> _TtlEvents:
    folder = recording / stream.folder
    if not folder.is_dir():
        raise RecorderFileError(f"{folder}: listed in {OEBIN} but missing on disk")
    if (folder / "states.npy").is_file():
        states_file = "states.npy"
    elif (folder / "channel_states.npy").is_file():
        states_file = "channel_states.npy"
    else:
        present = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise RecorderFileError(f"{folder}: expected states.npy (GUI >= 0.6) or channel_states.npy "
                                f"(GUI 0.5), found {present}")
    units = "samples"
    if (folder / "sample_numbers.npy").is_file():
        times_file = "sample_numbers.npy"
    elif (folder / "timestamps.npy").is_file():
        times_file = "timestamps.npy"
    else:
        raise RecorderFileError(f"{folder}: expected sample_numbers.npy or timestamps.npy next to "
                                f"{states_file}, found neither")
    states = _load_vector(folder / states_file, "iu")
    times = _load_vector(folder / times_file, "iuf")
    if times.dtype.kind == "f":  # only a newer timestamps.npy holds seconds
        logger.warning("%s: no sample_numbers.npy; timestamps.npy holds floats, read as seconds",
                       folder)
        units = "s"
    if states.size != times.size:
        raise RecorderFileError(f"{folder}: expected {states_file} and {times_file} of equal length, "
                                f"got {states.size} and {times.size}")
    return _TtlEvents(states=states.astype(np.int64), times=times, units=units)


def _load_vector(path: Path, kinds: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise RecorderFileError(f"{path}: could not read the .npy array: {exc}") from exc
    arr = np.asarray(arr)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1 or arr.dtype.kind not in kinds:
        raise RecorderFileError(f"{path}: expected a 1-D numeric array, got shape {arr.shape} "
                                f"dtype {arr.dtype}")
    return arr


def _lines_summary(states: np.ndarray) -> str:
    """The TTL lines seen, as runs: ``"1-3, 7"``, or ``"none"``."""
    lines = sorted({int(abs(s)) for s in np.unique(states)})
    runs: list[list[int]] = []
    for value in lines:
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) or "none"


def _streams_summary(recording: Path, streams: list[_TtlStream]) -> str:
    parts = []
    for s in streams:
        try:
            ev = _load_ttl(recording, s)
            parts.append(f"{s.name} ({ev.states.size} events; lines {_lines_summary(ev.states)})")
        except RecorderFileError:
            parts.append(f"{s.name} (unreadable)")
    return "; ".join(parts)


def _choose_stream(recording: Path, streams: list[_TtlStream], stream: str | None) -> _TtlStream:
    if not streams:
        raise RecorderFileError(f"{recording}: no TTL event streams in {OEBIN} or under events/ "
                                f"(expected events/<stream>/TTL/)")
    if stream is None:
        if len(streams) == 1:
            return streams[0]
        raise RecorderFileError(f"{recording}: {len(streams)} streams have TTL events, choose one "
                                f"(CLI: RECORDING:LINE:STREAM): {_streams_summary(recording, streams)}")
    wanted = stream.strip().strip("/")
    exact = [s for s in streams if wanted in (s.name, s.folder, s.folder.removeprefix("events/"))]
    matches = exact or [s for s in streams if wanted == s.stream_name
                        or s.name.startswith(wanted + ".") or wanted.lower() in s.name.lower()]
    if len(matches) == 1:
        return matches[0]
    what = "matches several streams" if matches else "matches no stream"
    among = matches or streams
    raise RecorderFileError(f"{recording}: stream {stream!r} {what}; streams with TTL events: "
                            f"{_streams_summary(recording, among)}")


def read_open_ephys(folder: str | Path, line: int, stream: str | None = None) -> EdgeTimes:
    """Rising and falling edges of TTL ``line`` (1-based) in an Open Ephys Binary recording.

    ``folder``: the recording folder, its ``structure.oebin``, or a folder holding exactly one
    recording. ``stream``: the TTL stream's folder name (``"Acquisition_Board-100.Rhythm Data"``),
    a unique prefix or part of it, or its ``stream_name``; needed only when several streams
    have TTL events. Returns sample numbers (units ``"samples"``, rate from the oebin).
    Raises RecorderFileError naming the folder, the streams and the lines seen when the line
    never rises.
    """
    if isinstance(line, bool) or not isinstance(line, (int, np.integer)) or line < 1:
        raise RecorderFileError(f"Open Ephys TTL line: expected a positive integer (1-based, as in "
                                f"states.npy), got {line!r}")
    line = int(line)
    recording = find_open_ephys_recording(folder)
    doc = _load_oebin(recording)
    streams = _ttl_streams(recording, doc)
    chosen = _choose_stream(recording, streams, stream)
    events = _load_ttl(recording, chosen)
    rising = events.times[events.states == line]
    falling = events.times[events.states == -line]
    if rising.size == 0:
        raise RecorderFileError(
            f"{recording}: no rising edges on TTL line {line} in {chosen.folder} (lines seen: "
            f"{_lines_summary(events.states)}; {events.states.size} events); streams with TTL "
            f"events: {_streams_summary(recording, streams)}")
    logger.info("%s: %s TTL line %d: %d rising, %d falling edges", recording, chosen.name, line,
                rising.size, falling.size)
    return EdgeTimes(times=rising.astype(np.float64), units=events.units, rate_hz=chosen.rate_hz,
                     source=f"{recording / OEBIN}: {chosen.name} TTL line {line}",
                     falling=falling.astype(np.float64))


def describe_open_ephys(folder: str | Path) -> dict[str, Any]:
    """What an Open Ephys Binary recording holds, for messages when a line is missing.

    Returns ``{"recording": str, "gui_version": str | None, "continuous": [{"name",
    "stream_name", "sample_rate_hz", "num_channels"}], "ttl_streams": [{"name", "folder",
    "stream_name", "sample_rate_hz", "events", "lines": {line: {"rising": n, "falling": m}},
    "error": str | None}]}``. A stream that cannot be read has its ``error`` set instead of
    raising.
    """
    recording = find_open_ephys_recording(folder)
    doc = _load_oebin(recording)
    continuous = [{"name": str(c.get("folder_name", "")).strip("/"),
                   "stream_name": str(c.get("stream_name", "")),
                   "sample_rate_hz": positive_rate(c.get("sample_rate")),
                   "num_channels": c.get("num_channels", len(c.get("channels") or []))}
                  for c in doc.get("continuous") or [] if isinstance(c, dict)]
    ttl: list[dict[str, Any]] = []
    for s in _ttl_streams(recording, doc):
        item: dict[str, Any] = {"name": s.name, "folder": s.folder, "stream_name": s.stream_name,
                                "sample_rate_hz": s.rate_hz, "events": 0, "lines": {}, "error": None}
        try:
            ev = _load_ttl(recording, s)
        except RecorderFileError as exc:
            item["error"] = str(exc)
        else:
            item["events"] = int(ev.states.size)
            for value in sorted({int(abs(v)) for v in np.unique(ev.states)}):
                item["lines"][value] = {"rising": int(np.count_nonzero(ev.states == value)),
                                        "falling": int(np.count_nonzero(ev.states == -value))}
        ttl.append(item)
    return {"recording": str(recording), "gui_version": doc.get("GUI version"),
            "continuous": continuous, "ttl_streams": ttl}

