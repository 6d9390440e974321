"""``inputs.csv``: every edge of the apparatus's inputs, on the trigger clock.

The trigger daemon publishes each accepted input edge as a pulse line (``input:<name>`` when
the line becomes active, ``input:<name>-off`` when it is released; see
:mod:`rigstream.firmware.apparatus`), stamped on the Pi's clock like the camera pulses, and the
recorder writes them to ``pulses.csv`` with the rest. After the session, this module writes one
row per edge::

    input, activation, state, t_pi_ns, trigger_index, since_pulse_us

``state`` is ``on`` or ``off``; ``activation`` counts the input's activations from 0 (an ``off``
row has the activation it ends). ``trigger_index`` is the frame whose exposure the edge falls in
or after: the last camera pulse at or before the edge (-1 before the first pulse), found on the
one clock both were stamped on, so it is exact whatever order the messages travelled in.
``since_pulse_us`` is how long after that pulse the edge came. Edges are in time order. Where
the pose engine mapped the edges to the neural recorder's clock while the session ran
(``input_edges_live.csv``), ``live_t_neural_<units>`` carries that time.
:mod:`rigstream.sync.session_align` adds ``t_neural_<units>`` like every other table.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from rigstream.config import InputError

logger = logging.getLogger(__name__)

INPUTS_FILE = "inputs.csv"
LIVE_INPUTS_FILE = "input_edges_live.csv"
"""The edges as the pose engine saw them while the session ran, with their live neural time."""
COLUMNS = ("input", "activation", "state", "t_pi_ns", "trigger_index", "since_pulse_us")


class InputsTableError(InputError):
    pass


def write_inputs_table(session: str | Path) -> dict[str, int]:
    """Write ``inputs.csv`` from a session's ``pulses.csv``; the activations (``on`` edges)
    written per input. Nothing is written, and ``{}`` returned, when the session recorded no
    input edges."""
    folder = Path(session)
    path = folder / "pulses.csv"
    if not path.is_file():
        raise InputsTableError(f"{path}: not found (is this a rigstream session folder?)")
    cam_index: list[int] = []
    cam_t: list[int] = []
    edges: list[tuple[int, str, int, str]] = []  # (t, input, activation, state)
    with open(path, newline="") as f:
        for line_no, row in enumerate(csv.DictReader(f), start=2):
            line = row.get("line") or ""
            try:
                index, t = int(row["index"]), int(row["t_pi_ns"])
            except (KeyError, TypeError, ValueError):
                logger.warning("%s: line %d is not a pulse row; ignored", path, line_no)
                continue
            if line == "camera":
                cam_index.append(index)
                cam_t.append(t)
            elif line.startswith("input:"):
                name = line[len("input:"):]
                off = name.endswith("-off")
                edges.append((t, name[:-4] if off else name, index, "off" if off else "on"))
    if not edges:
        return {}
    order = np.argsort(cam_t, kind="stable")
    times = np.asarray(cam_t, np.int64)[order]
    indices = np.asarray(cam_index, np.int64)[order]
    edges.sort(key=lambda e: e[0])
    live_column, live = _live_times(folder)
    out = folder / INPUTS_FILE
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([*COLUMNS, *([live_column] if live_column else [])])
        for t, name, activation, state in edges:
            at = int(np.searchsorted(times, t, side="right")) - 1
            n, since = (int(indices[at]), f"{(t - int(times[at])) / 1000:.3f}") if at >= 0 else (-1, "")
            w.writerow([name, activation, state, t, n, since,
                        *([live.get((name, state, t), "")] if live_column else [])])
    tmp.replace(out)
    activations: dict[str, int] = {}
    for _, name, _, state in edges:
        if state == "on":
            activations[name] = activations.get(name, 0) + 1
    return activations


def _live_times(folder: Path) -> tuple[str | None, dict[tuple[str, str, int], str]]:
    """The live neural time of each edge the pose engine saw (``LIVE_INPUTS_FILE``), by (input,
    state, t_pi_ns); no column when the session had no live clock."""
    path = folder / LIVE_INPUTS_FILE
    if not path.is_file():
        return None, {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        column = next((c for c in reader.fieldnames or () if c.startswith("live_t_neural_")), None)
        if column is None:
            return None, {}
        times = {}
        for row in reader:
            try:
                times[(row["input"], row["state"], int(row["t_pi_ns"]))] = row[column] or ""
            except (KeyError, TypeError, ValueError):
                continue  # a row cut short by a killed engine
    return column, times
