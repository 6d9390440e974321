"""Sync-line edge times from a neural recorder's files, for putting a session on its clock.

Every reader returns an :class:`EdgeTimes`: the rising-edge times of one sync line, the falling
ones when the format has them, the units and the sampling rate when the file says. Formats:

- **Edge files** (:func:`read_edge_file`): ``.csv`` / ``.txt`` with one time per row (an
  optional single header row, whose name may give the units: ``t_s``, ``time_ms``,
  ``sample``), or a 1-D ``.npy`` array. Units unknown are ``"?"``.
- **Open Ephys Binary** (:func:`read_open_ephys`, GUI >= 0.5; layout from the Open Ephys
  "Binary format" documentation): ``structure.oebin`` lists the event streams; TTL events of a
  stream live in ``events/<stream folder>/TTL/`` as ``states.npy`` (int16, ``+line`` for a
  rising edge, ``-line`` for a falling one, lines 1-based) and ``sample_numbers.npy`` (int64).
  GUI 0.5 writes ``channel_states.npy`` (same sign convention) and ``timestamps.npy`` (int64
  sample numbers) instead. Times are **sample numbers** of that stream (units ``"samples"``),
  counted from the start of acquisition, like the continuous ``sample_numbers.npy``, not from
  the start of the recording.
- **pyPhotometry** (:func:`read_pyphotometry`, layout from the pyPhotometry "Importing data"
  documentation and the files themselves): a ``.ppd`` file is a little-endian uint16 header
  length, a JSON header, then little-endian uint16 words interleaved per analog channel; the
  top 15 bits of a word are the analog sample, the lowest bit is a digital input: digital
  input *k* is the low bit of analog channel *k*'s words. Times are **sample indices**
  (units ``"samples"``, rate from the header): the index of the first sample that reads high.

:func:`read_edges` is the one entry point for the CLI (``PATH``, ``FILE.ppd:2``,
``RECORDING:LINE[:STREAM]``); :func:`describe_open_ephys` lists what an Open Ephys recording
holds, for messages when the requested line is not there.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.config import InputError

logger = logging.getLogger(__name__)

OEBIN = "structure.oebin"
EDGE_FILE_SUFFIXES = (".csv", ".txt", ".npy")
ACCEPTED_FORMS = (
    "accepted forms: an edge file PATH.csv / PATH.txt / PATH.npy (one time per row, optional "
    "header such as t_s, time_ms, sample); a pyPhotometry FILE.ppd or FILE.ppd:DIGITAL (digital "
    "input 1 or 2, default 1); an Open Ephys recording RECORDING:LINE or RECORDING:LINE:STREAM, "
    "where RECORDING is a recording folder, its structure.oebin, or a folder holding exactly one "
    "recording (Record Node */experiment*/recording*/) and LINE is the 1-based TTL line"
)

_UNIT_WORDS = {
    "s": ("s", "sec", "secs", "second", "seconds"),
    "ms": ("ms", "msec", "msecs", "millisecond", "milliseconds"),
    "us": ("us", "µs", "usec", "usecs", "microsecond", "microseconds"),
    "ns": ("ns", "nsec", "nanosecond", "nanoseconds"),
    "samples": ("sample", "samples", "samplenumber", "samplenumbers", "sample_number", "index"),
}
_SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


class RecorderFileError(InputError):
    """A recorder file or folder that cannot give edge times; the message says what was expected,
    what was found and where."""


@dataclass(frozen=True)
class EdgeTimes:
    """Edge times of one sync line, on the recorder's clock.

    ``times``: (N,) float64, rising-edge times in ``units``, increasing.
    ``units``: ``"s"``, ``"ms"``, ``"us"``, ``"ns"``, ``"samples"``, or ``"?"`` when unknown.
    ``rate_hz``: the recorder's sampling rate when known (converts ``"samples"`` to seconds).
    ``source``: the file and what was read in it, for messages and provenance.
    ``falling``: (M,) float64 falling-edge times in ``units``, or None when the format has none.
    The arrays are made read-only.
    """

    times: np.ndarray
    units: str
    rate_hz: float | None
    source: str
    falling: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("times", "falling"):
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.array(value, dtype=np.float64)
            if arr.ndim != 1:
                raise ValueError(f"EdgeTimes.{name}: expected a 1-D array, got shape {arr.shape}")
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return int(self.times.size)

    def seconds(self) -> np.ndarray:
        """The rising-edge times in seconds, (N,) float64.

        Raises RecorderFileError when the units are unknown, or are samples without a rate."""
        if self.units in _SECONDS_PER_UNIT:
            return self.times * _SECONDS_PER_UNIT[self.units]
        if self.units == "samples" and self.rate_hz:
            return self.times / self.rate_hz
        raise RecorderFileError(f"{self.source}: cannot convert to seconds: units {self.units!r}"
                                f" with sampling rate {self.rate_hz}")


# --------------------------------------------------------------------------------------------
# Edge files


def read_edge_file(path: str | Path) -> EdgeTimes:
    """Read edge times from a ``.csv`` / ``.txt`` (one time per row) or a 1-D ``.npy`` file.

    Text files: blank rows and rows starting with ``#`` are skipped; values may be followed by a
    comma or surrounded by whitespace; the first row may be a header naming the column, and a
    name such as ``t_s``, ``time_ms``, ``time (us)``, ``sample`` gives the units (otherwise
    ``"?"``). The times must be finite and strictly increasing.
    """
    path = Path(path)
    if not path.is_file():
        raise RecorderFileError(f"{path}: expected an edge file, found "
                                f"{'a folder' if path.is_dir() else 'nothing'}")
    if path.suffix.lower() == ".npy":
        times, units, where = _read_npy(path), "?", "array"
    else:
        times, units, where = _read_text(path)
    logger.info("%s: %d edge times (units %s)", path, times.size, units)
    return EdgeTimes(times=times, units=units, rate_hz=None, source=f"{path}: {where}")


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise RecorderFileError(f"{path}: expected a NumPy .npy array of edge times, could not "
                                f"read it: {exc}") from exc
    if not isinstance(arr, np.ndarray):
        raise RecorderFileError(f"{path}: expected one .npy array, got {type(arr).__name__}")
    if arr.ndim != 1:
        raise RecorderFileError(f"{path}: expected a 1-D array of edge times, got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise RecorderFileError(f"{path}: expected a numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise RecorderFileError(f"{path}: empty file: expected at least one edge time")
    times = arr.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(times))
    if bad.size:
        raise RecorderFileError(f"{path}: expected finite times, got {times[bad[0]]:g} at index "
                                f"{bad[0]} ({bad.size} non-finite values in all)")
    _check_increasing(times, path, lambda i: f"index {i}")
    return times


def _read_text(path: Path) -> tuple[np.ndarray, str, str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecorderFileError(f"{path}: expected a text file of edge times: {exc}") from exc
    values: list[float] = []
    line_numbers: list[int] = []
    header: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        row = raw.strip()
        if not row or row.startswith("#"):
            continue
        fields = [f for f in re.split(r"[,;\s]+", row) if f]
        if not fields:  # a row of delimiters only
            continue
        if not values and header is None and not _is_number(fields[0]):
            header = row  # the one header row allowed, before any value
            continue
        if len(fields) != 1:
            raise RecorderFileError(f"{path}: line {number}: expected one time per row, got "
                                    f"{len(fields)} values {row!r}")
        if not _is_number(fields[0]):
            raise RecorderFileError(f"{path}: line {number}: expected a number, got {row!r}")
        value = float(fields[0])
        if not np.isfinite(value):
            what = "NaN" if np.isnan(value) else repr(row)
            raise RecorderFileError(f"{path}: line {number}: expected a finite time, got {what}")
        values.append(value)
        line_numbers.append(number)
    if not values:
        what = f"only a header {header!r}" if header is not None else "no rows"
        raise RecorderFileError(f"{path}: empty file: expected at least one edge time, got {what}")
    times = np.asarray(values, dtype=np.float64)
    _check_increasing(times, path, lambda i: f"line {line_numbers[i]}")
    units = units_from_name(header) if header is not None else "?"
    where = f"column {header!r}" if header is not None else "one time per row"
    return times, units, where


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_increasing(times: np.ndarray, path: Path, where: Callable[[int], str]) -> None:
    back = np.flatnonzero(np.diff(times) <= 0)
    if back.size:
        i = int(back[0]) + 1
        raise RecorderFileError(f"{path}: expected strictly increasing times, got {times[i]:g} at "
                                f"{where(i)} after {times[i - 1]:g} at {where(i - 1)}")


def units_from_name(name: str) -> str:
    """Units named by a column header (``t_s`` -> ``"s"``, ``time_ms`` -> ``"ms"``,
    ``sample`` -> ``"samples"``); ``"?"`` when the name gives none."""
    words = [w for w in re.split(r"[^0-9a-zµ]+", name.lower()) if w]
    for word in reversed(words):
        for units, spellings in _UNIT_WORDS.items():
            if word in spellings:
                return units
    return "?"


# --------------------------------------------------------------------------------------------
# Open Ephys Binary


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


def _rate(value: Any) -> float | None:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        return None
    return rate if rate > 0 and np.isfinite(rate) else None


def _ttl_streams(recording: Path, doc: dict[str, Any]) -> list[_TtlStream]:
    continuous_rates = {str(c.get("folder_name", "")).strip("/"): _rate(c.get("sample_rate"))
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
        rate = _rate(entry.get("sample_rate")) or continuous_rates.get(name)
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
                   "sample_rate_hz": _rate(c.get("sample_rate")),
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


# --------------------------------------------------------------------------------------------
# pyPhotometry


def _version_tuple(value: Any) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", str(value))
    return tuple(int(n) for n in numbers[:3]) or (0,)


def read_ppd_header(path: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """The JSON header and the data words of a pyPhotometry ``.ppd`` file.

    Returns ``(header, words)``; ``words``: (W,) uint16, the raw interleaved samples."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise RecorderFileError(f"{path}: expected a pyPhotometry .ppd file: {exc}") from exc
    if len(blob) < 2:
        raise RecorderFileError(f"{path}: expected a .ppd file (2-byte header length, JSON header, "
                                f"data), got {len(blob)} bytes")
    header_len = int.from_bytes(blob[:2], "little")
    if 2 + header_len > len(blob):
        raise RecorderFileError(f"{path}: header length {header_len} bytes runs past the end of the "
                                f"file ({len(blob)} bytes); not a .ppd file or truncated")
    try:
        header = json.loads(blob[2:2 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecorderFileError(f"{path}: expected a JSON header of {header_len} bytes after the "
                                f"2-byte length: {exc}") from exc
    if not isinstance(header, dict):
        raise RecorderFileError(f"{path}: expected a JSON object header, got {type(header).__name__}")
    data = blob[2 + header_len:]
    if len(data) % 2:
        logger.warning("%s: odd number of data bytes (%d); the last byte is dropped", path, len(data))
        data = data[:-1]
    return header, np.frombuffer(data, dtype="<u2")


def read_pyphotometry(path: str | Path, digital: int = 1) -> EdgeTimes:
    """Rising and falling edges of digital input ``digital`` (1 or 2) of a pyPhotometry file.

    Layout: ``n`` words per sample, ``n`` = 2 before version 1.0, the header's
    ``n_analog_signals`` from 1.0 on, and twice that in pulsed modes from 1.1 on (an LED-on
    word and a baseline word per channel). Digital input *k* is the low bit of the first word of
    analog channel *k*. Returns sample indices (units ``"samples"``, rate from the header's
    ``sampling_rate``): the index of the first high (rising) / first low (falling) sample. A
    line already high at the first sample has no rising edge there.
    """
    path = Path(path)
    header, words = read_ppd_header(path)
    rate_hz = _rate(header.get("sampling_rate"))
    if rate_hz is None:
        raise RecorderFileError(f"{path}: header sampling_rate: expected a positive number, got "
                                f"{header.get('sampling_rate')!r}")
    version = _version_tuple(header.get("version", "0"))
    if version < (1, 0):
        n_analog, n_digital = 2, 2
    else:
        n_analog = header.get("n_analog_signals", 2)
        n_digital = header.get("n_digital_signals", 2)
    if not isinstance(n_analog, int) or not isinstance(n_digital, int) or n_analog < 1:
        raise RecorderFileError(f"{path}: header n_analog_signals / n_digital_signals: expected "
                                f"positive integers, got {n_analog!r} / {n_digital!r}")
    pulsed_pairs = version >= (1, 1) and "pulsed" in str(header.get("mode", ""))
    per_channel = 2 if pulsed_pairs else 1
    per_sample = n_analog * per_channel
    if isinstance(digital, bool) or not isinstance(digital, (int, np.integer)) \
            or not 1 <= digital <= min(n_digital, n_analog):
        raise RecorderFileError(f"{path}: digital input: expected 1..{min(n_digital, n_analog)}, "
                                f"got {digital!r}")
    n_samples = words.size // per_sample
    if words.size % per_sample:
        logger.warning("%s: %d trailing words do not fill a sample of %d words; dropped", path,
                       words.size % per_sample, per_sample)
    if n_samples == 0:
        raise RecorderFileError(f"{path}: no samples after the header (expected words of "
                                f"{per_sample} uint16 per sample)")
    channel = words[: n_samples * per_sample].reshape(n_samples, per_sample)[:, (digital - 1) * per_channel]
    level = (channel & 1).astype(np.int8)
    step = np.diff(level)
    rising = np.flatnonzero(step == 1) + 1
    falling = np.flatnonzero(step == -1) + 1
    source = f"{path}: digital input {digital} (low bit of analog {digital})"
    if rising.size == 0:
        others = []
        for other in range(1, min(n_digital, n_analog) + 1):
            col = words[: n_samples * per_sample].reshape(n_samples, per_sample)[:, (other - 1) * per_channel]
            others.append(f"input {other}: {int(np.count_nonzero(np.diff((col & 1).astype(np.int8)) == 1))}")
        raise RecorderFileError(f"{path}: no rising edges on digital input {digital} ({n_samples} "
                                f"samples at {rate_hz:g} Hz; rising edges per input: {', '.join(others)})")
    logger.info("%s: digital %d: %d rising, %d falling edges over %d samples at %g Hz", path,
                digital, rising.size, falling.size, n_samples, rate_hz)
    return EdgeTimes(times=rising.astype(np.float64), units="samples", rate_hz=rate_hz,
                     source=source, falling=falling.astype(np.float64))


# --------------------------------------------------------------------------------------------
# One entry point


def _int_or_none(text: str) -> int | None:
    return int(text) if re.fullmatch(r"\d+", text.strip()) else None


def read_edges(spec: str) -> EdgeTimes:
    """Edge times from a spec, as the CLI takes it; see :data:`ACCEPTED_FORMS`.

    ``PATH.csv`` / ``PATH.txt`` / ``PATH.npy``: :func:`read_edge_file`. ``FILE.ppd`` or
    ``FILE.ppd:DIGITAL``: :func:`read_pyphotometry`. ``RECORDING:LINE`` or
    ``RECORDING:LINE:STREAM``, RECORDING an Open Ephys folder or ``structure.oebin``:
    :func:`read_open_ephys`. A path that exists as written is never split at ``:``.
    """
    spec = str(spec).strip()
    if not spec:
        raise RecorderFileError(f"edge source: expected a path, got an empty string; {ACCEPTED_FORMS}")
    candidates: list[tuple[Path, list[str]]] = [(Path(spec), [])]
    pieces = spec.split(":")
    for k in (1, 2):
        if len(pieces) > k:
            candidates.append((Path(":".join(pieces[:-k])), pieces[-k:]))
    for path, extra in candidates:
        if path.exists():
            return _dispatch(spec, path, extra)
    raise RecorderFileError(f"edge source {spec!r}: no such file or folder; {ACCEPTED_FORMS}")


def _dispatch(spec: str, path: Path, extra: list[str]) -> EdgeTimes:
    suffix = path.suffix.lower()
    is_open_ephys = path.is_dir() or suffix == ".oebin"
    if suffix in EDGE_FILE_SUFFIXES and path.is_file():
        if extra:
            raise RecorderFileError(f"edge source {spec!r}: an edge file takes no ':' suffix; "
                                    f"{ACCEPTED_FORMS}")
        return read_edge_file(path)
    if suffix == ".ppd" and path.is_file():
        if len(extra) > 1 or (extra and _int_or_none(extra[0]) is None):
            raise RecorderFileError(f"edge source {spec!r}: expected FILE.ppd or FILE.ppd:DIGITAL "
                                    f"with DIGITAL 1 or 2, got suffix {':'.join(extra)!r}")
        return read_pyphotometry(path, int(extra[0]) if extra else 1)
    if is_open_ephys:
        if not extra:
            raise RecorderFileError(f"edge source {spec!r}: an Open Ephys recording needs the TTL "
                                    f"line: {spec}:LINE or {spec}:LINE:STREAM")
        line = _int_or_none(extra[0])
        if line is None:
            raise RecorderFileError(f"edge source {spec!r}: expected RECORDING:LINE[:STREAM] with "
                                    f"LINE a positive integer, got {extra[0]!r}")
        return read_open_ephys(path, line, extra[1] if len(extra) > 1 else None)
    raise RecorderFileError(f"edge source {spec!r}: unknown format {suffix or '(no suffix)'}; "
                            f"{ACCEPTED_FORMS}")
