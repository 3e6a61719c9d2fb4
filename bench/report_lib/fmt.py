"""Figures as text for the report: a number with about three significant digits (or a dash),
a median with its spread for a table cell, ratios of medians and the extreme ratios the spreads
allow, a Markdown table, and a thread count marked when it oversubscribes the cores.
"""

import math


# ---------------------------------------------------------------------------------------------
# Formatting.

def num(v):
    """A figure with three significant digits or so, or a dash."""
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "–"
    a = abs(v)
    if a >= 1000:
        return "{:,.0f}".format(v)
    if a >= 100:
        return "%.0f" % v
    if a >= 10:
        return "%.1f" % v
    if a >= 1:
        return "%.2f" % v
    if a == 0:
        return "0"
    return "%.3g" % v


def spread_text(stat):
    s = stat.spread
    if s is None:
        return "agg" if stat.aggregated else ""
    return ("%.0f%%" if s >= 0.1 else "%.1f%%") % (100 * s)


def cell(stat, run=None):
    """'median (spread)' for a table cell."""
    if run is not None and run.error:
        return "error"
    if stat is None or stat.median is None:
        return "–"
    sp = spread_text(stat)
    return num(stat.median) + (" (" + sp + ")" if sp else "")


def ratio(a, b):
    if a is None or b is None or a.median is None or not b.median:
        return None
    return a.median / b.median


def ratio_text(r):
    return "–" if r is None else num(r) + "×"


def ratio_range(a, b):
    """The extreme ratios the min..max of a and b allow: (low, high) or None."""
    if None in (a.lo, a.hi, b.lo, b.hi) or not b.lo or not b.hi:
        return None
    return a.lo / b.hi, a.hi / b.lo


def md_table(headers, rows, align=None):
    align = align or (["l"] + ["r"] * (len(headers) - 1))
    sep = {"l": ":--", "r": "--:", "c": ":-:"}
    out = ["| " + " | ".join(headers) + " |",
           "| " + " | ".join(sep[a] for a in align) + " |"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return out


def threads_label(t, cores):
    return "%d (oversubscribed)" % t if cores and t > cores else str(t)
