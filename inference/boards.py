"""Calibration boards (ChArUco and checkerboard), their corners, and finding them in images.

A :class:`Board` is read from anipose's board description, either a flat file::

    board_x = 8            # ChArUco: squares across; checkerboard: inner corners across
    board_y = 11
    square_length = 24.0   # board units (mm for ours); the calibration comes out in them
    marker_length = 18.75  # ChArUco only: a file without it describes a checkerboard
    marker_bits = 4
    dict_size = 1000

or the ``[calibration]`` section of an anipose ``config.toml`` (``board_type``,
``board_size = [x, y]``, ``board_square_side_length``, ``board_marker_length``,
``board_marker_bits``, ``board_marker_dict_number``), or a caliscope project's ``config.toml``
(its ``[charuco]`` table, see :func:`caliscope_board`), or inline as ``checkerboard:9x6:30`` /
``charuco:8x11:24:18.75[:4x4_1000][:inverted]``.

Inverted boards (white markers and squares on black, as caliscope prints to save ink) carry
``inverted``: detection inverts the grayscale image first. A ChArUco board not found in an image
is looked for in the other polarity too (:func:`detect`), so a lab that forgot the flag still
calibrates, and the :class:`Detection` says it was found inverted.

Size conventions follow aniposelib: a ChArUco size counts *squares*, a checkerboard size counts
*inner corners* (what ``cv2.findChessboardCorners`` calls the pattern size; aniposelib's
``Checkerboard`` hands ``board_size`` to it unchanged). :class:`Board` itself always stores
squares, so ``squares_x`` means the same for both kinds.

Corner ids run along x first: corner ``(col, row)`` has id ``row * corners_x + col`` and sits at
``(col, row, 0) * square_length`` on the board, for both kinds (OpenCV's ChArUco numbering and
``findChessboardCorners``' order). Checkerboard detections are put in a fixed orientation
(see :func:`detect`) so that two cameras name the same corner alike.

Images come from folders and videos: :mod:`rigstream.inference.board_sources`.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import tomllib

from rigstream.config import InputError

logger = logging.getLogger(__name__)

BoardKind = Literal["charuco", "checkerboard"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm")

_DICT_SIZES = (50, 100, 250, 1000)
_MARKER_BITS = (4, 5, 6, 7)


class BoardError(InputError):
    """A board description, image or video that cannot be used; says what and where."""


@dataclass(frozen=True)
class Board:
    """A planar calibration target. Lengths are in board units (mm for our boards); the
    calibration's translations come out in the same unit."""

    kind: BoardKind
    squares_x: int
    """Squares across (for a checkerboard: inner corners across + 1)."""
    squares_y: int
    """Squares down (for a checkerboard: inner corners down + 1)."""
    square_length: float
    """Side of one chessboard square, board units (mm)."""
    marker_length: float | None = None
    """ChArUco: side of one ArUco marker, board units (mm); None for a checkerboard."""
    marker_bits: int = 4
    """ChArUco: marker grid size (4 for DICT_4X4_*)."""
    dict_size: int = 50
    """ChArUco: markers in the dictionary (1000 for DICT_4X4_1000)."""
    legacy_pattern: bool | None = None
    """ChArUco: OpenCV < 4.6 layout (``setLegacyPattern``). It differs from the current layout only
    when ``squares_y`` is even; None tries the current layout first and the legacy one when the
    current finds less than half the corners (boards printed by older anipose/OpenCV)."""
    inverted: bool = False
    """Printed in negative (white markers on black, caliscope's ink-saving print): images are
    inverted (255 - gray) before detection, so the corners and their ids are those of the
    positive board."""

    def __post_init__(self) -> None:
        where = f"board {self.kind}"
        if self.kind not in ("charuco", "checkerboard"):
            raise BoardError(f"board kind: expected 'charuco' or 'checkerboard', got {self.kind!r}")
        if not isinstance(self.inverted, bool):
            raise BoardError(f"{where}.inverted: expected true or false, got {self.inverted!r}")
        for name in ("squares_x", "squares_y"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 3:
                raise BoardError(f"{where}.{name}: expected an integer >= 3 squares, got {value!r}")
        if not (isinstance(self.square_length, (int, float)) and self.square_length > 0):
            raise BoardError(f"{where}.square_length: expected a positive number, got {self.square_length!r}")
        if self.kind == "charuco":
            marker = self.marker_length
            if not (isinstance(marker, (int, float)) and 0 < marker < self.square_length):
                raise BoardError(f"{where}.marker_length: expected a positive number below square_length "
                                 f"{self.square_length}, got {self.marker_length!r}")
            if self.marker_bits not in _MARKER_BITS:
                raise BoardError(f"{where}.marker_bits: expected one of {_MARKER_BITS}, "
                                 f"got {self.marker_bits!r}")
            if self.dict_size not in _DICT_SIZES:
                raise BoardError(f"{where}.dict_size: expected one of {_DICT_SIZES}, got {self.dict_size!r}")
            markers = self.squares_x * self.squares_y // 2
            if markers > self.dict_size:
                raise BoardError(f"{where}: {self.squares_x}x{self.squares_y} squares need {markers} "
                                 f"markers, dictionary has {self.dict_size}")

    # ------------------------------------------------------------------ geometry

    @property
    def corners_x(self) -> int:
        """Inner corners across."""
        return self.squares_x - 1

    @property
    def corners_y(self) -> int:
        """Inner corners down."""
        return self.squares_y - 1

    @property
    def n_corners(self) -> int:
        return self.corners_x * self.corners_y

    @property
    def object_points(self) -> np.ndarray:
        """(n_corners, 3) float64 corner positions on the board (z = 0), board units; row i is id i."""
        col, row = np.meshgrid(np.arange(self.corners_x), np.arange(self.corners_y))
        pts = np.zeros((self.n_corners, 3))
        pts[:, 0] = col.ravel() * self.square_length
        pts[:, 1] = row.ravel() * self.square_length
        return pts

    @property
    def dictionary_name(self) -> str:
        return f"DICT_{self.marker_bits}X{self.marker_bits}_{self.dict_size}"

    def describe(self) -> str:
        """For messages: ``8x11 ChArUco (DICT_4X4_1000)`` or ``9x6 inner-corner checkerboard``
        (``, inverted`` added for an inverted board)."""
        if self.kind == "charuco":
            inv = ", inverted" if self.inverted else ""
            return f"{self.squares_x}x{self.squares_y} ChArUco ({self.dictionary_name}{inv})"
        return f"{self.corners_x}x{self.corners_y} inner-corner checkerboard" + (
            " (inverted)" if self.inverted else "")

    def describe_size(self) -> str:
        """The sizes as configured, to hold against the printout: ``8x11 squares of 24 mm,
        markers 18.75 mm, DICT_4X4_1000``. Board units are taken as mm (anipose's and our convention)."""
        square = f"{self.square_length:g} mm"
        if self.kind == "charuco":
            return (f"{self.squares_x}x{self.squares_y} squares of {square}, markers "
                    f"{(self.marker_length or 0.0):g} mm, {self.dictionary_name}")
        return (f"{self.corners_x}x{self.corners_y} inner corners "
                f"({self.squares_x}x{self.squares_y} squares) of {square}")

    def to_dict(self) -> dict[str, Any]:
        """The board in the flat anipose layout (TOML/JSON-able)."""
        if self.kind == "checkerboard":
            flat = {"board_type": "checkerboard", "board_x": self.corners_x, "board_y": self.corners_y,
                    "square_length": float(self.square_length)}
            return {**flat, "inverted": True} if self.inverted else flat
        out: dict[str, Any] = {"board_type": "charuco", "board_x": self.squares_x, "board_y": self.squares_y,
                               "square_length": float(self.square_length),
                               "marker_length": float(self.marker_length or 0.0),
                               "marker_bits": self.marker_bits, "dict_size": self.dict_size}
        if self.legacy_pattern is not None:
            out["legacy_pattern"] = self.legacy_pattern
        if self.inverted:
            out["inverted"] = True
        return out

    def opencv_board(self, legacy: bool = False) -> cv2.aruco.CharucoBoard:
        """The OpenCV ChArUco board (ChArUco only)."""
        if self.kind != "charuco":
            raise BoardError(f"{self.describe()}: not a ChArUco board")
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary_name))
        board = cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), float(self.square_length),
                                       float(self.marker_length or 0.0), dictionary)
        board.setLegacyPattern(legacy)
        return board


# ---------------------------------------------------------------------- reading boards

_FLAT_KEYS = {"board_type", "board_x", "board_y", "square_length", "marker_length", "marker_bits",
              "dict_size", "legacy_pattern", "inverted"}
_ANIPOSE_KEYS = {"board_type": "board_type", "board_size": "board_size",
                 "board_square_side_length": "square_length", "board_marker_length": "marker_length",
                 "board_marker_bits": "marker_bits", "board_marker_dict_number": "dict_size"}


def load_board(path: str | Path) -> Board:
    """Read a board from a flat anipose board file, an anipose ``config.toml``'s
    ``[calibration]`` section (other keys of that section, e.g. ``animal_calibration``, are
    ignored there; unknown keys in a flat file are errors), or a caliscope ``config.toml``'s
    ``[charuco]`` table (see :func:`caliscope_board`)."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except OSError as exc:
        raise BoardError(f"{p}: cannot read board file: {exc.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BoardError(f"{p}: not a valid TOML board file: {exc}") from None
    return board_from_dict(doc, str(p))


def board_from_dict(doc: dict[str, Any], where: str = "<board>") -> Board:
    """A :class:`Board` from a decoded board file (any layout); ``where`` names it in errors."""
    if isinstance(doc.get("charuco"), dict):
        return caliscope_board(doc["charuco"], f"{where} [charuco]")
    if "columns" in doc and "rows" in doc and "board_x" not in doc:
        # caliscope >= 0.6 keeps the same keys at the top of calibration/targets/*_charuco.toml.
        return caliscope_board(doc, where)
    if "calibration" in doc and isinstance(doc["calibration"], dict):
        section = doc["calibration"]
        where = f"{where} [calibration]"
        flat = {new: section[old] for old, new in _ANIPOSE_KEYS.items() if old in section}
        size = flat.pop("board_size", None)
        if size is None:
            raise BoardError(f"{where}: missing board_size (expected [x, y])")
        if not (isinstance(size, list) and len(size) == 2):
            raise BoardError(f"{where}.board_size: expected [x, y], got {size!r}")
        flat["board_x"], flat["board_y"] = size
        if "board_type" not in flat:
            raise BoardError(f"{where}: missing board_type (expected \"charuco\" or \"checkerboard\")")
    else:
        unknown = sorted(set(doc) - _FLAT_KEYS)
        if unknown:
            raise BoardError(f"{where}: unknown key {', '.join(unknown)} (expected "
                             f"{', '.join(sorted(_FLAT_KEYS))}, or an anipose [calibration] section)")
        flat = dict(doc)
    for key in ("board_x", "board_y", "square_length"):
        if key not in flat:
            raise BoardError(f"{where}: missing {key}")
    kind = str(flat.get("board_type", "charuco" if "marker_length" in flat else "checkerboard")).lower()
    if kind not in ("charuco", "checkerboard"):
        raise BoardError(f"{where}.board_type: expected \"charuco\" or \"checkerboard\", got {kind!r}")
    bx, by = flat["board_x"], flat["board_y"]
    for key, value in (("board_x", bx), ("board_y", by)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise BoardError(f"{where}.{key}: expected an integer, got {value!r}")
    square = _number(flat["square_length"], f"{where}.square_length")
    inverted = _flag(flat.get("inverted", False), f"{where}.inverted")
    try:
        if kind == "checkerboard":
            return Board("checkerboard", bx + 1, by + 1, square, inverted=inverted)
        if "marker_length" not in flat:
            raise BoardError(f"{where}: missing marker_length (needed by a ChArUco board)")
        legacy = flat.get("legacy_pattern")
        if legacy is not None:
            legacy = _flag(legacy, f"{where}.legacy_pattern")
        return Board("charuco", bx, by, square, _number(flat["marker_length"], f"{where}.marker_length"),
                     int(flat.get("marker_bits", 4)), int(flat.get("dict_size", 50)), legacy, inverted)
    except BoardError as exc:
        if str(exc).startswith(where):
            raise
        raise BoardError(f"{where}: {exc}") from None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BoardError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise BoardError(f"{where}: expected true or false, got {value!r}")
    return value


MM_PER_CM = 10.0
MM_PER_INCH = 25.4
_CALISCOPE_DICT = re.compile(r"^DICT_(?P<bits>\d)X(?P=bits)_(?P<size>\d+)$")


def caliscope_board(table: dict[str, Any], where: str = "<board> [charuco]") -> Board:
    """A ChArUco :class:`Board`, in mm, from caliscope's ``[charuco]`` table.

    caliscope's meaning of the keys (its documentation, "Calibration Targets", and its
    ``Charuco`` class, which builds ``cv2.aruco.CharucoBoard((columns, rows), ...)``):

    - ``columns``, ``rows``: squares across and down (OpenCV's board size; not interchangeable);
      they become :attr:`Board.squares_x`, :attr:`Board.squares_y`.
    - ``dictionary``: an OpenCV dictionary name, ``DICT_4X4_50``; we read the ``DICT_nXn_size``
      ones (AprilTag and ARUCO_ORIGINAL dictionaries are refused by name).
    - ``square_size_overide_cm`` (sic): the square side as measured on the print, in cm. It is
      the board's scale, so our square length is it x 10 (mm: :class:`Board` lengths are mm for
      our boards, and the calibration's translations come out in them).
    - ``board_width``, ``board_height`` in ``units`` (``inch`` or ``cm``): the size of the printed
      image. caliscope uses them only when no square size is given (the largest square that
      fits: min(height / rows, width / columns)); so do we, with a warning, because a printer's
      scaling changes the real size.
    - ``aruco_scale``: marker side / square side (caliscope's default 0.75), so the marker length
      is aruco_scale x square length.
    - ``inverted``: printed in negative (white on black); kept as :attr:`Board.inverted`.
    - ``legacy_pattern`` (newer caliscope): OpenCV's pre-4.6 layout; absent, both are tried.

    Other keys (caliscope's mirror and thickness settings) are ignored. Errors name ``where``
    and the key, on one line.
    """

    def need(key: str) -> Any:
        if key not in table:
            raise BoardError(f"{where}: missing {key}")
        return table[key]

    size: dict[str, int] = {}
    for key in ("columns", "rows"):
        value = need(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 3:
            raise BoardError(f"{where}.{key}: expected an integer >= 3 squares, got {value!r}")
        size[key] = value
    name = table.get("dictionary", "DICT_4X4_50")
    m = _CALISCOPE_DICT.match(name) if isinstance(name, str) else None
    if m is None or int(m["bits"]) not in _MARKER_BITS or int(m["size"]) not in _DICT_SIZES:
        raise BoardError(f"{where}.dictionary: expected DICT_<n>X<n>_<size> with n in {_MARKER_BITS} "
                         f"and size in {_DICT_SIZES} (e.g. \"DICT_4X4_50\"), got {name!r}")
    bits, dict_size = int(m["bits"]), int(m["size"])
    markers = size["columns"] * size["rows"] // 2
    if markers > dict_size:
        raise BoardError(f"{where}.dictionary: {size['columns']}x{size['rows']} squares need {markers} "
                         f"markers, {name} has {dict_size}")
    override = table.get("square_size_overide_cm")
    if override is not None and override != 0:
        square_mm = _number(override, f"{where}.square_size_overide_cm") * MM_PER_CM
        if square_mm <= 0:
            raise BoardError(f"{where}.square_size_overide_cm: expected a positive number of cm, "
                             f"got {override!r}")
    else:
        units = table.get("units", "inch")
        if units not in ("inch", "cm"):
            raise BoardError(f"{where}.units: expected \"inch\" or \"cm\", got {units!r}")
        per_unit = MM_PER_INCH if units == "inch" else MM_PER_CM
        width = _number(need("board_width"), f"{where}.board_width")
        height = _number(need("board_height"), f"{where}.board_height")
        if width <= 0 or height <= 0:
            key = "board_width" if width <= 0 else "board_height"
            raise BoardError(f"{where}.{key}: expected a positive number of {units}, got {table[key]!r}")
        square_mm = min(height / size["rows"], width / size["columns"]) * per_unit
        logger.warning("%s: no square_size_overide_cm; square length %.2f mm from the board size "
                       "(measure the printed squares and set it: printers scale)", where, square_mm)
    scale = _number(table.get("aruco_scale", 0.75), f"{where}.aruco_scale")
    if not 0 < scale < 1:
        raise BoardError(f"{where}.aruco_scale: expected a number between 0 and 1 (marker side / square "
                         f"side), got {table['aruco_scale']!r}")
    inverted = _flag(table.get("inverted", False), f"{where}.inverted")
    legacy = table.get("legacy_pattern")
    if legacy is not None:
        legacy = _flag(legacy, f"{where}.legacy_pattern")
    return Board("charuco", size["columns"], size["rows"], square_mm, scale * square_mm, bits, dict_size,
                 legacy, inverted)


_INLINE = re.compile(r"^(?P<kind>checkerboard|charuco):(?P<x>\d+)x(?P<y>\d+):(?P<square>[0-9.]+)"
                     r"(?::(?P<marker>[0-9.]+))?(?::(?P<bits>\d)x\d_(?P<dict>\d+))?(?P<inverted>:inverted)?$",
                     re.IGNORECASE)


def parse_board(spec: str) -> Board:
    """A board from a path to a board file, or inline: ``checkerboard:COLSxROWS:SQUARE`` (inner
    corners across x down, square side in board units, e.g. ``checkerboard:9x6:30``) or
    ``charuco:SQUARES_XxSQUARES_Y:SQUARE:MARKER[:4x4_1000]`` (default dictionary 4x4_50). Either
    may end in the flag word ``:inverted`` (printed white on black, see :attr:`Board.inverted`):
    ``charuco:5x7:30:22:4x4_50:inverted``; a flag rather than a value because it is a yes/no."""
    m = _INLINE.match(spec.strip())
    if m is None:
        if re.match(r"^(checkerboard|charuco):", spec, re.IGNORECASE):
            raise BoardError(f"--board {spec!r}: expected checkerboard:COLSxROWS:SQUARE[:inverted] (inner "
                             f"corners, e.g. checkerboard:9x6:30) or "
                             f"charuco:XxY:SQUARE:MARKER[:4x4_1000][:inverted]")
        return load_board(spec)
    x, y, square = int(m["x"]), int(m["y"]), float(m["square"])
    inverted = m["inverted"] is not None
    if m["kind"].lower() == "checkerboard":
        if m["marker"] or m["bits"]:
            raise BoardError(f"--board {spec!r}: a checkerboard has no markers "
                             f"(checkerboard:COLSxROWS:SQUARE[:inverted])")
        return Board("checkerboard", x + 1, y + 1, square, inverted=inverted)
    if not m["marker"]:
        raise BoardError(f"--board {spec!r}: a ChArUco board needs the marker length "
                         f"(charuco:XxY:SQUARE:MARKER[:4x4_1000][:inverted])")
    bits = int(m["bits"]) if m["bits"] else 4
    size = int(m["dict"]) if m["dict"] else 50
    return Board("charuco", x, y, square, float(m["marker"]), bits, size, inverted=inverted)


# ---------------------------------------------------------------------- detection


@dataclass(frozen=True, eq=False)
class Detection:
    """The board corners found in one image."""

    ids: np.ndarray = field(repr=False)
    """(n,) int64 corner ids (rows of :attr:`Board.object_points`), ascending."""
    image_points_px: np.ndarray = field(repr=False)
    """(n, 2) float64 subpixel corner positions, px (x right, y down, origin at the first pixel's centre)."""
    inverted: bool = False
    """Found in the inverted image (255 - gray): the board was seen white on black. For a board
    not marked :attr:`Board.inverted`, the sign that it was printed in negative."""

    def __len__(self) -> int:
        return int(self.ids.shape[0])


_SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 50, 1e-3)


class _Detector:
    """Detectors built once per board (building a ChArUco detector allocates the dictionary)."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.charuco: dict[bool, cv2.aruco.CharucoDetector] = {}

    def charuco_detector(self, legacy: bool) -> cv2.aruco.CharucoDetector:
        if legacy not in self.charuco:
            self.charuco[legacy] = cv2.aruco.CharucoDetector(self.board.opencv_board(legacy))
        return self.charuco[legacy]


_LOCAL = threading.local()
"""Per-thread detectors (an OpenCV detector object is not shared between threads)."""


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) gray pixels from gray, BGR or BGRA ones (a view when already gray)."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    raise BoardError(f"image: expected (H, W) or (H, W, 1|3|4) pixels, got shape {image.shape}")


def detect(board: Board, image: np.ndarray, both_polarities: bool = True) -> Detection | None:
    """Find the board's corners in ``image`` ((H, W) gray or (H, W, 3) BGR uint8).

    ChArUco: OpenCV's ``CharucoDetector`` (markers, then the chessboard corners between them,
    refined with ``cornerSubPix`` inside OpenCV); any subset of corners may come back.
    Checkerboard: ``findChessboardCornersSB`` (subpixel by construction), falling back to
    ``findChessboardCorners`` + ``cornerSubPix``; all corners or none. The checkerboard's
    orientation is fixed by the colour of the corner squares where the board allows it (see
    :func:`_orient_checkerboard`). Returns None when no corner is found.

    Polarity: an :attr:`Board.inverted` board is looked for in ``255 - gray``. With
    ``both_polarities``, a ChArUco board found nowhere in that image is looked for in the other
    polarity too, and :attr:`Detection.inverted` says which one held it: ArUco markers only
    decode dark on light, so a negative print is otherwise found in no image at all. The cost
    is a second search of images without the board. Checkerboards are searched in one polarity
    only: their corners are found in either (the pattern inverted is a checkerboard again), and
    the flag only decides which end is corner 0.
    """
    gray = to_gray(np.asarray(image))
    if gray.dtype != np.uint8:
        raise BoardError(f"image: expected uint8 pixels, got {gray.dtype}")
    cache: dict[Board, _Detector] = _LOCAL.__dict__.setdefault("detectors", {})
    det = cache.get(board)
    if det is None:
        det = cache[board] = _Detector(board)
    if board.kind != "charuco":
        return _detect_checkerboard(board, cv2.bitwise_not(gray) if board.inverted else gray, board.inverted)
    polarities = [board.inverted, not board.inverted] if both_polarities else [board.inverted]
    for inverted in polarities:
        found = _detect_charuco(det, cv2.bitwise_not(gray) if inverted else gray, inverted)
        if found is not None:
            return found
    return None


def _detect_charuco(det: _Detector, gray: np.ndarray, inverted: bool) -> Detection | None:
    board = det.board
    if board.legacy_pattern is not None:
        layouts = [board.legacy_pattern]
    else:
        # The legacy layout differs from the current one only for an even number of rows.
        layouts = [False, True] if board.squares_y % 2 == 0 else [False]
    best: Detection | None = None
    for legacy in layouts:
        corners, ids, _, _ = det.charuco_detector(legacy).detectBoard(gray)
        if corners is None or ids is None or len(ids) == 0:
            continue
        ids = ids.ravel().astype(np.int64)
        order = np.argsort(ids)
        found = Detection(ids[order], corners.reshape(-1, 2)[order].astype(np.float64), inverted)
        if best is None or len(found) > len(best):
            best = found
        if len(best) * 2 >= board.n_corners:
            break
    return best


def _detect_checkerboard(board: Board, gray: np.ndarray, inverted: bool) -> Detection | None:
    size = (board.corners_x, board.corners_y)
    found, corners = cv2.findChessboardCornersSB(gray, size,
                                                 cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_ACCURACY)
    if not found:
        flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
        found, corners = cv2.findChessboardCorners(gray, size, flags)
        if not found:
            return None
        corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), _SUBPIX_CRITERIA)
    pts = corners.reshape(-1, 2).astype(np.float64)
    pts = _orient_checkerboard(board, gray, pts)
    return Detection(np.arange(board.n_corners, dtype=np.int64), pts, inverted)


def _orient_checkerboard(board: Board, gray: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Put the corners in the order where the outer square beyond corner 0 is dark.

    OpenCV may return a checkerboard's corners starting from either end (a 180-degree turn).
    When exactly one of ``squares_x``, ``squares_y`` is even, the two ends' corner squares have
    different colours, so the colour fixes the order and every camera numbers the corners alike.
    Otherwise (both odd or both even) the board looks the same turned, the order is left as found
    and multi-camera calibration with it is ambiguous (single-camera intrinsics are unaffected).
    """
    if (board.squares_x + board.squares_y) % 2 == 0:
        return pts
    grid = pts.reshape(board.corners_y, board.corners_x, 2)

    def outer_square(corner: np.ndarray, diagonal: np.ndarray) -> float:
        # Centre of the square diagonally beyond the board's corner point.
        x, y = corner + 0.5 * (corner - diagonal)
        h, w = gray.shape
        xi, yi = round(float(x)), round(float(y))
        if not (0 <= xi < w and 0 <= yi < h):
            return float("nan")
        return float(gray[max(yi - 1, 0):yi + 2, max(xi - 1, 0):xi + 2].mean())

    first = outer_square(grid[0, 0], grid[1, 1])
    last = outer_square(grid[-1, -1], grid[-2, -2])
    if np.isfinite(first) and np.isfinite(last) and first > last:
        return pts[::-1].copy()
    return pts
