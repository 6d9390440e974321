"""Sync-line edge times from a neural recorder's files, for putting a session on its clock.

Every reader returns an :class:`~rigstream.sync.edges.EdgeTimes`: the rising-edge times of one
sync line, the falling ones when the format has them, the units and the sampling rate when the
file says. Formats:

- **Edge files** (:func:`read_edge_file`): ``.csv`` / ``.txt`` with one time per row (an
  optional single header row, whose name may give the units: ``t_s``, ``time_ms``,
  ``sample``), or a 1-D ``.npy`` array. Units unknown are ``"?"``.
- **Open Ephys Binary**: read by :mod:`rigstream.sync.open_ephys`.
- **pyPhotometry** (:func:`read_pyphotometry`, layout from the pyPhotometry "Importing data"
  documentation and the files themselves): a ``.ppd`` file is a little-endian uint16 header
  length, a JSON header, then little-endian uint16 words interleaved per analog channel; the
  top 15 bits of a word are the analog sample, the lowest bit is a digital input: digital
  input *k* is the low bit of analog channel *k*'s words. Times are **sample indices**
  (units ``"samples"``, rate from the header): the index of the first sample that reads high.

:func:`read_edges` is the one entry point for the CLI (``PATH``, ``FILE.ppd:2``,
``RECORDING:LINE[:STREAM]``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.sync.edges import EdgeTimes, RecorderFileError
from rigstream.sync.open_ephys import positive_rate, read_open_ephys

logger = logging.getLogger(__name__)

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
    rate_hz = positive_rate(header.get("sampling_rate"))
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
    :func:`~rigstream.sync.open_ephys.read_open_ephys`. A path that exists as written is never split at ``:``.
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
