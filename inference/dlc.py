"""Reading a DeepLabCut single-animal project folder as training data for a pose model.

A DeepLabCut project is a folder with ``config.yaml`` (task, scorer, ``bodyparts``, ``skeleton``)
and ``labeled-data/<video>/`` folders, each holding the extracted frames (PNG) and the labels
``CollectedData_<scorer>.h5`` (pandas HDF, key ``df_with_missing``) and/or
``CollectedData_<scorer>.csv``. The label table has one row per image and three column levels
(scorer, bodyparts, coords) with coords ``x`` and ``y`` in image pixels (an empty cell / NaN is a
keypoint that was not labeled, i.e. not visible). Its index is either one column with the relative
path ``labeled-data/<video>/<img>.png`` or, as newer DeepLabCut versions write it, three columns
``labeled-data``, ``<video>``, ``<img>.png``.

Only single-animal projects are read (``multianimalproject: true`` adds an ``individuals``
column level that is not supported yet).

The CSV path needs only the standard library and numpy; the ``.h5`` path imports pandas and
PyTables (``tables``) when it is used.

Length: one job in stages (the project's config, its label files, left/right pairs, the
train/test split, the images); just over 600 lines, read in that order.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rigstream.config import InputError
from rigstream.inference.keypoint_files import preview_items, read_dlc_h5_table

logger = logging.getLogger(__name__)

LABELED_DATA = "labeled-data"
SPLIT_FORMAT = "rigstream-split/1"
_COORDS = ("x", "y")
_IGNORED_COORDS = ("likelihood",)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DlcProjectError(InputError):
    """A DeepLabCut project that cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class LabeledData:
    """The labeled frames of a DeepLabCut project, in a fixed order (``labeled-data`` folders
    sorted by name, rows in the order of each label file).

    Attributes:
        project: the project folder (absolute).
        task: ``Task`` from config.yaml.
        scorer: ``scorer`` from config.yaml.
        keypoints: config.yaml ``bodyparts``, in order (K names).
        skeleton: config.yaml ``skeleton`` as pairs of keypoint names (may be empty).
        left_right: pairs (left, right) of keypoint names that swap under a horizontal flip,
            derived from the names (see :func:`derive_left_right`).
        images: absolute path of each labeled image (N).
        names: each image as ``labeled-data/<video>/<file>`` (N, unique); splits refer to these.
        keypoints_px: (N, K, 2) float32, image pixels (x to the right, y down, pixel centres at
            integer coordinates, as DeepLabCut's labeling GUIs store them); NaN in both x and y
            where the keypoint was not labeled (= not visible).
        image_sizes: (width, height) in pixels of each image (N).
    """

    project: Path
    task: str
    scorer: str
    keypoints: list[str]
    skeleton: list[tuple[str, str]]
    left_right: list[tuple[str, str]]
    images: list[Path]
    names: list[str]
    keypoints_px: np.ndarray
    image_sizes: list[tuple[int, int]]

    def __post_init__(self) -> None:
        n, k = len(self.images), len(self.keypoints)
        if self.keypoints_px.shape != (n, k, 2) or self.keypoints_px.dtype != np.float32:
            raise ValueError(f"{self.project}: keypoints_px must be float32 of shape ({n}, {k}, 2), "
                             f"got {self.keypoints_px.dtype} {self.keypoints_px.shape}")
        if len(self.names) != n or len(self.image_sizes) != n:
            raise ValueError(f"{self.project}: images ({n}), names ({len(self.names)}) and "
                             f"image_sizes ({len(self.image_sizes)}) differ in length")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def unlabeled_rows(self) -> int:
        """Rows (images) with every keypoint NaN; kept (they teach "nothing visible")."""
        if len(self) == 0:
            return 0
        return int(np.isnan(self.keypoints_px).all(axis=(1, 2)).sum())

    @property
    def visible(self) -> np.ndarray:
        """(N, K) bool: the keypoint was labeled in that image."""
        return ~np.isnan(self.keypoints_px).any(axis=2)

    def subset(self, indices: Iterable[int]) -> LabeledData:
        """The rows ``indices`` (in that order) as a new LabeledData; the arrays are copies."""
        idx = [int(i) for i in indices]
        bad = [i for i in idx if not 0 <= i < len(self)]
        if bad:
            raise IndexError(f"{self.project}: row indices {bad[:10]} out of range for {len(self)} images")
        return replace(
            self,
            images=[self.images[i] for i in idx],
            names=[self.names[i] for i in idx],
            keypoints_px=self.keypoints_px[np.asarray(idx, dtype=np.intp)],
            image_sizes=[self.image_sizes[i] for i in idx],
        )

    def index_of(self, names: Iterable[str]) -> list[int]:
        """Row index of each image name; unknown names raise KeyError naming them."""
        lookup = {name: i for i, name in enumerate(self.names)}
        names = list(names)
        missing = [n for n in names if n not in lookup]
        if missing:
            raise KeyError(preview_items(missing))
        return [lookup[n] for n in names]


# ---------------------------------------------------------------------------------------------
# The project


def load_dlc_project(folder: str | Path) -> LabeledData:
    """Read a DeepLabCut single-animal project's config and labels (see the module docstring).

    Raises DlcProjectError naming the file for: a missing or invalid ``config.yaml``, a
    multi-animal project, no labeled-data, label columns that do not match ``bodyparts``, a label
    row whose image is missing or unreadable, and duplicate rows.
    """
    project = Path(folder).expanduser().resolve()
    config_path = project / "config.yaml"
    if not project.is_dir():
        raise DlcProjectError(f"{project}: DeepLabCut project folder not found")
    if not config_path.is_file():
        raise DlcProjectError(f"{project}: no config.yaml (not a DeepLabCut project folder?)")
    config = _read_config(config_path)
    task, scorer, keypoints, skeleton = config

    labeled_root = project / LABELED_DATA
    if not labeled_root.is_dir():
        raise DlcProjectError(f"{labeled_root}: missing (no labeled-data in the project)")
    video_dirs = sorted(p for p in labeled_root.iterdir() if p.is_dir())

    names: list[str] = []
    rows: list[np.ndarray] = []
    for video_dir in video_dirs:
        label_file = _find_label_file(video_dir, scorer)
        if label_file is None:
            continue
        table = _read_label_file(label_file)
        names_here, coords = _table_to_keypoints(table, keypoints, label_file, video_dir.name)
        names.extend(names_here)
        rows.append(coords)
    if not names:
        raise DlcProjectError(f"{labeled_root}: no CollectedData_*.h5/.csv label files with rows "
                              f"(label frames in DeepLabCut first)")
    dupes = sorted(n for n, count in Counter(names).items() if count > 1)
    if dupes:
        raise DlcProjectError(f"{labeled_root}: images labeled more than once: {preview_items(dupes)}")
    keypoints_px = np.concatenate(rows, axis=0).astype(np.float32)

    images = [project / name for name in names]
    sizes: list[tuple[int, int]] = []
    for name, path in zip(names, images, strict=True):
        if not path.is_file():
            raise DlcProjectError(f"{path}: image of label row {name!r} does not exist")
        sizes.append(image_size(path))
    _check_bounds(keypoints_px, sizes, names, project)

    data = LabeledData(
        project=project, task=task, scorer=scorer, keypoints=keypoints, skeleton=skeleton,
        left_right=derive_left_right(keypoints), images=images, names=names,
        keypoints_px=keypoints_px, image_sizes=sizes,
    )
    logger.info("%s: %d labeled images from %d folders, %d keypoints, %d rows with nothing labeled",
                project, len(data), len(rows), len(keypoints), data.unlabeled_rows)
    return data


def _read_config(path: Path) -> tuple[str, str, list[str], list[tuple[str, str]]]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DlcProjectError(f"{path}: cannot read: {exc}") from None
    if not isinstance(doc, dict):
        raise DlcProjectError(f"{path}: expected a YAML mapping")
    if doc.get("multianimalproject"):
        raise DlcProjectError(f"{path}: multianimalproject: true is not supported yet (the "
                              f"'individuals' label level); use a single-animal project")
    task = doc.get("Task")
    scorer = doc.get("scorer")
    if not isinstance(scorer, str) or not scorer:
        raise DlcProjectError(f"{path}: 'scorer' must be a non-empty name, got {scorer!r}")
    task = "" if task is None else str(task)
    bodyparts = doc.get("bodyparts")
    if (not isinstance(bodyparts, list) or not bodyparts
            or not all(isinstance(b, str) and b for b in bodyparts)):
        raise DlcProjectError(f"{path}: 'bodyparts' must be a non-empty list of names, got {bodyparts!r}")
    repeated = sorted({b for b in bodyparts if bodyparts.count(b) > 1})
    if repeated:
        raise DlcProjectError(f"{path}: 'bodyparts' lists {repeated} more than once")
    raw_skeleton = doc.get("skeleton") or []
    if not isinstance(raw_skeleton, list):
        raise DlcProjectError(f"{path}: 'skeleton' must be a list of [bodypart, bodypart] pairs")
    skeleton: list[tuple[str, str]] = []
    for edge in raw_skeleton:
        if not (isinstance(edge, list | tuple) and len(edge) == 2 and all(isinstance(e, str) for e in edge)):
            raise DlcProjectError(f"{path}: skeleton entry {edge!r} is not a pair of bodypart names")
        unknown = [e for e in edge if e not in bodyparts]
        if unknown:
            raise DlcProjectError(f"{path}: skeleton entry {list(edge)} names {unknown}, "
                                  f"not in bodyparts {bodyparts}")
        skeleton.append((edge[0], edge[1]))
    return task, scorer, list(bodyparts), skeleton


def _find_label_file(video_dir: Path, scorer: str) -> Path | None:
    """``CollectedData_<scorer>.h5`` (preferred) or ``.csv``; else the only other scorer's file
    (with a warning); None (with a log line) for a folder without labels."""
    for suffix in (".h5", ".csv"):
        p = video_dir / f"CollectedData_{scorer}{suffix}"
        if p.is_file():
            return p
    found = sorted(p for p in video_dir.glob("CollectedData_*")
                   if p.suffix in (".h5", ".csv") and p.is_file())
    if not found:
        logger.info("%s: no CollectedData_*.h5/.csv, skipped (frames not labeled yet?)", video_dir)
        return None
    scorers = sorted({p.stem[len("CollectedData_"):] for p in found})
    if len(scorers) > 1:
        raise DlcProjectError(f"{video_dir}: no CollectedData_{scorer}.h5/.csv (scorer in config.yaml) "
                              f"and several other scorers' files {[p.name for p in found]}; "
                              f"rename the one to use")
    chosen = next((p for p in found if p.suffix == ".h5"), found[0])
    logger.warning("%s: no CollectedData_%s.h5/.csv (the scorer in config.yaml); using %s",
                   video_dir, scorer, chosen.name)
    return chosen


# ---------------------------------------------------------------------------------------------
# Label files. Both readers produce a _Table: image paths as written in the index, the column
# keys (scorer, bodypart, coord), and (R, C) float64 values with NaN for empty cells.


@dataclass
class _Table:
    index: list[tuple[str, ...]]
    columns: list[tuple[str, str, str]]
    values: np.ndarray


def _read_label_file(path: Path) -> _Table:
    if path.suffix == ".h5":
        return _read_label_h5(path)
    return _read_label_csv(path)


def _read_label_csv(path: Path) -> _Table:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            lines = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DlcProjectError(f"{path}: cannot read: {exc}") from None
    header_names = [row[0].strip() if row else "" for row in lines[:5]]
    if "individuals" in header_names:
        raise DlcProjectError(f"{path}: has an 'individuals' header row (multi-animal labels), "
                              f"which is not supported yet")
    if header_names[:3] != ["scorer", "bodyparts", "coords"]:
        raise DlcProjectError(f"{path}: expected the DeepLabCut header rows scorer/bodyparts/coords "
                              f"in the first column, found {header_names[:3]}")
    scorer_row, bodypart_row, coords_row = lines[0], lines[1], lines[2]
    width = len(coords_row)
    # The index is column 0 plus the following columns that are empty in the coords row
    # (newer DeepLabCut: labeled-data, <video>, <img> in three columns).
    n_index = 1
    while n_index < width and not coords_row[n_index].strip():
        n_index += 1
    if n_index not in (1, 3):
        raise DlcProjectError(f"{path}: expected 1 or 3 index columns before the coordinates, "
                              f"found {n_index}")
    if len(scorer_row) != width or len(bodypart_row) != width:
        raise DlcProjectError(f"{path}: header rows have different lengths "
                              f"({len(scorer_row)}, {len(bodypart_row)}, {width})")
    columns = [(scorer_row[c].strip(), bodypart_row[c].strip(), coords_row[c].strip())
               for c in range(n_index, width)]
    body = lines[3:]
    index: list[tuple[str, ...]] = []
    values = np.full((len(body), width - n_index), np.nan)
    for r, row in enumerate(body):
        line_no = r + 4
        if len(row) > width:
            raise DlcProjectError(f"{path}: row {line_no} has {len(row)} cells, the header {width}")
        row = row + [""] * (width - len(row))
        index.append(tuple(cell.strip() for cell in row[:n_index]))
        for c, cell in enumerate(row[n_index:]):
            cell = cell.strip()
            if not cell or cell.lower() == "nan":
                continue
            try:
                values[r, c] = float(cell)
            except ValueError:
                raise DlcProjectError(f"{path}: row {line_no} ({'/'.join(index[-1])}): {cell!r} in "
                                      f"column {columns[c][1]}/{columns[c][2]} is not a number") from None
    return _Table(index, columns, values)


def _read_label_h5(path: Path) -> _Table:
    df, _ = read_dlc_h5_table(path, DlcProjectError, "labels",
                              "use the CSV labels (move the .h5 away so CollectedData_*.csv is read)")
    level_names = [str(n) if n is not None else "" for n in df.columns.names]
    if "individuals" in level_names or df.columns.nlevels == 4:
        raise DlcProjectError(f"{path}: has an 'individuals' column level (multi-animal labels), "
                              f"which is not supported yet")
    if df.columns.nlevels != 3:
        raise DlcProjectError(f"{path}: expected 3 column levels (scorer, bodyparts, coords), "
                              f"found {df.columns.nlevels} {level_names}")
    columns = [(str(a), str(b), str(c)) for a, b, c in df.columns]
    index = [tuple(str(v) for v in key) if isinstance(key, tuple) else (str(key),) for key in df.index]
    try:
        values = df.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise DlcProjectError(f"{path}: label values are not numbers: {exc}") from None
    return _Table(index, columns, values)


def _table_to_keypoints(table: _Table, keypoints: list[str], path: Path,
                        video: str) -> tuple[list[str], np.ndarray]:
    """Check a label table against config ``bodyparts``; the row names and (R, K, 2) float64
    pixels (NaN both x and y where either is missing)."""
    in_file = {bp for _, bp, _ in table.columns}
    extra = [bp for bp in dict.fromkeys(bp for _, bp, _ in table.columns) if bp not in keypoints]
    if extra:
        raise DlcProjectError(f"{path}: columns for bodyparts {extra} that config.yaml 'bodyparts' "
                              f"does not list ({keypoints})")
    unknown_coords = sorted({c for _, _, c in table.columns} - set(_COORDS) - set(_IGNORED_COORDS))
    if unknown_coords:
        raise DlcProjectError(f"{path}: unknown coordinate columns {unknown_coords} (expected x, y)")
    missing = [bp for bp in keypoints if bp not in in_file]
    if missing:
        raise DlcProjectError(f"{path}: no columns for bodyparts {missing} listed in config.yaml")
    where: dict[tuple[str, str], int] = {}
    for c, (_, bp, coord) in enumerate(table.columns):
        if coord not in _COORDS:
            continue
        if (bp, coord) in where:
            raise DlcProjectError(f"{path}: column {bp}/{coord} appears more than once "
                                  f"(several scorers in one file?)")
        where[(bp, coord)] = c
    half = [f"{bp}/{coord}" for bp in keypoints for coord in _COORDS if (bp, coord) not in where]
    if half:
        raise DlcProjectError(f"{path}: missing coordinate columns {half}")

    cols = [[where[(bp, coord)] for coord in _COORDS] for bp in keypoints]
    coords = table.values[:, cols] if len(table.values) else np.empty((0, len(keypoints), 2))
    half_labeled = np.isnan(coords).any(axis=2) & ~np.isnan(coords).all(axis=2)
    if half_labeled.any():
        logger.warning("%s: %d keypoints have only one of x/y; treated as not labeled",
                       path, int(half_labeled.sum()))
        coords[half_labeled] = np.nan
    names = [_row_name(key, path, video) for key in table.index]
    return names, coords


def _row_name(key: tuple[str, ...], path: Path, video: str) -> str:
    """``labeled-data/<video>/<file>`` from a row's index (one path, or three parts)."""
    parts = [p for cell in key for p in re.split(r"[\\/]+", cell) if p]
    if len(parts) == 1:  # just the file name: the folder the label file is in
        parts = [LABELED_DATA, video, parts[0]]
    if len(parts) < 3 or parts[-3] != LABELED_DATA:
        raise DlcProjectError(f"{path}: row index {'/'.join(key)!r} is not "
                              f"'{LABELED_DATA}/<video>/<image>'")
    if parts[-2] != video:
        raise DlcProjectError(f"{path}: row {'/'.join(parts[-3:])!r} points into another folder "
                              f"than the label file's ({video!r})")
    return "/".join(parts[-3:])


def _check_bounds(px: np.ndarray, sizes: list[tuple[int, int]], names: list[str], project: Path) -> None:
    if not len(px):
        return
    wh = np.asarray(sizes, dtype=np.float64)[:, None, :]  # (N, 1, 2)
    with np.errstate(invalid="ignore"):
        outside = ((px < -0.5) | (px > wh - 0.5)).any(axis=2)
    if outside.any():
        rows = sorted({names[i] for i in np.nonzero(outside)[0]})
        logger.warning("%s: %d labels lie outside their image (e.g. %s)", project,
                       int(outside.sum()), rows[:3])


# ---------------------------------------------------------------------------------------------
# Left/right pairs

# Rules for the mirror name: (pattern, left token, right token, case-insensitive). Full words
# (left/right) match in any case; the abbreviations (l/r) only as written.
_MIRROR_RULES: tuple[tuple[str, str, str, bool], ...] = (
    (r"^(left|right)", "left", "right", True),          # leftear, left_ear, LeftPaw
    (r"(left|right)$", "left", "right", True),          # earleft, ear_left, PawLeft
    (r"(?<=_)(left|right)(?=_)", "left", "right", True),  # front_left_paw
    (r"^(l|r)(?=_)", "l", "r", False),                  # l_ear
    (r"(?<=_)(l|r)$", "l", "r", False),                 # paw_l
    (r"(?<=_)(L|R)$", "L", "R", False),                 # paw_L
    (r"^(L|R)(?=[A-Z_])", "L", "R", False),             # LPaw, L_Paw
)


def _swap_token(token: str, left: str, right: str) -> tuple[str, bool]:
    """The other side's token with the case pattern of ``token``, and whether token is left."""
    is_left = token.lower() == left.lower()
    other = right if is_left else left
    if token.isupper() and len(token) > 1:
        other = other.upper()
    elif token[:1].isupper():
        other = other[:1].upper() + other[1:]
    return other, is_left


def derive_left_right(keypoints: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs (left, right) of keypoint names that swap under a horizontal flip.

    Recognised: ``left*``/``right*`` and ``*left``/``*right`` (any case, e.g. leftear/rightear,
    left_ear/right_ear, LeftPaw/RightPaw, ear_left/ear_right), ``*_left_*``/``*_right_*``,
    ``l_*``/``r_*``, ``*_l``/``*_r`` (also ``*_L``/``*_R``) and a capital ``L``/``R`` prefix before
    another capital or an underscore (LPaw/RPaw, L_ear/R_ear). Only pairs where both names exist;
    each name is in at most one pair; ordered by the left name's position in ``keypoints``.
    """
    names = list(keypoints)
    exact = set(names)
    folded: dict[str, list[str]] = {}
    for n in names:
        folded.setdefault(n.casefold(), []).append(n)
    partner: dict[str, tuple[str, bool]] = {}
    for name in names:
        for pattern, left, right, ci in _MIRROR_RULES:
            m = re.search(pattern, name, flags=re.IGNORECASE if ci else 0)
            if not m:
                continue
            other_token, is_left = _swap_token(m.group(1), left, right)
            mirrored = name[:m.start(1)] + other_token + name[m.end(1):]
            if mirrored in exact:
                match = mirrored
            elif ci and len(folded.get(mirrored.casefold(), [])) == 1:
                match = folded[mirrored.casefold()][0]
            else:
                continue
            if match != name:
                partner[name] = (match, is_left)
                break
    pairs: list[tuple[str, str]] = []
    used: set[str] = set()
    for name in names:
        if name not in partner or name in used:
            continue
        other, is_left = partner[name]
        if other in used or partner.get(other, (None,))[0] != name or not is_left:
            continue
        pairs.append((name, other))
        used.update((name, other))
    return pairs


# ---------------------------------------------------------------------------------------------
# Splits


def train_test_split(data: LabeledData, test_fraction: float = 0.2,
                     seed: int = 0) -> tuple[list[int], list[int]]:
    """A random split of the rows into (train, test) index lists, each sorted.

    Deterministic for a given seed and project (same rows in the same order); disjoint and
    covering; at least one test and one train row when there are two or more rows.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = len(data)
    if n == 0:
        return [], []
    n_test = min(max(round(n * test_fraction), 1), n - 1) if n >= 2 else 0
    order = np.random.default_rng(seed).permutation(n)
    test = sorted(int(i) for i in order[:n_test])
    train = sorted(int(i) for i in order[n_test:])
    return train, test


def write_split(path: str | Path, data: LabeledData, train: Sequence[int], test: Sequence[int]) -> Path:
    """Write a split as JSON with the image names of each side (``labeled-data/<video>/<file>``),
    so a later run finds the same frames even if the project gained images."""
    path = Path(path)
    train_i, test_i = [int(i) for i in train], [int(i) for i in test]
    bad = [i for i in train_i + test_i if not 0 <= i < len(data)]
    if bad:
        raise ValueError(f"{path}: split indices {bad[:10]} out of range for {len(data)} images")
    both = sorted(set(train_i) & set(test_i))
    if both:
        raise ValueError(f"{path}: rows {both[:10]} are in both train and test")
    doc = {
        "format": SPLIT_FORMAT,
        "project": str(data.project),
        "train": [data.names[i] for i in train_i],
        "test": [data.names[i] for i in test_i],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def read_split(path: str | Path, data: LabeledData) -> tuple[list[int], list[int]]:
    """Row indices (train, test), each sorted, of a split written by :func:`write_split`.

    Names that are not in ``data`` are an error naming them; rows in neither list are logged.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DlcProjectError(f"{path}: cannot read split file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != SPLIT_FORMAT:
        raise DlcProjectError(f"{path}: not a split file (expected 'format': {SPLIT_FORMAT!r})")
    sides: dict[str, list[str]] = {}
    for side in ("train", "test"):
        names = doc.get(side)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DlcProjectError(f"{path}: '{side}' must be a list of image names")
        sides[side] = names
    lookup = {name: i for i, name in enumerate(data.names)}
    unknown = [n for n in sides["train"] + sides["test"] if n not in lookup]
    if unknown:
        raise DlcProjectError(f"{path}: {len(unknown)} images not in the project {data.project}: "
                              f"{preview_items(unknown)}")
    both = sorted(set(sides["train"]) & set(sides["test"]))
    if both:
        raise DlcProjectError(f"{path}: images in both train and test: {preview_items(both)}")
    train = sorted({lookup[n] for n in sides["train"]})
    test = sorted({lookup[n] for n in sides["test"]})
    neither = len(data) - len(train) - len(test)
    if neither:
        logger.info("%s: %d labeled images of %s are in neither side of the split",
                    path, neither, data.project)
    return train, test


# ---------------------------------------------------------------------------------------------
# Images


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) in pixels: from the PNG header, or by decoding other formats."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise DlcProjectError(f"{path}: cannot read image: {exc}") from None
    if head.startswith(_PNG_SIGNATURE):
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise DlcProjectError(f"{path}: unreadable image (truncated or corrupt PNG header)")
        width, height = struct.unpack(">II", head[16:24])
        if width == 0 or height == 0:
            raise DlcProjectError(f"{path}: unreadable image (PNG header says {width}x{height})")
        return int(width), int(height)
    img = _decode(path, flags=None)
    return int(img.shape[1]), int(img.shape[0])


def load_image(path: str | Path, channels: int) -> np.ndarray:
    """An image as uint8: (H, W) gray for ``channels=1`` (color converted), or (H, W, 3) RGB for
    ``channels=3`` (gray replicated). Unreadable files raise DlcProjectError naming the path."""
    import cv2

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = _decode(Path(path), flags=cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if channels == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img, dtype=np.uint8)


def _decode(path: Path, flags: int | None) -> np.ndarray:
    """cv2.imdecode of the file's bytes (works for any path name); 8-bit output."""
    import cv2

    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DlcProjectError(f"{path}: cannot read image: {exc}") from None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR if flags is None else flags) if buf.size else None
    if img is None:
        raise DlcProjectError(f"{path}: unreadable image (not a format OpenCV can decode, or corrupt)")
    return img


__all__ = [
    "DlcProjectError",
    "LabeledData",
    "derive_left_right",
    "image_size",
    "load_dlc_project",
    "load_image",
    "read_split",
    "train_test_split",
    "write_split",
]
