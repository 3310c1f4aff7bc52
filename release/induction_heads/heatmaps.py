"""Labelled heatmaps of matrices, drawn as plain SVG (no matplotlib: drawing must stay fast).

Every function returns a `Figure`, which Jupyter displays by itself (it has `_repr_svg_` and
`_repr_html_`); `figure.svg` is the SVG text. The functions only draw what they are given.

    show_matrix(M, title, row_label, col_label, highlight_rows=..., highlight_cols=...)
    show_head(W_V, W_O, name)      # which residual dims a head reads (W_V) and writes (W_O)
    show_attention(A, tokens)      # an attention pattern A[dest, src]
    side_by_side(fig, fig, ...)    # several figures in one row

Colours: red is positive, blue negative, white zero; the scale is symmetric around zero and
its range is printed next to the colour bar. Grey cells are NaN or infinite.
"""

from __future__ import annotations

import functools
import html
import math

import numpy as np

__all__ = ["Figure", "show_matrix", "show_head", "show_attention", "side_by_side"]
# What the grader uses of this module to draw feedback pictures (tested: it uses nothing else).
GRADER_API = ("show_matrix", "show_head", "show_attention", "side_by_side")

_MAX_SIDE = 340  # pixels the cells of one matrix may take along its longer side
_FONT = "Helvetica,Arial,sans-serif"  # set once on the <svg>, inherited by every text
_INK = "#222"  # the text colour, set once on the <svg> (every shape names its own fill)
# Diverging stops (ColorBrewer RdBu), from -1 to +1.
_STOPS = [
    (-1.0, (33, 102, 172)),
    (-0.5, (103, 169, 207)),
    (0.0, (247, 247, 247)),
    (0.5, (239, 138, 98)),
    (1.0, (178, 24, 43)),
]


class Figure:
    """One or more panels laid out in a row, with an optional caption underneath."""

    def __init__(self, panels, caption=""):
        self.panels = list(panels)  # (width, height, svg body)
        self.caption = caption

    def as_panel(self):
        """(width, height, svg body) of the whole figure, to nest it in another one."""
        gap = 24
        width = sum(w for w, _, _ in self.panels) + gap * max(len(self.panels) - 1, 0)
        height = max((h for _, h, _ in self.panels), default=0)
        parts, x = [], 0
        for w, _, body in self.panels:
            parts.append(f'<g transform="translate({x},0)">{body}</g>')
            x += w + gap
        if self.caption:
            height += 22
            parts.append(_text(4, height - 6, self.caption, size=13, anchor="start"))
            width = max(width, math.ceil(4 + text_width(self.caption, 13) + 4))
        return (width, height, "".join(parts))

    @property
    def svg(self) -> str:
        width, height, body = self.as_panel()
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="{_FONT}" fill="{_INK}">{body}</svg>'
        )

    def _repr_svg_(self) -> str:
        return self.svg

    def _repr_html_(self) -> str:
        return f'<div style="overflow-x:auto">{self.svg}</div>'

    def __repr__(self) -> str:
        return f"<Figure with {len(self.panels)} panel(s)>"


def side_by_side(*figures: Figure, caption: str = "") -> Figure:
    """Put several figures in one row (one output cell, one SVG)."""
    return Figure([figure.as_panel() for figure in figures], caption)


def show_matrix(
    M,
    title: str = "",
    row_label: str = "",
    col_label: str = "",
    highlight_rows=None,
    highlight_cols=None,
    row_ticks=None,
    col_ticks=None,
    vmax: float | None = None,
    annotate: bool | None = None,
) -> Figure:
    """A heatmap of the 2-D array `M` (a 1-D array is drawn as one row).

    highlight_rows / highlight_cols: indices to outline (e.g. the dims a head writes).
    row_ticks / col_ticks: labels for the rows / columns (default: their indices).
    vmax: the value drawn in full colour (default: the largest finite |entry|).
    annotate: print the values in the cells (default: when the matrix is small).
    """
    return Figure(
        [_heatmap(M, title, row_label, col_label, highlight_rows, highlight_cols, row_ticks, col_ticks, vmax, annotate)]
    )


def show_attention(A, tokens=None, title: str = "attention pattern", vmax: float | None = None) -> Figure:
    """An attention pattern A[dest, src]: row = the position that attends, column = where it looks."""
    array = _as_2d(A)
    finite = array[np.isfinite(array)]
    if vmax is None:
        # Probabilities get a fixed 0..1 scale, so two patterns are directly comparable.
        vmax = 1.0 if finite.size == 0 or (finite.min() >= 0 and finite.max() <= 1) else None
    ticks = [str(token) for token in tokens] if tokens is not None else None
    return Figure(
        [
            _heatmap(
                array,
                title,
                "destination (query) position",
                "source (key) position",
                None,
                None,
                ticks,
                ticks,
                vmax,
                None,
            )
        ]
    )


def show_head(W_V, W_O, name: str = "head") -> Figure:
    """W_V (d_head x d_model) and W_O (d_model x d_head) of one head, side by side.

    The residual dims the head reads (nonzero columns of W_V) and writes (nonzero rows of W_O)
    are outlined and listed in the caption.
    """
    W_V, W_O = _as_2d(W_V), _as_2d(W_O)
    reads = _nonzero(np.abs(W_V), axis=0)
    writes = _nonzero(np.abs(W_O), axis=1)
    panels = [
        _heatmap(W_V, f"{name}: W_V (reads)", "head dim", "residual dim (read)", None, reads, None, None, None, None),
        _heatmap(
            W_O, f"{name}: W_O (writes)", "residual dim (written)", "head dim", writes, None, None, None, None, None
        ),
    ]
    caption = f"{name} reads {_dims(reads)}; writes {_dims(writes)}"
    return Figure(panels, caption)


# -- drawing ------------------------------------------------------------------------------------


def _as_2d(M) -> np.ndarray:
    try:
        array = np.asarray(M)
        if array.dtype.kind == "c":  # complex entries are not drawable: grey unless real
            array = np.where(array.imag == 0, array.real, np.nan)
        array = array.astype(float)
    except (TypeError, ValueError):
        array = np.full((1, 1), np.nan)
    if array.ndim == 0:
        array = array.reshape(1, 1)
    elif array.ndim == 1:
        array = array.reshape(1, -1)
    elif array.ndim > 2:
        array = array.reshape(array.shape[0], -1)
    return array


def _nonzero(absolute: np.ndarray, axis: int) -> list[int]:
    if absolute.size == 0:
        return []
    finite = np.where(np.isfinite(absolute), absolute, 0)
    scale = finite.max() if finite.size else 0
    return [int(i) for i in np.flatnonzero(finite.max(axis=axis) > 1e-9 * max(scale, 1e-300))]


def _dims(indices) -> str:
    indices = sorted(set(indices))
    if not indices:
        return "no dims"
    runs, start = [], indices[0]
    for previous, current in zip(indices, indices[1:] + [None]):
        if current != previous + 1:
            runs.append(str(start) if start == previous else f"{start}-{previous}")
            start = current
    word = "dim" if len(indices) == 1 else "dims"
    return f"{word} {', '.join(runs)}"


@functools.lru_cache(maxsize=4096)  # a matrix holds few distinct values: each is worked out once
def _colour(t: float) -> str:
    t = min(max(t, -1.0), 1.0)
    for (t0, c0), (t1, c1) in zip(_STOPS, _STOPS[1:]):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            r, g, b = (round(a + f * (b_ - a)) for a, b_ in zip(c0, c1))
            return f"#{r:02x}{g:02x}{b:02x}"
    return "#b2182b"


@functools.lru_cache(maxsize=4096)
def _number(value: float) -> str:
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if abs(value - round(value)) <= 1e-9 * max(1.0, abs(value)) and abs(value) < 1e6:
        return str(int(round(value)))
    if 0.01 <= abs(value) < 1000:
        return f"{value:.3g}"
    return f"{value:.2e}"


@functools.lru_cache(maxsize=4096)
def _short(value: float) -> str:
    """At most 4 characters, to fit in a cell; the exact value is in the cell's tooltip."""
    if not math.isfinite(value):
        return _number(value)
    if abs(value) < 0.005:
        return "≈0"
    if abs(value) < 0.995:  # two decimals without the leading zero: ".88", "-.56"
        return ("-" if value < 0 else "") + f"{abs(value):.2f}".lstrip("0")
    text = _number(value)
    if len(text) <= 4:
        return text
    for digits in (3, 2):
        text = f"{value:.{digits}g}"
        if len(text) <= 4 and "e" not in text:
            return text
    return f"{value:.0e}".replace("e+0", "e")


# Advance widths of Helvetica (Arial has the same), in thousandths of the font size, by
# character; bold is wider by about a tenth. Enough to size a figure so its texts fit.
_WIDTHS = {
    **dict.fromkeys("ijl|!.,:;'`", 240),
    **dict.fromkeys(" ftrI[]()/\\-", 333),
    **dict.fromkeys('ckszvxyJ*"', 500),
    **dict.fromkeys("abdeghnopqu0123456789$_#?L", 556),
    **dict.fromkeys("=+<>~^", 584),
    **dict.fromkeys("ABEKPSTVXYFZ&", 667),
    **dict.fromkeys("CDHNRUGOQ", 722),
    **dict.fromkeys("wmM", 833),
    **dict.fromkeys("W%@", 944),
}


def text_width(content, size: float, bold: bool = False) -> float:
    """The width in pixels of `content` drawn in this module's font at `size` (a slight
    overestimate: a text measured by it fits in the space it says)."""
    units = sum(_WIDTHS.get(character, 600) for character in str(content))
    return units * size / 1000 * (1.1 if bold else 1.0) * 1.03


def _n(value) -> str:
    """A coordinate, as short as it can be written (28, 28.5)."""
    return f"{value:.1f}".removesuffix(".0")


def _text(x, y, content, size=11, anchor="middle", weight="normal", colour=_INK, rotate=False) -> str:
    transform = f' transform="rotate(-90 {_n(x)} {_n(y)})"' if rotate else ""
    return (
        f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size}"'
        + (f' text-anchor="{anchor}"' if anchor != "start" else "")
        + (f' font-weight="{weight}"' if weight != "normal" else "")
        + (f' fill="{colour}"' if colour != _INK else "")
        + f"{transform}>{html.escape(str(content))}</text>"
    )


def _runs(indices, limit):
    """Contiguous runs (start, stop) of valid indices, for drawing one outline per run."""
    valid = sorted({int(i) for i in indices if 0 <= int(i) < limit})
    runs = []
    for i in valid:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return runs


def _heatmap(M, title, row_label, col_label, highlight_rows, highlight_cols, row_ticks, col_ticks, vmax, annotate):
    array = _as_2d(M)
    rows, cols = array.shape
    finite = np.isfinite(array)
    if vmax is None or not np.isfinite(vmax) or vmax <= 0:
        vmax = float(np.abs(array[finite]).max()) if finite.any() else 0.0
        vmax = vmax if vmax > 0 else 1.0
    cell = max(4, min(28, _MAX_SIDE // max(rows, cols, 1)))
    tick_every = 1 if max(rows, cols) <= 32 else math.ceil(max(rows, cols) / 16)
    if annotate is None:
        annotate = cell >= 18 and rows * cols <= 400
    row_ticks = [str(i) for i in range(rows)] if row_ticks is None else [str(t) for t in row_ticks]
    col_ticks = [str(i) for i in range(cols)] if col_ticks is None else [str(t) for t in col_ticks]
    longest_row_tick = max((len(t) for t in row_ticks), default=1)
    longest_col_tick = max((len(t) for t in col_ticks), default=1)

    left = 22 + 7 * min(longest_row_tick, 12)  # row label + row ticks
    top = (22 if title else 4) + 18 + (7 * min(longest_col_tick, 12) if longest_col_tick > 3 else 14)
    grid_w, grid_h = cols * cell, rows * cell
    legend_x = left + grid_w + 14
    width = legend_x + 60
    height = top + max(grid_h, 120) + 10
    out = []
    # Every label is measured, and the figure made as large as its longest one needs: a title
    # longer than a narrow matrix is drawn whole, not cut off at the figure's edge.
    if title:
        out.append(_text(left, 16, title, size=13, anchor="start", weight="bold"))
        width = max(width, math.ceil(left + text_width(title, 13, bold=True) + 4))
    if col_label:
        half = text_width(col_label, 11) / 2
        middle = max(left + grid_w / 2, half + 2)  # centred over the grid, unless that crosses x = 0
        out.append(_text(middle, (22 if title else 4) + 12, col_label, size=11))
        width = max(width, math.ceil(middle + half + 2))
    if row_label:
        half = text_width(row_label, 11) / 2
        middle = max(top + grid_h / 2, top - 10 + half)  # never up into the column labels
        out.append(_text(10, middle, row_label, size=11, rotate=True))
        height = max(height, math.ceil(middle + half + 4))

    highlighted_rows = {i for run in _runs(highlight_rows or [], rows) for i in range(*run)}
    highlighted_cols = {i for run in _runs(highlight_cols or [], cols) for i in range(*run)}
    for i in range(0, rows, tick_every):
        weight = "bold" if i in highlighted_rows else "normal"
        out.append(
            _text(left - 4, top + i * cell + cell / 2 + 4, row_ticks[i][:12], size=10, anchor="end", weight=weight)
        )
    for j in range(0, cols, tick_every):
        weight = "bold" if j in highlighted_cols else "normal"
        x, y = left + j * cell + cell / 2, top - 4
        rotate = longest_col_tick > 3
        out.append(
            _text(
                x + (3 if rotate else 0),
                y,
                col_ticks[j][:12],
                size=10,
                anchor="start" if rotate else "middle",
                weight=weight,
                rotate=rotate,
            )
        )

    cells, values = [], []
    for i, row in enumerate(array.tolist()):
        y = top + i * cell
        for j, value in enumerate(row):
            x = left + j * cell
            finite_value = math.isfinite(value)
            fill = _colour(value / vmax) if finite_value else "#9a9a9a"
            cells.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}">'
                f"<title>[{i}, {j}] = {_number(value)}</title></rect>"
            )
            if annotate and (value != 0 or not finite_value):
                paint = ' fill="#fff"' if finite_value and abs(value) / vmax > 0.6 else ""
                values.append(
                    f'<text x="{_n(x + cell / 2)}" y="{_n(y + cell / 2 + 3.5)}"{paint}>{html.escape(_short(value))}</text>'
                )
    # What every cell (and every value in one) has in common is said once, on its group.
    out.append(f'<g stroke="#fff" stroke-width="0.5">{"".join(cells)}</g>')
    if values:
        out.append(f'<g font-size="8" text-anchor="middle">{"".join(values)}</g>')
    out.append(
        f'<rect x="{left}" y="{top}" width="{grid_w}" height="{grid_h}" fill="none" stroke="#666" stroke-width="0.8"/>'
    )
    for start, stop in _runs(highlight_rows or [], rows):
        out.append(
            f'<rect x="{left - 1}" y="{top + start * cell - 1}" width="{grid_w + 2}" '
            f'height="{(stop - start) * cell + 2}" fill="none" stroke="#111" stroke-width="2"/>'
        )
    for start, stop in _runs(highlight_cols or [], cols):
        out.append(
            f'<rect x="{left + start * cell - 1}" y="{top - 1}" width="{(stop - start) * cell + 2}" '
            f'height="{grid_h + 2}" fill="none" stroke="#111" stroke-width="2"/>'
        )

    # Colour bar: discrete steps (no gradient ids, so many figures can share one page).
    steps, bar_h = 24, max(grid_h, 120)
    # A scale of non-negative data (patterns, copy maps) shows only its used, upper half.
    low = 0.0 if finite.any() and array[finite].min() >= 0 else -1.0
    for k in range(steps):
        t = 1 - (1 - low) * (k + 0.5) / steps
        out.append(
            f'<rect x="{legend_x}" y="{top + k * bar_h / steps:.1f}" width="12" '
            f'height="{bar_h / steps + 0.3:.1f}" fill="{_colour(t)}"/>'
        )
    labels = (
        [(vmax, top + 8), (0.0, top + bar_h)]
        if low == 0
        else [(vmax, top + 8), (0.0, top + bar_h / 2 + 4), (-vmax, top + bar_h)]
    )
    for label, y in labels:
        out.append(_text(legend_x + 16, y, _number(label), size=10, anchor="start"))
    return (width, height, "".join(out))
