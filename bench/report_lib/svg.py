"""throughput.svg: one panel per thread table, throughput against thread count, each contender
a line of medians with min..max bars in the colour and marker it has in every panel; thread
counts above the logical cores are shaded as oversubscribed. Plain SVG text, no plotting library.
"""

import math
from xml.sax.saxutils import escape

from .data import contender_key


# ---------------------------------------------------------------------------------------------
# The figure.

_COLOURS = {"plain": "#7f7f7f", "atomic": "#1f77b4", "shared_ptr": "#ff7f0e",
            "new_delete": "#9467bd", "boehm": "#8c564b", "brc": "#d62728",
            "brc_tracked": "#2ca02c"}
_EXTRA_COLOURS = ["#17becf", "#bcbd22", "#e377c2", "#393b79", "#637939"]
_MARKERS = {"plain": "circle", "atomic": "square", "shared_ptr": "triangle",
            "new_delete": "diamond", "boehm": "triangle_down", "brc": "circle",
            "brc_tracked": "square"}


def colour_of(c, extra):
    if c in _COLOURS:
        return _COLOURS[c]
    if c not in extra:
        extra[c] = _EXTRA_COLOURS[len(extra) % len(_EXTRA_COLOURS)]
    return extra[c]


def marker(kind, x, y, colour, r=4.5):
    fill = 'fill="%s" stroke="white" stroke-width="1"' % colour
    if kind == "square":
        return '<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" %s/>' % (
            x - r, y - r, 2 * r, 2 * r, fill)
    if kind == "triangle":
        return '<polygon points="%.1f,%.1f %.1f,%.1f %.1f,%.1f" %s/>' % (
            x, y - r * 1.2, x - r * 1.1, y + r * 0.8, x + r * 1.1, y + r * 0.8, fill)
    if kind == "triangle_down":
        return '<polygon points="%.1f,%.1f %.1f,%.1f %.1f,%.1f" %s/>' % (
            x, y + r * 1.2, x - r * 1.1, y - r * 0.8, x + r * 1.1, y - r * 0.8, fill)
    if kind == "diamond":
        return '<polygon points="%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f" %s/>' % (
            x, y - r * 1.3, x + r * 1.1, y, x, y + r * 1.3, x - r * 1.1, y, fill)
    return '<circle cx="%.1f" cy="%.1f" r="%.1f" %s/>' % (x, y, r, fill)


def nice_step(span, target=5):
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def tick_label(v):
    if v >= 1000:
        return "{:,.0f}".format(v)
    if v >= 1:
        return ("%.1f" % v).rstrip("0").rstrip(".")
    return "%.2g" % v


def y_scale(lo, hi):
    """(to_unit(v) -> 0..1, ticks, log?) for values in lo..hi (all positive)."""
    if lo > 0 and hi / lo > 30:
        a, b = math.log10(lo) - 0.05, math.log10(hi) + 0.05
        ticks = []
        for e in range(int(math.floor(a)), int(math.ceil(b)) + 1):
            for m in ((1, 2, 5) if b - a < 4 else (1,)):
                v = m * 10 ** e
                if a <= math.log10(v) <= b:
                    ticks.append(v)
        return (lambda v: (math.log10(max(v, 1e-300)) - a) / (b - a)), ticks, True
    top = hi * 1.08 if hi > 0 else 1.0
    step = nice_step(top)
    top = math.ceil(top / step) * step
    ticks = [i * step for i in range(int(round(top / step)) + 1)]
    return (lambda v: v / top), ticks, False


def svg_figure(panels, cores, quick):
    """panels: [(title, y unit, {contender: {threads: Stat}})] -> SVG text."""
    width, cols = 1200, 3
    legend_h, title_h = 34, 40
    panel_w, panel_h = width // cols, 300
    rows_n = max(1, (len(panels) + cols - 1) // cols)
    height = title_h + legend_h + rows_n * panel_h + 10
    extra = {}
    contenders = sorted({c for _, _, s in panels for c in s}, key=contender_key)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'viewBox="0 0 %d %d" font-family="DejaVu Sans, Arial, Helvetica, sans-serif">'
           % (width, height, width, height),
           '<rect x="0" y="0" width="%d" height="%d" fill="white"/>' % (width, height)]
    title = "brc_bench: throughput against threads (median, bars: min..max over repetitions)"
    if quick:
        title += " - QUICK RUN, not measurements"
    out.append('<text x="%d" y="24" font-size="17" font-weight="bold" text-anchor="middle">%s'
               '</text>' % (width // 2, escape(title)))
    # The legend, one entry per contender, across the top.
    legend(out, contenders, extra, title_h + legend_h // 2, cores)
    if not panels:
        out.append('<text x="%d" y="%d" font-size="15" text-anchor="middle">No thread '
                   'benchmarks in this run.</text>' % (width // 2, title_h + legend_h + 60))
    for i, (ptitle, unit, series) in enumerate(panels):
        px = (i % cols) * panel_w
        py = title_h + legend_h + (i // cols) * panel_h
        panel(out, px, py, panel_w, panel_h, ptitle, unit, series, cores, extra)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def legend(out, contenders, extra, ly, cores):
    """The legend at height ly: each contender's line, marker and name from the left, then the
    key of the oversubscribed shading."""
    x = 20
    for c in contenders:
        col = colour_of(c, extra)
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>'
                   % (x, ly, x + 26, ly, col))
        out.append(marker(_MARKERS.get(c, "circle"), x + 13, ly, col))
        out.append('<text x="%d" y="%d" font-size="13">%s</text>' % (x + 32, ly + 4, escape(c)))
        x += 46 + 8 * len(c)
    out.append('<rect x="%d" y="%d" width="14" height="12" fill="#f4d9d9"/>' % (x, ly - 6))
    out.append('<text x="%d" y="%d" font-size="13">threads &gt; %s cores: oversubscribed'
               '</text>' % (x + 20, ly + 4, cores if cores else "?"))


def panel(out, px, py, panel_w, panel_h, ptitle, unit, series, cores, extra):
    """One panel with its top left corner at (px, py): title, oversubscribed shading, axes and
    ticks, then the series (plot_series)."""
    left, right, top, bottom = px + 62, px + panel_w - 14, py + 30, py + panel_h - 48
    pw, ph = right - left, bottom - top
    threads = sorted({t for s in series.values() for t in s})
    vals = [v for s in series.values() for st in s.values() if st is not None
            for v in (st.lo, st.hi, st.median) if v is not None and v > 0]
    out.append('<text x="%.1f" y="%d" font-size="13.5" font-weight="bold" '
               'text-anchor="middle">%s</text>' % ((left + right) / 2, py + 18,
                                                   escape(ptitle)))
    if not threads or not vals:
        out.append('<text x="%.1f" y="%.1f" font-size="12" text-anchor="middle">no data'
                   '</text>' % ((left + right) / 2, (top + bottom) / 2))
        return
    n = len(threads)
    slot = pw / n

    def xpos(t):
        return left + (threads.index(t) + 0.5) * slot
    over = [k for k, t in enumerate(threads) if cores and t > cores]
    if over:
        x0 = left + over[0] * slot
        out.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#f4d9d9"/>'
                   % (x0, top, right - x0, ph))
        out.append('<text x="%.1f" y="%d" font-size="11" font-style="italic" '
                   'fill="#a04040" text-anchor="middle">oversubscribed</text>'
                   % ((x0 + right) / 2, top + 13))
    to_unit, ticks, log = y_scale(min(vals), max(vals))

    def ypos(v):
        return bottom - to_unit(v) * ph
    for tv in ticks:
        yy = ypos(tv)
        if yy < top - 0.5 or yy > bottom + 0.5:
            continue
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e3e3e3"/>'
                   % (left, yy, right, yy))
        out.append('<text x="%d" y="%.1f" font-size="11" text-anchor="end">%s</text>'
                   % (left - 5, yy + 4, tick_label(tv)))
    out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#555"/>'
               % (left, top, pw, ph))
    for t in threads:
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#555"/>'
                   % (xpos(t), bottom, xpos(t), bottom + 4))
        out.append('<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%d</text>'
                   % (xpos(t), bottom + 16, t))
    out.append('<text x="%.1f" y="%d" font-size="12" text-anchor="middle">threads</text>'
               % ((left + right) / 2, bottom + 33))
    ylab = unit + (" (log scale)" if log else "")
    cy = (top + bottom) / 2
    out.append('<text x="%d" y="%.1f" font-size="12" text-anchor="middle" '
               'transform="rotate(-90 %d %.1f)">%s</text>'
               % (px + 16, cy, px + 16, cy, escape(ylab)))
    plot_series(out, series, xpos, ypos, slot, extra)


def plot_series(out, series, xpos, ypos, slot, extra):
    """Each contender's medians joined by a line, with a min..max bar and a marker per thread
    count; contenders sit a little apart sideways so that their bars do not overlap."""
    present = sorted(series, key=contender_key)
    for k, c in enumerate(present):
        col = colour_of(c, extra)
        dx = (k - (len(present) - 1) / 2) * min(5.0, slot / (2 * len(present) + 2))
        pts = [(xpos(t) + dx, st) for t, st in sorted(series[c].items())
               if st is not None and st.median is not None and st.median > 0]
        if len(pts) > 1:
            out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                       % (col, " ".join("%.1f,%.1f" % (xx, ypos(st.median))
                                        for xx, st in pts)))
        for xx, st in pts:
            if st.lo is not None and st.hi is not None and st.lo > 0 and st.hi > st.lo:
                y1, y2 = ypos(st.lo), ypos(st.hi)
                out.append('<g stroke="%s" stroke-width="1.3"><line x1="%.1f" y1="%.1f" '
                           'x2="%.1f" y2="%.1f"/><line x1="%.1f" y1="%.1f" x2="%.1f" '
                           'y2="%.1f"/><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/></g>'
                           % (col, xx, y1, xx, y2, xx - 3, y1, xx + 3, y1, xx - 3, y2,
                              xx + 3, y2))
            out.append(marker(_MARKERS.get(c, "circle"), xx, ypos(st.median), col))
