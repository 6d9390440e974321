"""The figures of ``rigstream report``, drawn with matplotlib on its Agg canvas (no pyplot, no
display, no global state) and returned as PNG ``data:`` URIs, so the page stays one file; and the
page's pieces (:class:`Section`, the style sheet).

Every function takes plain arrays; times are seconds since the session's first camera pulse,
durations milliseconds. matplotlib is imported here only, inside the functions.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from rigstream.config import InputError

DPI = 100
MARKS = {"dropped": ("tab:red", "dropped"), "overrun": ("tab:orange", "overrun"),
         "lost": ("tab:purple", "lost in transport")}
"""Kinds of frame-less rows in frames.csv: marker colour and legend label."""
KIND_COLORS = {"firing": "tab:red", "input": "tab:blue", "output": "tab:green"}


class TimelineRow(NamedTuple):
    """One row of the events timeline: ``starts`` (N,) float64 s; ``ends`` (N,) float64 s for
    spans (an input held on, an output pulse), None for instants (a rule firing)."""

    label: str
    kind: str
    starts: np.ndarray
    ends: np.ndarray | None


class Box(NamedTuple):
    """A region drawn on the top view: corners in world mm (x, y, z)."""

    label: str
    min_mm: Sequence[float]
    max_mm: Sequence[float]


def require_matplotlib() -> None:
    """Raise an InputError that says how to install matplotlib when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("rigstream report: the figures need matplotlib, which is not installed: "
                         "pip install 'matplotlib>=3.8' (it is in rigstream[host])") from None


def _figure(width_in: float, height_in: float) -> Any:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def data_uri(fig: Any) -> str:
    """The figure as a base64 PNG ``data:`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _count_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def frames_figure(received: Mapping[str, np.ndarray], marks: Mapping[str, Mapping[str, np.ndarray]],
                  end_s: float, bin_s: float = 1.0) -> str:
    """Frames per second per camera (``received``: camera -> (N,) s of its recorded frames), and
    below, a strip per camera marking its dropped/overrun/lost rows (``marks``: camera -> kind
    -> (M,) s)."""
    cams = list(received)
    fig = _figure(10, 3.2 + 0.3 * len(cams))
    rate_ax, strip = fig.subplots(2, 1, sharex=True, height_ratios=[3, max(1.0, 0.45 * len(cams))])
    edges = np.arange(0.0, end_s, bin_s)
    if edges.size < 2 or end_s - edges[-1] >= bin_s / 2:
        edges = np.append(edges[:max(edges.size, 1)], end_s)
    else:  # a last part under half a bin joins the bin before it
        edges[-1] = end_s
    top = 1.0
    for cam in cams:
        rate = np.histogram(received[cam], edges)[0] / np.diff(edges)
        rate_ax.stairs(rate, edges, label=cam, lw=1.4, baseline=None)
        top = max(top, float(rate.max(initial=0.0)))
    rate_ax.set_ylabel("frames / s")
    rate_ax.set_ylim(0, top * 1.12)  # a full rate stays off the frame's edge
    rate_ax.set_title(f"frames recorded per {bin_s:g} s bin")
    rate_ax.legend(loc="lower right", ncols=min(len(cams), 6), fontsize=8)
    shown: set[str] = set()
    for i, cam in enumerate(cams):
        for kind, t in marks.get(cam, {}).items():
            if t.size:
                color, label = MARKS[kind]
                strip.plot(t, np.full(t.size, i), "|", color=color, ms=11, mew=1.5,
                           label=None if kind in shown else label)
                shown.add(kind)
    if shown:
        strip.legend(loc="upper right", ncols=len(shown), fontsize=8)
    else:
        _empty(strip, "no dropped, overrun or lost frames")
    strip.set_yticks(range(len(cams)), cams)
    strip.set_ylim(len(cams) - 0.4, -0.6)
    strip.set_xlim(0, end_s)
    strip.set_xlabel("s since the first pulse")
    return data_uri(fig)


def histograms_figure(columns: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """One histogram per column (``columns``: title -> group -> (N,) ms, NaN ignored); groups
    (rules) are stacked with a legend when there are several."""
    n = max(len(columns), 1)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _figure(10, 2.2 * nrows + 0.3)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (title, groups) in zip(axes, columns.items(), strict=False):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ms", fontsize=8)
        ax.tick_params(labelsize=8)
        data = {g: v[np.isfinite(v)] for g, v in groups.items()}
        data = {g: v for g, v in data.items() if v.size}
        if not data:
            _empty(ax, "no values")
            continue
        values = np.concatenate(list(data.values()))
        bins = np.histogram_bin_edges(values, bins=int(np.clip(np.sqrt(values.size) * 2, 5, 40)))
        ax.hist(list(data.values()), bins=bins, stacked=True, label=list(data))
        _count_axis(ax)
        if len(data) > 1:
            ax.legend(fontsize=7)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    return data_uri(fig)


def residuals_figure(t_s: np.ndarray, residual: np.ndarray, outlier: np.ndarray, xlabel: str,
                     ylabel: str) -> str:
    """Clock-fit residuals per matched sync pulse (``t_s``, ``residual``, ``outlier``: (K,)
    arrays; outliers drawn apart, they were left out of the fit)."""
    fig = _figure(10, 3.0)
    ax = fig.subplots()
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.plot(t_s[~outlier], residual[~outlier], "o", ms=4, label="matched pulse")
    if outlier.any():
        ax.plot(t_s[outlier], residual[outlier], "x", color="tab:red", ms=6, label="outlier (not fitted)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("recorder edge minus the mapped Pi edge")
    ax.legend(fontsize=8, loc="upper right")
    return data_uri(fig)


def trajectories_figure(t_s: np.ndarray, xyz_mm: np.ndarray, names: Sequence[str],
                        boxes: Sequence[Box] = ()) -> str:
    """Top view (x, y) and height over time of ``names``' points (``xyz_mm``: (F, K, 3), NaN
    where missing, K = len(names); ``t_s``: (F,)), with ``boxes`` drawn on the top view."""
    from matplotlib.patches import Rectangle

    fig = _figure(11, 4.4)
    top, height = fig.subplots(1, 2, width_ratios=[1, 1.5])
    for k, name in enumerate(names):
        (line,) = top.plot(xyz_mm[:, k, 0], xyz_mm[:, k, 1], lw=0.9, label=name)
        height.plot(t_s, xyz_mm[:, k, 2], lw=0.9, color=line.get_color(), label=name)
    for box in boxes:
        top.add_patch(Rectangle((box.min_mm[0], box.min_mm[1]), box.max_mm[0] - box.min_mm[0],
                                box.max_mm[1] - box.min_mm[1], fill=False, ls="--", ec="0.3"))
        top.annotate(box.label, (box.min_mm[0], box.max_mm[1]), fontsize=8, color="0.3",
                     xytext=(2, -10), textcoords="offset points")
    top.set_aspect("equal", adjustable="datalim")
    top.set_xlabel("x (mm)")
    top.set_ylabel("y (mm)")
    top.set_title("top view")
    height.set_xlabel("s since the first pulse")
    height.set_ylabel("z (mm)")
    height.set_title("height over time")
    height.legend(fontsize=8, loc="upper right")
    return data_uri(fig)


def timeline_figure(rows: Sequence[TimelineRow], end_s: float) -> str:
    """Rule firings (ticks), input 'on' periods and output pulses (bars, with a tick at each
    rising edge) on one time axis, a row each."""
    fig = _figure(11, 1.0 + 0.42 * len(rows))
    ax = fig.subplots()
    for i, row in enumerate(rows):
        color = KIND_COLORS.get(row.kind, "0.3")
        if row.ends is not None and row.starts.size:
            spans = list(zip(row.starts, np.maximum(row.ends - row.starts, 0.0), strict=True))
            ax.broken_barh(spans, (i - 0.3, 0.6), color=color, alpha=0.45)
        ax.plot(row.starts, np.full(row.starts.size, i), "|", ms=14, mew=1.6, color=color)
    ax.set_yticks(range(len(rows)), [f"{r.label} ({r.starts.size})" for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, end_s)
    ax.set_xlabel("s since the first pulse")
    ax.grid(axis="x", color="0.9")
    return data_uri(fig)


def region_figure(dt_ms: np.ndarray, window_ms: float, title: str) -> str:
    """Time from each region entry to its nearest input 'on' edge (``dt_ms``: (N,), NaN where
    the input has no edge at all), the hit window shaded."""
    fig = _figure(6.2, 3.3)
    ax = fig.subplots()
    span = 4 * window_ms
    finite = dt_ms[np.isfinite(dt_ms)]
    ax.axvspan(-window_ms, window_ms, color="tab:green", alpha=0.12, label=f"hit: within ±{window_ms:g} ms")
    if finite.size:
        ax.hist(np.clip(finite, -span, span), bins=np.linspace(-span, span, 41), color="tab:blue")
        beyond = int(np.sum(np.abs(finite) > span))
        if beyond:
            ax.text(0.01, 0.97, f"{beyond} beyond ±{span:g} ms (in the end bins)", transform=ax.transAxes,
                    fontsize=8, va="top")
    else:
        _empty(ax, "no entries with an edge to compare")
    ax.set_xlim(-span, span)
    ax.set_xlabel("nearest 'on' edge minus entry (ms)")
    ax.set_ylabel("entries")
    _count_axis(ax)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return data_uri(fig)


# ------------------------------------------------------------------------------ the page

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1150px;color:#222;
padding:0 12px}h1{font-size:22px;margin-bottom:2px}h2{font-size:18px;border-bottom:1px solid #ccc;
padding-bottom:3px;margin-top:30px}
h3{font-size:14px;margin:14px 0 4px}table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}
figure{margin:6px 0}img{max-width:100%;height:auto}.note{color:#555;font-style:italic;margin:4px 0}
.side{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}nav a{margin-right:12px}.meta{color:#666}"""


class Section:
    """One ``<section id=sid>`` of the page: notes, figures and tables, in order."""

    def __init__(self, sid: str, title: str) -> None:
        self.sid, self.title, self.parts = sid, title, []

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def figure(self, uri: str, alt: str) -> None:
        self.parts.append(f'<figure><img src="{uri}" alt="{html.escape(alt)}"></figure>')

    def table(self, rows: Sequence[Sequence[Any]], head: Sequence[str] = (), cls: str = "",
              keys: Sequence[str] = ()) -> str:
        """Rows of cells (the first a header cell when no ``head``); ``keys`` name the rows."""
        out = [f'<table class="{cls}">']
        if head:
            out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
        for i, row in enumerate(rows):
            key = f' data-key="{keys[i]}"' if i < len(keys) else ""
            cells = [f"<td>{html.escape(_fmt(v))}</td>" for v in row[1:]]
            first = html.escape(_fmt(row[0]))
            out.append(f"<tr{key}>" + (f"<td>{first}</td>" if head else f"<th>{first}</th>")
                       + "".join(cells) + "</tr>")
        return "".join(out) + "</table>"

    def html(self) -> str:
        return (f'<section id="{self.sid}"><h2>{html.escape(self.title)}</h2>\n' + "\n".join(self.parts)
                + "\n</section>")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if not np.isfinite(v) else f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def page(title: str, meta: str, sections: Sequence[Section]) -> str:
    """The whole page: a title, a line under it, links to the sections, the sections."""
    nav = " ".join(f'<a href="#{x.sid}">{html.escape(x.title)}</a>' for x in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>rigstream report: '
            f'{html.escape(title)}</title><link rel="icon" href="data:,"><style>{STYLE}</style></head>'
            f'<body>\n<h1>{html.escape(title)}</h1><p class="meta">{html.escape(meta)}</p><nav>{nav}</nav>\n'
            + "\n".join(x.html() for x in sections) + "\n</body></html>\n")
