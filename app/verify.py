"""Check a recorded session folder: every pulse accounted for per camera, one row per
(camera, trigger_index), videos that decode to exactly their rows (a session recorded with
``recording.video: off`` has no whole-session video: its rows must name none), clips that hold
exactly their windows; for the simulated rig, optionally, pixels equal to what the cameras
rendered. Rows without a frame are counted by reason: the camera's drop notice, no record at
all (``lost_in_transport``), or overwritten before the recorder read it (``overrun``).

A session cut short (a kill, a full disk) is what this is for, so damage is reported, never
raised: a table's last row cut off or any row that does not parse is a problem naming the file
and line (the row is left out and the check goes on), and so is a video that stops decoding.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from rigstream.config import RigConfig, load_rig

FRAMES_READ = ("camera", "trigger_index", "video_frame", "dropped")
"""The columns of frames.csv (a session's and a clip's) that verify reads."""
INT_COLUMNS = ("trigger_index", "video_frame", "index")
"""Columns read as integers (where a table has them)."""
FLAG_COLUMNS = ("dropped",)
"""Columns read as 0 or 1."""


def _table(path: Path, columns: tuple[str, ...], problems: list[str]) -> list[dict[str, str]]:
    """The rows of a CSV table that parse. A missing file, a header without ``columns`` and
    each row that does not parse (cut off, extra fields, a bad number) are problems, named by
    file and line."""
    if not path.is_file():
        problems.append(f"{path}: missing")
        return []
    rows: list[dict[str, str]] = []
    with open(path, newline="", errors="replace") as f:  # a byte cut mid-character is a bad row
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        lacking = [c for c in columns if c not in fields]
        if lacking:
            problems.append(f"{path}: the header lacks {', '.join(lacking)} (the file is cut off or "
                            f"not this table)")
            return []
        bad_line = 0
        for row in reader:
            why = _bad_row(row, fields)
            if why:
                bad_line = reader.line_num
                problems.append(f"{path}: line {bad_line}: {why}; row left out")
            else:
                rows.append(row)
        last_line = reader.line_num
    if rows and last_line != bad_line and not _ends_with_newline(path):
        rows.pop()  # all its fields are there, but the last one may be cut short
        problems.append(f"{path}: line {last_line}: the last row is cut off (no line end); row left out")
    return rows


def _bad_row(row: dict[str | None, Any], fields: list[str]) -> str:
    """Why a row does not parse ('' when it does)."""
    if None in row:
        return f"{len(fields) + len(row[None])} fields, the header has {len(fields)}"
    missing = sum(v is None for v in row.values())
    if missing:
        return f"cut off: {len(fields) - missing} of {len(fields)} fields"
    for k in INT_COLUMNS:
        if k in row and not _is_int(row[k]):
            return f"{k}: expected an integer, got {row[k]!r}"
    for k in FLAG_COLUMNS:
        if k in row and row[k] not in ("0", "1"):
            return f"{k}: expected 0 or 1, got {row[k]!r}"
    return ""


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _ends_with_newline(path: Path) -> bool:
    """Whether the file ends a row: the CSV writer ends every row with a line end, so a file
    without one was cut in its last row."""
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _rows(path: Path, problems: list[str]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in _table(path, FRAMES_READ, problems):
        out[row["camera"]].append(row)
    return out


def _check_video(video: Path, rows: list[dict[str, str]], camera: str, truth: Any,
                 problems: list[str]) -> int:
    import av

    from rigstream.acquisition.video import read_frames

    kept = [int(r["trigger_index"]) for r in rows if r["dropped"] == "0"]
    decoded = 0
    try:
        for decoded, img in enumerate(read_frames(video), start=1):
            if truth is not None and decoded <= len(kept) and \
                    not (img == truth.image(camera, kept[decoded - 1])).all():
                problems.append(f"{video}: frame of trigger {kept[decoded - 1]} differs from the render")
    except (av.error.FFmpegError, OSError) as exc:  # a cut-off, empty or missing file
        problems.append(f"{video}: decoding stopped after {decoded} frames: {type(exc).__name__}: {exc}")
    if decoded != len(kept):
        problems.append(f"{video}: decodes to {decoded} frames, rows say {len(kept)}")
    return decoded


def _lost_by_reason(camera: str, rows: list[dict[str, str]], problems: list[str]) -> dict[str, int]:
    """Rows without a frame by reason: ``camera`` (its drop notice), ``lost_in_transport``,
    ``overrun`` (tables written before the ``overrun`` column have none)."""
    lost = {"camera": 0, "lost_in_transport": 0, "overrun": 0}
    for r in rows:
        if r["dropped"] != "1":
            if r.get("lost_in_transport") == "1" or r.get("overrun") == "1":
                problems.append(f"{camera}: trigger index {r['trigger_index']} is marked lost or "
                                f"overrun but not dropped")
            continue
        if r.get("overrun") == "1":
            lost["overrun"] += 1
        elif r.get("lost_in_transport") == "1":
            lost["lost_in_transport"] += 1
        else:
            lost["camera"] += 1
    return lost


def verify_session(folder: str | Path, truth: bool = False) -> dict[str, Any]:
    """A report: per camera rows, frames, drops (``lost``: by reason) and decoded frames (None
    for a session without video); ``problems`` lists what is wrong (empty for a sound session)."""
    folder = Path(folder)
    rig = load_rig(folder / "rig.yaml")
    renderer = None
    if truth:
        from rigstream.acquisition.sim_camera import TruthRenderer

        renderer = TruthRenderer(rig)
    problems: list[str] = []
    pulse_rows = _table(folder / "pulses.csv", ("index", "line"), problems)
    pulses = sum(1 for r in pulse_rows if r["line"] == "camera")
    rows = _rows(folder / "frames.csv", problems)
    video_on = rig.recording.video == "on"
    cameras: dict[str, Any] = {}
    for cam in rig.cameras:
        cam_rows = rows.get(cam.name, [])
        indices = [int(r["trigger_index"]) for r in cam_rows]
        if sorted(indices) != list(range(pulses)):
            dup = len(indices) - len(set(indices))
            problems.append(f"{cam.name}: {len(indices)} rows for {pulses} pulses "
                            f"({dup} duplicated)")
        dropped = [int(r["trigger_index"]) for r in cam_rows if r["dropped"] == "1"]
        lost = _lost_by_reason(cam.name, cam_rows, problems)
        if video_on:
            decoded: int | None = _check_video(folder / "video" / f"{cam.name}.mkv", cam_rows,
                                               cam.name, renderer, problems)
        else:
            decoded = None
            named = [int(r["trigger_index"]) for r in cam_rows if int(r["video_frame"]) >= 0]
            if named:
                problems.append(f"{cam.name}: {len(named)} rows name a video frame (first at "
                                f"trigger index {named[0]}), but the session was recorded without video")
        cameras[cam.name] = {"rows": len(cam_rows), "frames": len(cam_rows) - len(dropped),
                             "dropped": len(dropped), "lost": lost, "decoded": decoded}
    clips = [verify_clip(info_path.parent, rig, renderer, problems)
             for info_path in sorted(folder.glob("clips/*/event.json"))]
    return {"session": str(folder), "pulses": pulses, "video": rig.recording.video,
            "cameras": cameras, "clips": clips, "pixels_checked": truth, "problems": problems}


def verify_clip(clip: Path, rig: RigConfig, renderer: Any, problems: list[str]) -> dict[str, Any]:
    """Check one clip folder: each camera's rows are exactly the clip's window (its rule's, else
    the ring buffer's), and its video decodes to its frame rows (``renderer``: and equals the
    simulated cameras' pixels). Appends what is wrong to ``problems``."""
    try:
        info = json.loads((clip / "event.json").read_text())
        indices = [int(e["trigger_index"]) for e in info["events"]]
        if not indices:
            raise ValueError("no events")
    except (ValueError, KeyError, TypeError) as exc:  # written last: a kill can cut it short
        problems.append(f"{clip / 'event.json'}: unreadable ({type(exc).__name__}: {exc}); clip not checked")
        return {"clip": clip.name, "start": None, "end": None, "events": 0, "frames": {}}
    pre = info.get("pre_frames", rig.frames_per(rig.ring_buffer.pre_s))
    post = info.get("post_frames", rig.frames_per(rig.ring_buffer.post_s))
    want = list(range(max(0, min(indices) - pre), max(indices) + post + 1))
    clip_rows = _rows(clip / "frames.csv", problems)
    for cam in rig.cameras:
        got = [int(r["trigger_index"]) for r in clip_rows.get(cam.name, [])]
        if got != want:
            problems.append(f"{clip.name}/{cam.name}: indices {got[:1]}..{got[-1:]} ({len(got)}), "
                            f"expected [{want[0]}, {want[-1]}]")
        video = clip / f"{cam.name}.mkv"
        if video.exists() or any(r["dropped"] == "0" for r in clip_rows.get(cam.name, [])):
            _check_video(video, clip_rows.get(cam.name, []), cam.name, renderer, problems)
    return {"clip": clip.name, "start": want[0], "end": want[-1], "events": len(indices),
            "frames": {c: sum(r["dropped"] == "0" for r in rows) for c, rows in clip_rows.items()}}
