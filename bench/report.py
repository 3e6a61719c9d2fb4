#!/usr/bin/env python3
"""Turns a brc_bench run into a report: report.md, throughput.svg and a table on stdout.

  bench/report.py --bench build/report/brc_bench.json [--cpython build/report/cpython_gc.json]
                  [--build-info build/bench/bench/build_info.json] [--notes NOTES.md]
                  --out-dir build/report [--quick]

Inputs (benchmark names and schemas: the naming contract shared with bench/*.cc):
  --bench       Google Benchmark JSON (--benchmark_out_format=json) with every repetition as a
                run_type "iteration" row. Medians and spreads are computed here from those rows;
                the aggregate rows are used only for a benchmark that has no iteration rows.
  --cpython     bench/cpython_gc.py's JSON (scenario 7). Optional; the collector floors on
                ns per object are judged as ratios to it (without it, by absolute bounds).
  --build-info  the build description CMake writes at configure time. Optional.
  --notes       Markdown written by the maintainers, printed under the floors as
                "Why a floor does not hold". Optional.
  --quick       the run was a smoke run (scripts/bench.sh --quick): the report says so at the
                top and labels the floors as not meaningful.

Exit status: 0 when the report was written (whether or not the floors hold), 2 when the benchmark
JSON is missing or cannot be read, 1 on a bad command line. Standard library only.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import socket
import statistics
import sys
from xml.sax.saxutils import escape

# ---------------------------------------------------------------------------------------------
# Reading the benchmark JSON.

# Name segments Google Benchmark appends on its own that carry no meaning for the report.
_SUFFIX = re.compile(r"/(?:iterations:\d+|repeats:\d+|min_time:[^/]+|min_warmup_time:[^/]+|"
                     r"real_time|manual_time|process_time)(?=/|$)")

_TIME_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}

# Fields of a benchmark row that are not user counters.
_STANDARD_FIELDS = {
    "name", "family_index", "per_family_instance_index", "run_name", "run_type", "repetitions",
    "repetition_index", "threads", "iterations", "real_time", "cpu_time", "time_unit", "label",
    "error_occurred", "error_message", "aggregate_name", "aggregate_unit", "big_o", "rms",
    "complexity_n",
}

# Names the single-thread pair benchmarks had before the contract; used only when the contract
# name is absent from the run.
_LEGACY = {
    "BM_Pair/plain": "BM_PlainCounter",
    "BM_Pair/atomic": "BM_StdAtomic",
    "BM_Pair/shared_ptr": "BM_SharedPtrCopy",
    "BM_Pair/brc_owner": "BM_BrcOwner",
    "BM_Pair/brc_nonowner": "BM_BrcNonOwner",
    "BM_Pair/brc_immortal": "BM_BrcImmortal",
    "BM_Pair/brc_ref": "BM_BrcRefCopy",
}

# Every contender in the same place in every table and the same colour in every figure.
_CONTENDER_ORDER = ["plain", "atomic", "shared_ptr", "new_delete", "boehm", "brc", "brc_tracked"]


def canonical(name):
    """The contract name of a run: Google Benchmark's own suffixes removed, threads:T kept."""
    return _SUFFIX.sub("", name)


class Stat:
    """Median and min..max of one quantity over the repetitions."""

    def __init__(self, values=None, median=None, aggregated=False):
        values = [v for v in (values or []) if v is not None and not math.isnan(v)]
        self.n = len(values)
        self.aggregated = aggregated  # only the aggregate "median" row was available
        if values:
            self.median = statistics.median(values)
            self.lo, self.hi = min(values), max(values)
        else:
            self.median, self.lo, self.hi = median, None, None
            self.n = 1 if median is not None else 0

    def scaled(self, factor):
        s = Stat()
        s.n, s.aggregated = self.n, self.aggregated
        s.median = None if self.median is None else self.median * factor
        s.lo = None if self.lo is None else self.lo * factor
        s.hi = None if self.hi is None else self.hi * factor
        return s

    @property
    def spread(self):
        """(max - min) / median, or None without at least two samples."""
        if self.lo is None or self.hi is None or not self.median or self.n < 2:
            return None
        return (self.hi - self.lo) / abs(self.median)


class Run:
    """One benchmark instance over its repetitions."""

    def __init__(self, raw_name, rows, aggregate_rows):
        self.raw_name = raw_name
        self.name = canonical(raw_name)
        parts = self.name.split("/")
        self.family = parts[0]
        self.contender = parts[1] if len(parts) > 1 and ":" not in parts[1] else None
        self.args = {}
        for p in parts[1:]:
            if ":" in p:
                k, v = p.split(":", 1)
                self.args[k] = v
        first = (rows or aggregate_rows or [{}])[0]
        self.threads = int(first.get("threads", self.args.get("threads", 1)) or 1)
        if "threads" in self.args:
            self.threads = int(self.args["threads"])
        errors = [r for r in rows if r.get("error_occurred")]
        good = [r for r in rows if not r.get("error_occurred")]
        self.error = None
        if errors and not good:
            self.error = errors[0].get("error_message") or "error"
        self.failed_repetitions = len(errors) if good else 0
        self.label = first.get("label") or ""
        # Real (wall) time for what runs on several threads or times itself; CPU time of the
        # benchmark thread for the single-thread rest, except the binary trees, whose tracked and
        # Boehm contenders do collector work on other threads that CPU time would not count.
        self.uses_real = ("/real_time" in raw_name or "/manual_time" in raw_name
                          or self.threads > 1 or "threads" in self.args
                          or self.family == "BM_BinaryTrees")
        self.counters = {}
        self.aggregated = False
        if good:
            unit = _TIME_NS.get(good[0].get("time_unit", "ns"), 1.0)
            self.real_ns = Stat([r.get("real_time", float("nan")) * unit for r in good])
            self.cpu_ns = Stat([r.get("cpu_time", float("nan")) * unit for r in good])
            keys = set()
            for r in good:
                keys.update(k for k, v in r.items()
                            if k not in _STANDARD_FIELDS and isinstance(v, (int, float))
                            and not isinstance(v, bool))
            for k in keys:
                self.counters[k] = Stat([r.get(k) for r in good])
        else:
            med = [r for r in aggregate_rows if r.get("aggregate_name") == "median"]
            if med and not self.error:
                r = med[0]
                self.aggregated = True
                unit = _TIME_NS.get(r.get("time_unit", "ns"), 1.0)
                self.real_ns = Stat(median=r.get("real_time", 0) * unit, aggregated=True)
                self.cpu_ns = Stat(median=r.get("cpu_time", 0) * unit, aggregated=True)
                for k, v in r.items():
                    if (k not in _STANDARD_FIELDS and isinstance(v, (int, float))
                            and not isinstance(v, bool)):
                        self.counters[k] = Stat(median=v, aggregated=True)
            else:
                self.real_ns = Stat()
                self.cpu_ns = Stat()
        self.n_reps = len(good) if good else (first.get("repetitions", 0) if self.aggregated
                                              else 0)

    @property
    def time_ns(self):
        return self.real_ns if self.uses_real else self.cpu_ns

    def counter(self, key):
        return self.counters.get(key)


class Bench:
    """Every run of one benchmark JSON, by contract name."""

    def __init__(self, doc):
        self.context = doc.get("context", {}) or {}
        rows = doc.get("benchmarks")
        if not isinstance(rows, list):
            raise ValueError("no \"benchmarks\" list")
        iterations, aggregates, order = {}, {}, []
        for r in rows:
            if not isinstance(r, dict) or "name" not in r:
                continue
            key = r.get("run_name", r["name"])
            if key not in iterations:
                iterations[key], aggregates[key] = [], []
                order.append(key)
            if r.get("run_type", "iteration") == "aggregate":
                aggregates[key].append(r)
            else:
                iterations[key].append(r)
        self.runs = {}
        for key in order:
            run = Run(key, iterations[key], aggregates[key])
            self.runs[run.name] = run
        self.used = set()
        self.legacy_used = []

    def get(self, name):
        run = self.runs.get(name)
        if run is None and name in _LEGACY and _LEGACY[name] in self.runs:
            run = self.runs[_LEGACY[name]]
            self.legacy_used.append((name, _LEGACY[name]))
        if run is not None:
            self.used.add(run.name)
        return run

    def family(self, family, **args):
        """Runs of `family` whose arguments include `args` (values compared as strings)."""
        out = []
        for run in self.runs.values():
            if run.family != family:
                continue
            if all(run.args.get(k) == str(v) for k, v in args.items()):
                out.append(run)
        return out

    def repetitions(self):
        counts = [r.n_reps for r in self.runs.values() if not r.error]
        return (min(counts), max(counts)) if counts else (0, 0)


def contender_key(c):
    return (_CONTENDER_ORDER.index(c) if c in _CONTENDER_ORDER else len(_CONTENDER_ORDER), c)


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


# ---------------------------------------------------------------------------------------------
# Machine and build.

def cpu_model():
    """The CPU as /proc/cpuinfo names it, with vendor, family, model and stepping: a model
    name such as "AMD EPYC" covers CPUs whose ratios differ (the owner pair measured 1.25x a
    plain counter on one such machine and 2.0x on another), so a figure needs all four."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown"
    parts = []
    for key, label in (("vendor_id", "vendor"), ("cpu family", "family"), ("model", "model"),
                       ("stepping", "stepping"), ("microcode", "microcode")):
        if key in fields:
            parts.append("%s %s" % (label, fields[key]))
    hypervisor = "hypervisor" in fields.get("flags", "").split()
    if hypervisor:
        parts.append("virtual machine")
    return name + (" (" + ", ".join(parts) + ")" if parts else "")


def cache_text(caches, cpus):
    parts = []
    for c in caches or []:
        size = c.get("size", 0)
        size_s = ("%d MiB" % (size // 2 ** 20) if size >= 2 ** 20 and size % 2 ** 20 == 0
                  else "%d KiB" % (size // 1024))
        share = c.get("num_sharing", 0) or 0
        count = " ×%d" % (cpus // share) if share and cpus and cpus // share > 1 else ""
        parts.append("L%s %s %s%s" % (c.get("level", "?"), c.get("type", ""), size_s, count))
    return ", ".join(parts) if parts else "not reported"


def load_optional(path, what):
    """(document, None) or (None, why it is missing)."""
    if not path:
        return None, "no %s file was given" % what
    try:
        with open(path) as f:
            return json.load(f), None
    except FileNotFoundError:
        return None, "%s file %s not found" % (what, path)
    except (OSError, ValueError) as e:
        return None, "%s file %s could not be read (%s)" % (what, path, e)


# ---------------------------------------------------------------------------------------------
# Floors.

class Floor:
    def __init__(self, title, bound_text):
        self.title = title
        self.bound_text = bound_text
        self.parts = []  # (label, measured text, verdict: True/False/None, marginal)

    def add(self, label, measured, ok, marginal=False):
        self.parts.append((label, measured, ok, marginal))

    @property
    def verdict(self):
        if not self.parts:
            return None
        oks = [p[2] for p in self.parts]
        if any(o is False for o in oks):
            return False
        if any(o is None for o in oks):
            return None
        return True

    def measured_text(self):
        if not self.parts:
            return "no input"
        out = []
        for label, measured, _, marginal in self.parts:
            t = (label + ": " if label else "") + measured
            if marginal:
                t += " (bound inside the spread)"
            out.append(t)
        return "; ".join(out)


def verdict_text(v, quick):
    t = {True: "holds", False: "DOES NOT HOLD", None: "not measured"}[v]
    if quick and v is not None:
        t += " (quick run: not meaningful)"
    return t


def ratio_floor(floor, label, a_run, b_run, bound, at_most, a_name, b_name):
    """Adds the part 'a/b <= bound' (at_most) or 'a/b >= bound' to `floor`."""
    if a_run is None or b_run is None or a_run.error or b_run.error:
        missing = [n + (" (error)" if r is not None else " missing")
                   for n, r in ((a_name, a_run), (b_name, b_run)) if r is None or r.error]
        floor.add(label, ", ".join(missing), None)
        return
    a, b = a_run.time_ns, b_run.time_ns
    r = ratio(a, b)
    if r is None:
        floor.add(label, "no figure", None)
        return
    ok = r <= bound if at_most else r >= bound
    rr = ratio_range(a, b)
    marginal = rr is not None and rr[0] <= bound <= rr[1]
    floor.add(label, "%s %s ns / %s %s ns = %s" % (a_name, num(a.median), b_name,
                                                  num(b.median), ratio_text(r)), ok, marginal)


def value_floor(floor, label, run, key, bound, unit):
    stat = run.counter(key) if run is not None and not run.error else None
    if stat is None or stat.median is None:
        floor.add(label, "error" if run is not None and run.error else "missing", None)
        return
    ok = stat.median <= bound
    marginal = stat.lo is not None and stat.lo <= bound <= stat.hi
    floor.add(label, "%s %s" % (num(stat.median), unit), ok, marginal)


def speedup_floor(floor, label, slow_run, fast_run, key, bound, at_most=False):
    """slow/fast >= bound (or <= bound when at_most), from counter `key` (or the time when key is
    None)."""
    def get(run):
        if run is None or run.error:
            return None
        return run.counter(key) if key else run.time_ns
    s, f = get(slow_run), get(fast_run)
    r = ratio(s, f) if s is not None and f is not None else None
    if r is None:
        errored = any(run is not None and run.error for run in (slow_run, fast_run))
        floor.add(label, "error" if errored else "missing", None)
        return
    rr = ratio_range(s, f)
    marginal = rr is not None and rr[0] <= bound <= rr[1]
    floor.add(label, ratio_text(r), r <= bound if at_most else r >= bound, marginal)


def ring_sizes(bench, family):
    sizes = {10, 1000}
    for run in bench.family(family):
        if "ring" in run.args:
            sizes.add(int(run.args["ring"]))
    return sorted(sizes)


def cpython_results(cpython):
    """{name: result} from bench/cpython_gc.py's document (empty without one)."""
    out = {}
    if isinstance(cpython, dict):
        for r in cpython.get("results", []) or []:
            if isinstance(r, dict) and "name" in r:
                out[r["name"]] = r
    return out


def cpython_stat(results, name, key):
    """The Stat of CPython's samples `key` for case `name`, or None."""
    c = results.get(name)
    if c is None:
        return None
    samples = (c.get("samples") or {}).get(key) or []
    st = Stat([float(x) for x in samples if isinstance(x, (int, float))])
    return st if st.median is not None else None


def counter_of(run, key):
    return run.counter(key) if run is not None and not run.error else None


def cpython_floor(floor, label, run, cpy, key, bound, fallback_bound):
    """CPython ÷ brc >= bound on counter `key`; without CPython figures, brc's figure against
    the former absolute bound `fallback_bound` (ns), said so in the text."""
    s = counter_of(run, key)
    if s is None or s.median is None:
        floor.add(label, "error" if run is not None and run.error else "brc missing", None)
        return
    if cpy is None:
        floor.add(label, "brc %s ns; no CPython figure, judged by the absolute bound %s ns"
                  % (num(s.median), num(fallback_bound)), s.median <= fallback_bound,
                  s.lo is not None and s.lo <= fallback_bound <= s.hi)
        return
    r = ratio(cpy, s)
    rr = ratio_range(cpy, s)
    marginal = rr is not None and rr[0] <= bound <= rr[1]
    floor.add(label, "CPython %s ns / brc %s ns = %s" % (num(cpy.median), num(s.median),
                                                         ratio_text(r)), r >= bound, marginal)


def pause_sizes(bench, family):
    """(old heap sizes, young set sizes) of BM_YoungPause / BM_FullPause in the run."""
    runs = [r for r in bench.family(family) if "old" in r.args and "young" in r.args]
    return (sorted({int(r.args["old"]) for r in runs}),
            sorted({int(r.args["young"]) for r in runs}))


def build_and_drop_sizes(bench):
    """[(nodes, rounds)] of BM_BuildAndDrop in the run, largest lists first."""
    return sorted({(int(r.args["nodes"]), int(r.args["rounds"]))
                   for r in bench.family("BM_BuildAndDrop")
                   if "nodes" in r.args and "rounds" in r.args}, reverse=True)


def collections_text(run):
    """'Y young + F full' collections per iteration of a BM_BuildAndDrop run."""
    y, f = counter_of(run, "young"), counter_of(run, "full")
    if y is None or f is None:
        return ""
    return "%s young + %s full" % (num(y.median), num(f.median))


# Issue 11: the collector floors that were absolute nanoseconds are judged against CPython's
# collector measured in the same run (absolute figures differ twofold between machines of the
# same kind; the ratio to CPython does not). Each bound is the former absolute bound carried
# over with CPython's figure on the machine where it was set (bench/floor_notes.md). Live heap:
# brc 11.8 ns, CPython 3.7x that (about 44 ns), bound 15 ns: 44 / 15 = 2.9. Garbage: brc 30.6 ns,
# CPython 84-110 ns, bound 35 ns: 84 / 35 = 2.4. Without CPython figures the former absolute
# bounds judge.
_LIVE_VS_CPYTHON = 2.9
_GARBAGE_VS_CPYTHON = 2.4
_LIVE_NS = 15.0
_GARBAGE_NS = 35.0


# Issue 12 ("Hand-off memory"): bench/rss/handoff_rss.cc's figures, in KiB.
_RSS_PEAK_VS_SHARED_PTR = 1.2
_RSS_SETTLE_MIB = 4.0


def rss_rows(rss):
    """{(contender, case): row} from handoff_rss.json, or {}."""
    if not isinstance(rss, dict):
        return {}
    out = {}
    for r in rss.get("rows") or []:
        if isinstance(r, dict) and "contender" in r and "case" in r:
            out[(r["contender"], r["case"])] = r
    return out


def rss_floors(rss):
    rows = rss_rows(rss)
    f1 = Floor("Hand-off memory: brc's peak ≤ %s× shared_ptr's for the same live objects"
               % num(_RSS_PEAK_VS_SHARED_PTR),
               "(peak − before) brc ÷ shared_ptr ≤ %s, each case" % num(_RSS_PEAK_VS_SHARED_PTR))
    f2 = Floor("Hand-off memory: 1 s after the last drop, no Collect(), brc's RSS within %s MiB "
               "of before" % num(_RSS_SETTLE_MIB),
               "after − before ≤ %s MiB, producer idle and producer exited" % num(_RSS_SETTLE_MIB))
    for case in ("idle", "exited"):
        b, sp = rows.get(("brc", case)), rows.get(("shared_ptr", case))
        label = "producer " + case
        if b is None or sp is None:
            f1.add(label, "missing", None)
        else:
            gb = b["peak_kib"] - b["before_kib"]
            gs = sp["peak_kib"] - sp["before_kib"]
            r = gb / gs if gs > 0 else None
            f1.add(label, "brc %s MiB / shared_ptr %s MiB = %s"
                   % (num(gb / 1024.0), num(gs / 1024.0), ratio_text(r)),
                   None if r is None else r <= _RSS_PEAK_VS_SHARED_PTR)
        if b is None:
            f2.add(label, "missing", None)
        else:
            d = (b["after_kib"] - b["before_kib"]) / 1024.0
            f2.add(label, "%s MiB" % num(d), d <= _RSS_SETTLE_MIB)
    return [f1, f2]


def compute_floors(bench, cpython=None, rss=None):
    floors = []
    if rss is not None:
        floors.extend(rss_floors(rss))
    cpy = cpython_results(cpython)
    f = Floor("Owner pair ≤ 1.3× plain counter", "BM_Pair/brc_owner ÷ BM_Pair/plain ≤ 1.3")
    ratio_floor(f, "", bench.get("BM_Pair/brc_owner"), bench.get("BM_Pair/plain"), 1.3, True,
                "brc_owner", "plain")
    floors.append(f)

    f = Floor("Owner pair ≥ 5× faster than shared_ptr copy",
              "BM_Pair/shared_ptr ÷ BM_Pair/brc_owner ≥ 5")
    ratio_floor(f, "", bench.get("BM_Pair/shared_ptr"), bench.get("BM_Pair/brc_owner"), 5.0,
                False, "shared_ptr", "brc_owner")
    floors.append(f)

    f = Floor("Non-owner pair ≤ 1.2× std::atomic",
              "BM_Pair/brc_nonowner ÷ BM_Pair/atomic ≤ 1.2")
    ratio_floor(f, "", bench.get("BM_Pair/brc_nonowner"), bench.get("BM_Pair/atomic"), 1.2, True,
                "brc_nonowner", "atomic")
    floors.append(f)

    f = Floor("Binary trees, one thread: brc ≥ 1.5× faster than shared_ptr at every depth",
              "BM_BinaryTrees/shared_ptr ÷ BM_BinaryTrees/brc ≥ 1.5, each depth")
    depths = sorted({int(r.args["depth"]) for r in bench.family("BM_BinaryTrees")
                     if "depth" in r.args and r.contender in ("brc", "shared_ptr")})
    for d in depths:
        speedup_floor(f, "depth %d" % d, bench.get("BM_BinaryTrees/shared_ptr/depth:%d" % d),
                      bench.get("BM_BinaryTrees/brc/depth:%d" % d), None, 1.5)
    floors.append(f)

    f = Floor("Binary trees, tracked nodes (collector on, default configuration) at least as "
              "fast as shared_ptr at every depth; goal 1.5×",
              "BM_BinaryTrees/shared_ptr ÷ BM_BinaryTrees/brc_tracked ≥ 1.0, each depth")
    depths = sorted({int(r.args["depth"]) for r in bench.family("BM_BinaryTrees")
                     if "depth" in r.args and r.contender in ("brc_tracked", "shared_ptr")})
    for d in depths:
        sp = bench.get("BM_BinaryTrees/shared_ptr/depth:%d" % d)
        tr = bench.get("BM_BinaryTrees/brc_tracked/depth:%d" % d)
        speedup_floor(f, "depth %d" % d, sp, tr, None, 1.0)
        label, measured, ok, marginal = f.parts[-1]
        if ok is not None and ratio(sp.time_ns, tr.time_ns) >= 1.5:
            f.parts[-1] = (label, measured + " (goal met)", ok, marginal)
    floors.append(f)

    f = Floor("Build and drop a tracked list: collector on ≤ 1.3× collector off (each size)",
              "BM_BuildAndDrop/generational ÷ BM_BuildAndDrop/off ≤ 1.3, each nodes × rounds")
    for nodes, rounds in build_and_drop_sizes(bench):
        suffix = "nodes:%d/rounds:%d" % (nodes, rounds)
        on = bench.get("BM_BuildAndDrop/generational/" + suffix)
        off = bench.get("BM_BuildAndDrop/off/" + suffix)
        label = "{:,} × {}".format(nodes, rounds)
        if on is None or off is None or on.error or off.error:
            floor_missing(f, label, (("on", on), ("off", off)))
            continue
        r = ratio(on.time_ns, off.time_ns)
        rr = ratio_range(on.time_ns, off.time_ns)
        f.add(label, "on %s ms (%s) / off %s ms = %s"
              % (num(on.time_ns.median * 1e-6), collections_text(on),
                 num(off.time_ns.median * 1e-6), ratio_text(r)), r <= 1.3,
              rr is not None and rr[0] <= 1.3 <= rr[1])
    floors.append(f)

    olds, youngs = pause_sizes(bench, "BM_YoungPause")
    big = max(olds) if olds else None
    f = Floor("Young-collection pause with %s live old objects ≤ 2× the pause with no old heap"
              % ("{:,}".format(big) if big else "4M"),
              "BM_YoungPause/old:O/young:Y ÷ BM_YoungPause/old:0/young:Y pause_us ≤ 2, each Y")
    if big and 0 in olds and big > 0:
        for y in youngs:
            with_old = bench.get("BM_YoungPause/old:%d/young:%d" % (big, y))
            without = bench.get("BM_YoungPause/old:0/young:%d" % y)
            a, b = counter_of(with_old, "pause_us"), counter_of(without, "pause_us")
            label = "young set {:,}".format(y)
            if a is None or b is None:
                floor_missing(f, label, (("with old heap", with_old), ("without", without)))
                continue
            r = ratio(a, b)
            rr = ratio_range(a, b)
            f.add(label, "%s µs / %s µs = %s" % (num(a.median), num(b.median), ratio_text(r)),
                  r <= 2.0, rr is not None and rr[0] <= 2.0 <= rr[1])
    floors.append(f)

    f = Floor("Tracked node (header + one Ref) in a 32-byte block (issue 11 §2 goal), beside "
              "the leaf node and make_shared",
              "BM_MemoryPerObject tracked_block_B ≤ 32")
    mem = bench.get("BM_MemoryPerObject")
    block = counter_of(mem, "tracked_block_B")
    if block is None or block.median is None or not block.median:
        f.add("", "error" if mem is not None and mem.error else "missing", None)
    else:
        extra = []
        for key, what in (("tracked_heap_B", "heap per node"), ("leaf_block_B", "leaf block"),
                          ("leaf_malloc_B", "leaf on malloc"),
                          ("shared_ptr_B", "make_shared")):
            st = counter_of(mem, key)
            if st is not None and st.median is not None:
                extra.append("%s %s B" % (what, num(st.median)))
        f.add("", "tracked block %s B (%s)" % (num(block.median), ", ".join(extra)),
              block.median <= 32)
    floors.append(f)

    f = Floor("Collector, live heap, 1 worker ≥ %s× faster than CPython's gc (each ring size)"
              % num(_LIVE_VS_CPYTHON),
              "CPython_CollectLiveHeap ÷ BM_CollectLiveHeap/ring:R/workers:1 ns_per_obj ≥ %s "
              "(without CPython: ≤ %s ns)" % (num(_LIVE_VS_CPYTHON), num(_LIVE_NS)))
    for r in ring_sizes(bench, "BM_CollectLiveHeap"):
        cpython_floor(f, "ring %d" % r, bench.get("BM_CollectLiveHeap/ring:%d/workers:1" % r),
                      cpython_stat(cpy, "CPython_CollectLiveHeap/ring:%d" % r, "ns_per_obj"),
                      "ns_per_obj", _LIVE_VS_CPYTHON, _LIVE_NS)
    floors.append(f)

    f = Floor("Collector, live heap: 2 workers ≥ 1.5× faster than 1 (each ring size)",
              "ns_per_obj workers:1 ÷ workers:2 ≥ 1.5")
    for r in ring_sizes(bench, "BM_CollectLiveHeap"):
        speedup_floor(f, "ring %d" % r, bench.get("BM_CollectLiveHeap/ring:%d/workers:1" % r),
                      bench.get("BM_CollectLiveHeap/ring:%d/workers:2" % r), "ns_per_obj", 1.5)
        c = cpython_stat(cpy, "CPython_CollectLiveHeap/ring:%d" % r, "ns_per_obj")
        two = counter_of(bench.get("BM_CollectLiveHeap/ring:%d/workers:2" % r), "ns_per_obj")
        label, measured, ok, marginal = f.parts[-1]
        if c is not None and two is not None and ok is not None:
            f.parts[-1] = (label, measured + " (2 workers: CPython ÷ brc = %s)"
                           % ratio_text(ratio(c, two)), ok, marginal)
    floors.append(f)

    f = Floor("Collector, garbage, 1 worker ≥ %s× faster than CPython's gc (each ring size)"
              % num(_GARBAGE_VS_CPYTHON),
              "CPython_CollectGarbage ÷ BM_CollectGarbage/ring:R/workers:1 ns_per_obj ≥ %s "
              "(without CPython: ≤ %s ns)" % (num(_GARBAGE_VS_CPYTHON), num(_GARBAGE_NS)))
    for r in ring_sizes(bench, "BM_CollectGarbage"):
        cpython_floor(f, "ring %d" % r, bench.get("BM_CollectGarbage/ring:%d/workers:1" % r),
                      cpython_stat(cpy, "CPython_CollectGarbage/ring:%d" % r, "ns_per_obj"),
                      "ns_per_obj", _GARBAGE_VS_CPYTHON, _GARBAGE_NS)
    floors.append(f)
    floors.extend(sharing_floors(bench))
    return floors


def ips_floor(floor, label, a_run, b_run, bound, at_most):
    """items_per_second(a) / items_per_second(b) <= bound (at_most) or >= bound."""
    speedup_floor(floor, label, a_run, b_run, "items_per_second", bound, at_most)


def sharing_floors(bench):
    """Issue 12: shared objects as cheap as owned ones."""
    floors = []
    f = Floor("Immortal pair ≤ 1.1× owner pair",
              "BM_Pair/brc_immortal ÷ BM_Pair/brc_owner ≤ 1.1")
    ratio_floor(f, "", bench.get("BM_Pair/brc_immortal"), bench.get("BM_Pair/brc_owner"), 1.1,
                True, "brc_immortal", "brc_owner")
    floors.append(f)

    rm0 = thread_series(bench, "BM_ReadMostly", temps=0)
    rm1 = thread_series(bench, "BM_ReadMostly", temps=1)
    f = Floor("Read-mostly, per-thread counting, no temporaries: ≥ 5× std::atomic at 2 threads",
              "BM_ReadMostly/brc_per_thread ÷ BM_ReadMostly/atomic (pairs/s), temps:0, 2 threads"
              " ≥ 5")
    ips_floor(f, "", rm0.get("brc_per_thread", {}).get(2), rm0.get("atomic", {}).get(2), 5.0,
              False)
    floors.append(f)

    f = Floor("Read-mostly with temporaries: per-thread counting within 1.25× of its immortal "
              "twin", "BM_ReadMostly/brc_immortal ÷ BM_ReadMostly/brc_per_thread (pairs/s), "
              "temps:1, each thread count ≤ 1.25")
    for t in sorted(rm1.get("brc_per_thread", {})):
        ips_floor(f, "%d threads" % t, rm1.get("brc_immortal", {}).get(t),
                  rm1["brc_per_thread"][t], 1.25, True)
    floors.append(f)

    f = Floor("Read-mostly, per-thread counting: N threads ≥ 0.8 × N × one thread (N up to the "
              "cores)", "BM_ReadMostly/brc_per_thread, temps:0, pairs/s at N ÷ at 1 ≥ 0.8 N")
    per_thread = rm0.get("brc_per_thread", {})
    cores = max(per_thread) // 2 if per_thread else 0  # the largest count is twice the cores
    for t in sorted(per_thread):
        if t == 1 or t > max(cores, 1):
            continue
        ips_floor(f, "%d threads" % t, per_thread[t], per_thread.get(1), 0.8 * t, False)
    floors.append(f)

    ho = thread_series(bench, "BM_Handoff")
    f = Floor("Hand-off: brc ≥ 1.5× shared_ptr at 2 threads, ≥ 1.0× oversubscribed",
              "BM_Handoff/brc ÷ BM_Handoff/shared_ptr (objects/s)")
    brc_ho = ho.get("brc", {})
    top = max(brc_ho) if brc_ho else None
    for t in sorted(brc_ho):
        if t == 2:
            ips_floor(f, "2 threads", brc_ho[t], ho.get("shared_ptr", {}).get(t), 1.5, False)
        elif t == top:
            ips_floor(f, "%d threads" % t, brc_ho[t], ho.get("shared_ptr", {}).get(t), 1.0,
                      False)
    floors.append(f)
    return floors


def floor_missing(floor, label, named_runs):
    """A part that cannot be judged: which of the runs are missing or failed."""
    floor.add(label, ", ".join(n + (" (error)" if r is not None else " missing")
                               for n, r in named_runs if r is None or r.error), None)


# ---------------------------------------------------------------------------------------------
# Thread tables (scenarios 2, 3 and 4) and the data of the figure.

def thread_series(bench, family, **args):
    """{contender: {threads: run}} for one thread family."""
    series = {}
    for run in bench.family(family, **args):
        if run.contender is None:
            continue
        bench.used.add(run.name)
        series.setdefault(run.contender, {})[run.threads] = run
    return series


def throughput(run):
    """items_per_second in millions, as a Stat, or None."""
    if run is None or run.error:
        return None
    s = run.counter("items_per_second")
    return s.scaled(1e-6) if s is not None else None


def thread_table(series, cores, ratios, unit):
    contenders = sorted(series, key=contender_key)
    threads = sorted({t for c in series.values() for t in c})
    headers = ["threads"] + ["%s (%s)" % (c, unit) for c in contenders]
    shown = [(a, b) for a, b in ratios if a in series and b in series]
    headers += ["%s / %s" % (a, b) for a, b in shown]
    rows = []
    for t in threads:
        row = [threads_label(t, cores)]
        for c in contenders:
            run = series[c].get(t)
            row.append(cell(throughput(run), run) if run is not None else "–")
        for a, b in shown:
            row.append(ratio_text(ratio(throughput(series[a].get(t)),
                                        throughput(series[b].get(t)))))
        rows.append(row)
    return md_table(headers, rows)


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
    x = 20
    ly = title_h + legend_h // 2
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
    if not panels:
        out.append('<text x="%d" y="%d" font-size="15" text-anchor="middle">No thread '
                   'benchmarks in this run.</text>' % (width // 2, title_h + legend_h + 60))
    for i, (ptitle, unit, series) in enumerate(panels):
        px = (i % cols) * panel_w
        py = title_h + legend_h + (i // cols) * panel_h
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
            continue
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
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# The report.

_PAIR_CONTENDERS = [
    ("plain", "++/-- on a plain integer field (the limit)"),
    ("atomic", "std::atomic fetch_add + fetch_sub"),
    ("shared_ptr", "copy + destroy a std::shared_ptr"),
    ("brc_owner", "brc IncRef + DecRef by the owner thread"),
    ("brc_nonowner", "brc IncRef + DecRef by another thread"),
    ("brc_immortal", "brc IncRef + DecRef on an immortal object"),
    ("brc_ref", "copy + destroy a brc::Ref, owner thread"),
]

_OBJECT_LIFE = ("BM_MakeDrop", "BM_MakeDropSharedPtr", "BM_MakeDropBatch",
                "BM_MakeDropBatchSharedPtr", "BM_CrossThread", "BM_AllocatorRaw",
                "BM_AllocatorCrossThreadRaw")

_MEMORY = [
    ("tracked_sizeof_B", "sizeof a tracked node (header + one Ref)"),
    ("tracked_block_B", "the block a tracked node takes in the collector's heap"),
    ("tracked_heap_B", "collector heap growth per tracked node (whole pages)"),
    ("leaf_sizeof_B", "sizeof an untracked node with the same payload"),
    ("leaf_block_B", "the untracked node's block under brc's default allocator"),
    ("leaf_malloc_B", "the untracked node's real cost under glibc malloc"),
    ("shared_ptr_B", "std::make_shared of the equivalent node, glibc malloc"),
    ("tracked_word_B", "sizeof plus the collector word (runs before issue 11)"),
]

_SCALING = [
    ("BM_ScaleOwn", "Each thread counts on its own object", [("brc", "atomic"),
                                                             ("brc", "shared_ptr")]),
    ("BM_ScaleShared", "All threads count on one object (brc: thread 0 owns it)",
     [("brc", "atomic"), ("brc", "shared_ptr")]),
    ("BM_FalseSharing", "Each thread its own object, objects adjacent in memory",
     [("brc", "atomic"), ("brc", "shared_ptr")]),
]


class Report:
    def __init__(self, args, bench, cpython, cpython_why, build, build_why):
        self.args = args
        self.bench = bench
        self.cpython = cpython
        self.cpython_why = cpython_why
        self.build = build
        self.build_why = build_why
        ctx = bench.context
        self.cores = int(ctx.get("num_cpus") or 0) or None
        self.lines = []
        self.stdout = []
        self.panels = []

    def w(self, *lines):
        self.lines.extend(lines)

    # -- header ---------------------------------------------------------------------------

    def branch_probe_line(self):
        """The front-end probe (BM_BranchProbe, bench/refcount_benchmark.cc): how much slower a
        loop turn with three taken branches ran than one with one, over the run's repetitions.
        Rows bound by taken branches (the immortal pair, per-thread counting) move with it."""
        one = self.bench.get("BM_BranchProbe/taken:1")
        three = self.bench.get("BM_BranchProbe/taken:3")
        if one is None or three is None:
            return
        s1, s3 = one.time_ns, three.time_ns
        if not s1.median or s3.median is None:
            return
        def turn(st):
            return st.scaled(1.0 / 1000)
        self.w("- Front-end probe (`BM_BranchProbe`, not brc), ns per loop turn (spread over the "
               "repetitions): three taken branches per turn %s, one taken branch %s, ratio %s×. "
               "The ratio is lowest on a quiet core; while the core's other hardware thread is "
               "busy (another virtual machine, on a cloud host) the three-branch loop slows up to "
               "twice, in phases, and so do the rows bound by taken branches: the immortal pair "
               "and per-thread counting."
               % (cell(turn(s3)), cell(turn(s1)), num(s3.median / s1.median)))
    def header(self):
        a, ctx = self.args, self.bench.context
        self.w("# brc benchmark report", "")
        if a.quick:
            self.w("> **QUICK RUN.** These are smoke-run figures (`scripts/bench.sh --quick`: "
                   "few repetitions, short runs, reduced sizes), **not measurements**. They show "
                   "that every benchmark runs; do not quote them and do not judge the floors "
                   "by them.", "")
        now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        self.w("Report written %s; benchmarks run %s." % (now, ctx.get("date", "(date unknown)")),
               "")
        self.w("## Machine", "")
        cores = self.cores
        host = ctx.get("host_name", "unknown")
        model = cpu_model()
        self.w("- CPU: %s" % model)
        if host not in ("unknown", socket.gethostname()):
            self.w("  (read on %s, where this report was written; the benchmarks ran on %s)"
                   % (socket.gethostname(), host))
        self.w("- Logical cores: %s" % (cores if cores else "not reported"))
        mhz = ctx.get("mhz_per_cpu")
        self.w("- Clock: %s MHz%s" % (mhz if mhz else "?",
                                       "; **CPU frequency scaling was on**: timings may vary"
                                       if ctx.get("cpu_scaling_enabled") else ""))
        self.w("- Caches: %s" % cache_text(ctx.get("caches"), cores or 0))
        self.w("- Host: %s" % host)
        if ctx.get("load_avg"):
            self.w("- Load average when the run started: %s"
                   % ", ".join("%.2f" % v for v in ctx["load_avg"]))
        self.branch_probe_line()
        self.w("", "## Build", "")
        if self.build is None:
            self.w("- Build information: not available (%s)." % self.build_why)
        else:
            b = self.build
            self.w("- Compiler: %s" % b.get("compiler", "not reported"))
            self.w("- Build type: %s" % b.get("build_type", "not reported"))
            self.w("- C++ flags: `%s`" % (b.get("cxx_flags") or "").strip())
            opts = b.get("brc_options") or {}
            self.w("- brc options: %s" % (", ".join("%s=%s" % kv for kv in sorted(opts.items()))
                                         or "none reported"))
            if "boehm" in b:
                self.w("- Boehm GC contender: %s" % ("built" if b.get("boehm") else
                                                     "not available"))
            if b.get("build_type") not in (None, "Release", "RelWithDebInfo"):
                self.w("- **Warning:** brc was not built with optimisation; the figures say "
                       "nothing about its speed.")
        lib = ctx.get("library_build_type")
        self.w("- Google Benchmark library: %s build%s" % (
            lib or "unknown", " (its own timing loop is unoptimised; Google Benchmark warns "
            "about this, the effect on these figures is small but not nil)"
            if lib == "debug" else ""))
        lo, hi = self.bench.repetitions()
        reps = str(lo) if lo == hi else "%d to %d" % (lo, hi)
        self.w("", "## How to read the tables", "")
        self.w("- Each benchmark ran **%s repetition%s**. A figure is the **median** over the "
               "repetitions; the percentage in parentheses after it is the **spread**, "
               "(max − min) / median over the same repetitions. A large spread means the "
               "machine was noisy for that row: compare such rows with care."
               % (reps, "" if reps == "1" else "s"))
        aggregated = [r for r in self.bench.runs.values() if r.aggregated]
        if aggregated:
            self.w("- **%d benchmarks have only aggregate rows in the file** (Google Benchmark "
                   "ran with --benchmark_report_aggregates_only): their figures are Google "
                   "Benchmark's medians, marked \"agg\", without a spread. Run with "
                   "--benchmark_display_aggregates_only=true to keep every repetition in the "
                   "file." % len(aggregated))
        self.w("- Ratios are ratios of medians. \"×\" columns say which is faster in their "
               "heading.")
        self.w("- Times: wall-clock (real) time for benchmarks that run several threads, "
               "measure their own time (`manual_time`) or use real time, and for the binary "
               "trees (their tracked and Boehm contenders work on helper threads too); the "
               "benchmark thread's CPU time for the other single-thread benchmarks.")
        self.w("- Thread counts above the %s logical cores are marked **oversubscribed**: "
               "threads then wait for a core, so those rows measure the scheduler as much as "
               "the code." % (cores if cores else "?"))
        self.w("- \"–\" means the benchmark is not in this run; \"error\" that it reported an "
               "error (listed at the end); \"agg\" that only Google Benchmark's aggregate "
               "median was in the file (no spread).")
        self.w("")

    # -- scenario 1 ----------------------------------------------------------------------
    def scenario1(self):
        b = self.bench
        self.w("## 1. Reference count pair, single thread", "",
               "Time per increment + decrement pair (ns). \"× plain\": this time over the plain "
               "counter's (lower is better); \"shared_ptr ÷ this\": how many times faster than a "
               "shared_ptr copy (higher is better).", "")
        plain, sp = b.get("BM_Pair/plain"), b.get("BM_Pair/shared_ptr")
        rows, out = [], []
        for c, what in _PAIR_CONTENDERS:
            run = b.get("BM_Pair/" + c)
            if run is None:
                rows.append([c, what, "–", "–", "–"])
                out.append((c, None, None, None))
                continue
            t = run.time_ns if not run.error else None
            r_plain = ratio(t, plain.time_ns) if t and plain and not plain.error else None
            r_sp = ratio(sp.time_ns, t) if t and sp and not sp.error else None
            rows.append([c, what, cell(t, run), ratio_text(r_plain), ratio_text(r_sp)])
            out.append((c, t.median if t else None, r_plain, r_sp))
        self.w(*md_table(["contender", "operation", "ns/pair", "× plain", "shared_ptr ÷ this"],
                         rows, ["l", "l", "r", "r", "r"]))
        if b.legacy_used:
            self.w("", "Rows read under their former names: " + ", ".join(
                "%s from %s" % kv for kv in sorted(set(b.legacy_used))) + ".")
        self.pairs = out
        # Object life: everything per object.
        life = [r for r in b.runs.values() if r.family in _OBJECT_LIFE]
        if life:
            self.w("", "### Object life", "",
                   "Nanoseconds per object (the per_obj counter where the benchmark has one, "
                   "else the time per iteration).", "")
            rows = []
            for run in life:
                b.used.add(run.name)
                po = run.counter("per_obj")
                st = po.scaled(1e9) if po is not None else run.time_ns
                rows.append([run.name, cell(st, run), "real" if run.uses_real else "cpu"])
            self.w(*md_table(["benchmark", "ns/object", "time"], rows))
        self.w("")

    # -- scenarios 2 and 3 ---------------------------------------------------------------
    def scenario2_3(self):
        b = self.bench
        self.w("## 2. Threads: counting throughput", "",
               "Million increment + decrement pairs per second, all threads together (higher "
               "is better); the ratio columns divide the medians.", "",
               "![throughput vs threads](throughput.svg)", "")
        any_rows = False
        for fam, what, ratios in _SCALING:
            series = thread_series(b, fam)
            if not series:
                self.w("### %s" % fam, "", "Not in this run.", "")
                continue
            any_rows = True
            self.w("### %s: %s" % (fam, what), "")
            self.w(*thread_table(series, self.cores, ratios, "M/s"))
            self.w("")
            self.panels.append((fam, "M pairs/s", self.series_stats(series)))
        for temps, what in ((0, "no temporaries"), (1, "a private temporary per step")):
            series = thread_series(b, "BM_ReadMostly", temps=temps)
            if not series:
                continue
            any_rows = True
            self.w("### BM_ReadMostly, %s: 64 objects of an idle owner, every thread takes and "
                   "drops references to them in turn" % what, "")
            self.w(*thread_table(series, self.cores,
                                 [("brc_per_thread", "atomic"), ("brc_shared", "atomic"),
                                  ("brc_immortal", "brc_per_thread")], "M/s"))
            self.w("")
            self.panels.append(("BM_ReadMostly temps:%d" % temps, "M pairs/s",
                                self.series_stats(series)))
        passes = sorted((r for r in b.family("BM_MergePass") if "objects" in r.args),
                        key=lambda r: int(r.args["objects"]))
        if passes:
            for r in passes:
                b.used.add(r.name)
            self.w("### A merge pass of per-thread counts (two threads' slots)", "")
            self.w(*md_table(["objects counted per thread", "pause (µs)", "ns per object"],
                             [[r.args["objects"], cell(r.time_ns.scaled(1e-3), r),
                               cell(r.counter("ns_per_object"), r)] for r in passes]))
            self.w("")
        series = thread_series(b, "BM_Handoff")
        self.w("## 3. Hand-off between threads", "",
               "Objects created by T/2 producer threads and dropped by T/2 consumer threads, "
               "millions per second (higher is better).", "")
        if series:
            self.w(*thread_table(series, self.cores,
                                 [("brc", "shared_ptr"), ("brc", "new_delete")], "M/s"))
            self.panels.append(("BM_Handoff", "M objects/s", self.series_stats(series)))
        else:
            self.w("Not in this run.")
        self.w("")
        return any_rows

    def handoff_memory(self):
        rss = getattr(self, "rss", None)
        self.w("### Hand-off memory", "")
        rows = rss_rows(rss)
        if not rows:
            self.w("Not in this run (bench/rss/handoff_rss.cc: %s)."
                   % (getattr(self, "rss_why", None) or "no --rss file"), "")
            return
        self.w("`brc_handoff_rss`: a producer makes %s objects of %s payload bytes and hands "
               "them all to a consumer, which drops them; resident memory (MiB) before, at the "
               "peak, and %s s after the last drop, with no `Collect()` or "
               "`ReleaseFreeMemory()`. Producer idle: it keeps reaching `brc::Safepoint()`; "
               "exited: it was joined before the drops. Each row is a fresh process."
               % ("{:,}".format(rss.get("objects", 0)), rss.get("payload_bytes"),
                  rss.get("settle_seconds")), "")
        table = []
        for c in ("brc", "shared_ptr", "new_delete"):
            for case in ("idle", "exited"):
                r = rows.get((c, case))
                if r is None:
                    continue
                mib = lambda k: r[k] / 1024.0
                table.append([c, case, num(mib("before_kib")), num(mib("peak_kib")),
                              num(mib("after_kib")),
                              num(mib("peak_kib") - mib("before_kib")),
                              num(mib("after_kib") - mib("before_kib"))])
        self.w(*md_table(["contender", "producer", "before", "peak", "after 1 s",
                          "peak − before", "after − before"], table,
                         ["l", "l", "r", "r", "r", "r", "r"]))
        self.w("")

    def series_stats(self, series):
        return {c: {t: throughput(run) for t, run in s.items()} for c, s in series.items()}

    # -- scenario 4 ----------------------------------------------------------------------
    def scenario4(self):
        b = self.bench
        self.w("## 4. Allocation heavy: binary trees", "")
        runs = [r for r in b.family("BM_BinaryTrees") if "depth" in r.args and r.contender]
        self.trees = []
        if not runs:
            self.w("Single-thread trees: not in this run.", "")
        else:
            for r in runs:
                b.used.add(r.name)
            contenders = sorted({r.contender for r in runs}, key=contender_key)
            depths = sorted({int(r.args["depth"]) for r in runs})
            by = {(r.contender, int(r.args["depth"])): r for r in runs}
            self.w("One thread builds a tree of 2^(D+1) − 1 nodes, walks it and drops it. "
                   "Milliseconds per tree and nanoseconds per node (the same time divided by "
                   "the nodes); \"÷\" columns: shared_ptr's time over brc's (higher: brc "
                   "faster).", "")
            speedups = [c for c in ("brc", "brc_tracked") if c in contenders]
            headers = ["depth", "nodes"] + ["%s ms" % c for c in contenders]
            headers += ["shared_ptr ÷ %s" % c for c in speedups]
            rows, rows_node = [], []
            for d in depths:
                nodes = 2 ** (d + 1) - 1
                row = [str(d), "{:,}".format(nodes)]
                row_node = [str(d)]
                for c in contenders:
                    run = by.get((c, d))
                    t = run.time_ns if run is not None and not run.error else None
                    row.append(cell(t.scaled(1e-6), run) if t else
                               ("error" if run is not None else "–"))
                    row_node.append(cell(t.scaled(1.0 / nodes), run) if t else
                                    ("error" if run is not None else "–"))
                for c in speedups:
                    s, f = by.get(("shared_ptr", d)), by.get((c, d))
                    r = (ratio(s.time_ns, f.time_ns) if s is not None and f is not None
                         and not s.error and not f.error else None)
                    row.append(ratio_text(r))
                    row_node.append(ratio_text(r))
                    if c == "brc":
                        self.trees.append((d, s.time_ns.median * 1e-6 if s is not None
                                           and not s.error else None,
                                           f.time_ns.median * 1e-6 if f is not None
                                           and not f.error else None, r))
                rows.append(row)
                rows_node.append(row_node)
            self.w(*md_table(headers, rows))
            self.w("", "ns per node:", "")
            self.w(*md_table(["depth"] + ["%s ns/node" % c for c in contenders] +
                             ["shared_ptr ÷ %s" % c for c in speedups], rows_node))
            self.w("")
        per = [r for r in b.family("BM_BinaryTreesPerThread") if "depth" in r.args]
        if not per:
            self.w("Trees per thread: not in this run.", "")
            return
        self.w("### One tree per thread", "",
               "Million nodes per second over all threads (build + walk + drop), higher is "
               "better.", "")
        for d in sorted({int(r.args["depth"]) for r in per}):
            series = thread_series(b, "BM_BinaryTreesPerThread", depth=d)
            self.w("Depth %d:" % d, "")
            self.w(*thread_table(series, self.cores, [("brc", "shared_ptr"),
                                                      ("brc_tracked", "shared_ptr")], "M/s"))
            self.w("")
            self.panels.append(("BM_BinaryTreesPerThread, depth %d" % d, "M nodes/s",
                                self.series_stats(series)))

    # -- scenario 5 ----------------------------------------------------------------------
    def collector_pair_table(self, family, arg, values):
        b = self.bench
        rows = []
        for v in values:
            r1 = b.get("%s/%s:%s/workers:1" % (family, arg, v))
            r2 = b.get("%s/%s:%s/workers:2" % (family, arg, v))

            def c(run, key):
                if run is None:
                    return "–"
                return cell(run.counter(key), run)
            n1 = r1.counter("ns_per_obj") if r1 is not None and not r1.error else None
            n2 = r2.counter("ns_per_obj") if r2 is not None and not r2.error else None
            label = "{:,}".format(int(v)) if arg == "objects" else str(v)
            if arg == "objects":
                p1 = r1.counter("pause_ms") if r1 is not None and not r1.error else None
                p2 = r2.counter("pause_ms") if r2 is not None and not r2.error else None
                t1 = r1.time_ns.scaled(1e-6) if r1 is not None and not r1.error else None
                t2 = r2.time_ns.scaled(1e-6) if r2 is not None and not r2.error else None
                rows.append([label, c(r1, "pause_ms"), c(r2, "pause_ms"),
                             ratio_text(ratio(p1, p2)),
                             cell(t1, r1) if r1 is not None else "–",
                             cell(t2, r2) if r2 is not None else "–"])
            else:
                rows.append([label, c(r1, "ns_per_obj"), c(r2, "ns_per_obj"),
                             ratio_text(ratio(n1, n2)), c(r1, "pause_ms"), c(r2, "pause_ms")])
        if arg == "objects":
            headers = ["live objects", "pause ms, 1 worker", "pause ms, 2 workers",
                       "1 ÷ 2 workers", "Collect() ms, 1 worker", "Collect() ms, 2 workers"]
        else:
            headers = ["ring", "ns/object, 1 worker", "ns/object, 2 workers",
                       "1 ÷ 2 workers (speedup)", "pause ms, 1 worker", "pause ms, 2 workers"]
        return md_table(headers, rows)

    def values_of(self, family, arg):
        return sorted({int(r.args[arg]) for r in self.bench.family(family) if arg in r.args})

    def scenario5(self):
        b = self.bench
        self.w("## 5. Cycle collector", "",
               "Rings of tracked nodes; automatic collection off, each explicit collection "
               "timed. ns/object: the collection's total time over the objects scanned (live "
               "heap) or freed (garbage); pause: the time the world was stopped per "
               "collection; \"1 ÷ 2 workers\": how much faster two marking workers are.", "")
        for fam, what in (("BM_CollectLiveHeap", "Live heap: 1,000,000 nodes, all reachable, "
                                                 "nothing freed"),
                          ("BM_CollectGarbage", "Garbage: 1,000,000 nodes in unreachable "
                                                "rings, all freed")):
            rings = self.values_of(fam, "ring")
            self.w("### %s" % what, "")
            if rings:
                self.w(*self.collector_pair_table(fam, "ring", rings))
            else:
                self.w("Not in this run.")
            self.w("")
        self.w("### Pause against heap size (rings of 10, all live)", "")
        sizes = self.values_of("BM_CollectPause", "objects")
        if sizes:
            self.w(*self.collector_pair_table("BM_CollectPause", "objects", sizes))
        else:
            self.w("Not in this run.")
        self.w("", "### Time to stop the world against mutator threads", "",
               "How long StopTheWorld waits for every attached mutator to reach a safepoint, "
               "microseconds over all stops of a run (median of the runs' percentiles).", "")
        ms = self.values_of("BM_TimeToStop", "mutators")
        if ms:
            rows = []
            for m in ms:
                run = b.get("BM_TimeToStop/mutators:%d" % m)
                rows.append([threads_label(m, self.cores)] +
                            [cell(run.counter(k), run) for k in ("p50_us", "p99_us",
                                                                  "max_us")])
            self.w(*md_table(["mutators", "p50 µs", "p99 µs", "max µs"], rows))
            self.w("", "The stopping thread needs a core too: with as many spinning mutators "
                   "as cores, a stop already waits for the scheduler.")
        else:
            self.w("Not in this run.")
        self.w("")
        self.build_and_drop()
        self.young_full_pauses()

    def build_and_drop(self):
        b = self.bench
        self.w("### Collector on against off: build and drop a list of tracked nodes", "",
               "One thread builds a singly linked list of N tracked nodes and drops it, R times "
               "per iteration, with automatic collections as brc::Make runs them: collector off "
               "(brc::DisableCollector), on with the default configuration (young collections, "
               "full ones when the promotions reach full_ratio of the old heap), and on with "
               "`generational = false` (every automatic collection full: the schedule before "
               "young collections). Milliseconds per iteration (wall clock), collections run "
               "per iteration, and the ratio to the collector off (lower is better).", "")
        sizes = build_and_drop_sizes(b)
        if not sizes:
            self.w("Not in this run.", "")
            return
        rows = []
        for nodes, rounds in sizes:
            suffix = "nodes:%d/rounds:%d" % (nodes, rounds)
            runs = {c: b.get("BM_BuildAndDrop/%s/%s" % (c, suffix))
                    for c in ("off", "generational", "full_only")}

            def ms(run):
                if run is None:
                    return "–"
                return cell(run.time_ns.scaled(1e-6), run) if not run.error else "error"

            def over_off(c):
                run, off = runs[c], runs["off"]
                if run is None or off is None or run.error or off.error:
                    return "–"
                return ratio_text(ratio(run.time_ns, off.time_ns))
            rows.append(["{:,} × {}".format(nodes, rounds), ms(runs["off"]),
                         ms(runs["generational"]), collections_text(runs["generational"]),
                         over_off("generational"), ms(runs["full_only"]),
                         collections_text(runs["full_only"]), over_off("full_only")])
        self.w(*md_table(["nodes × rounds", "off ms", "on ms", "on: collections",
                          "on ÷ off", "full-only ms", "full-only: collections",
                          "full-only ÷ off"], rows))
        self.w("")

    def young_full_pauses(self):
        b = self.bench
        self.w("### Young against full collection pauses", "",
               "An old heap of O live tracked nodes (built once and promoted), then per "
               "iteration a fresh young set of Y nodes in chains of 10 (live chains point into "
               "the old heap; half hang from old nodes, half from the stack; one chain in ten is "
               "a garbage ring), then one brc::CollectYoung() or brc::Collect(). Pause: the "
               "median over the run of the time the world was stopped per collection, µs; "
               "scanned: objects the collection examined.", "")
        olds, youngs = pause_sizes(b, "BM_YoungPause")
        folds, fyoungs = pause_sizes(b, "BM_FullPause")
        olds, youngs = sorted(set(olds) | set(folds)), sorted(set(youngs) | set(fyoungs))
        if not olds:
            self.w("Not in this run.", "")
            return
        rows = []
        for y in youngs:
            for o in olds:
                yr = b.get("BM_YoungPause/old:%d/young:%d" % (o, y))
                fr = b.get("BM_FullPause/old:%d/young:%d" % (o, y))

                def c(run, key):
                    return cell(run.counter(key), run) if run is not None else "–"
                rows.append(["{:,}".format(y), "{:,}".format(o), c(yr, "pause_us"),
                             c(yr, "scanned"), c(fr, "pause_us"), c(fr, "scanned"),
                             ratio_text(ratio(counter_of(fr, "pause_us"),
                                              counter_of(yr, "pause_us")))])
        self.w(*md_table(["young set", "old heap", "young pause µs", "young scanned",
                          "full pause µs", "full scanned", "full ÷ young"], rows))
        big = max(olds)
        if big > 0 and 0 in olds:
            parts = []
            for y in youngs:
                r = ratio(counter_of(b.get("BM_YoungPause/old:%d/young:%d" % (big, y)),
                                     "pause_us"),
                          counter_of(b.get("BM_YoungPause/old:0/young:%d" % y), "pause_us"))
                parts.append("%s for a young set of %s" % (ratio_text(r), "{:,}".format(y)))
            self.w("", "Young pause with %s old objects ÷ young pause with none: %s (the "
                   "floor: ≤ 2×)." % ("{:,}".format(big), "; ".join(parts)))
        self.w("")

    # -- scenario 6 ----------------------------------------------------------------------
    def scenario6(self):
        self.w("## 6. Memory per object", "")
        run = self.bench.get("BM_MemoryPerObject")
        if run is None:
            self.w("Not in this run.", "")
            return
        if run.error:
            self.w("The benchmark reported an error: %s" % run.error, "")
            return
        rows = []
        for k, what in _MEMORY:
            if run.counter(k) is None and k == "tracked_word_B":
                continue  # only in runs from before the block was measured
            rows.append([k, what, cell(run.counter(k))])
        self.w(*md_table(["quantity", "meaning", "bytes"], rows, ["l", "l", "r"]))
        th, sp = run.counter("tracked_heap_B"), run.counter("shared_ptr_B")
        tb, lb = run.counter("tracked_block_B"), run.counter("leaf_block_B")
        if tb is not None and tb.median:
            beside = []
            if lb is not None and lb.median:
                beside.append("a leaf node's %s B" % num(lb.median))
            if sp is not None and sp.median:
                beside.append("make_shared's %s B" % num(sp.median))
            self.w("", "Bytes per tracked node (header + one Ref): a %s-byte block%s."
                   % (num(tb.median), (", beside " + " and ".join(beside)) if beside else ""))
        if th is not None and sp is not None and sp.median:
            self.w("", "A tracked brc node takes %s× the memory of the shared_ptr node "
                   "(tracked_heap_B ÷ shared_ptr_B)." % num(th.median / sp.median))
        if run.label:
            self.w("", "Note from the benchmark: %s" % run.label)
        self.w("")

    # -- scenario 7 ----------------------------------------------------------------------
    def scenario7(self):
        self.w("## 7. brc's collector beside CPython's", "")
        self.cpy_rows = []
        if self.cpython is None:
            self.w("CPython figures not available: %s. Run `python3 bench/cpython_gc.py --out "
                   "build/report/cpython_gc.json` to add them." % self.cpython_why, "")
            return
        cp = self.cpython
        results = {}
        for r in cp.get("results", []) or []:
            if isinstance(r, dict) and "name" in r:
                results[r["name"]] = r
        gil = cp.get("gil")
        ft = cp.get("free_threaded_build")
        desc = "Python %s" % str(cp.get("python", "?")).split()[0]
        if ft is not None:
            desc += ", %s build" % ("free-threaded" if ft else "GIL")
        if gil is not None and ft:
            desc += ", GIL %s at run time" % ("enabled" if gil else "disabled")
        node = cp.get("node") or {}
        self.w("The same shapes under CPython's gc module (%s), measured by "
               "bench/cpython_gc.py: nodes are objects with one slot (%s B, a %s-byte pymalloc "
               "block), a full `gc.collect(2)` is timed; CPython's collector runs on one thread, "
               "and the whole collection is its pause. \"CPython ÷ brc\": how many times longer "
               "CPython takes than brc with one worker (higher: brc faster), and with two."
               % (desc, node.get("sizeof_B", "?"), node.get("block_B", "?")), "")
        if cp.get("quick"):
            self.w("The CPython figures come from a quick run (smaller heaps, 2 repetitions).",
                   "")
        rows = []
        shapes = []
        for ring in sorted({10, 1000} | {int(n.split(":")[1]) for n in results
                                          if n.startswith("CPython_CollectLiveHeap/ring:")
                                          or n.startswith("CPython_CollectGarbage/ring:")}):
            shapes.append(("live heap, ring %d" % ring, "CPython_CollectLiveHeap/ring:%d" % ring,
                           "BM_CollectLiveHeap/ring:%d" % ring, "ns_per_obj", "ns/object",
                           1000000))
        for ring in sorted({10, 1000}):
            shapes.append(("garbage, ring %d" % ring, "CPython_CollectGarbage/ring:%d" % ring,
                           "BM_CollectGarbage/ring:%d" % ring, "ns_per_obj", "ns/object",
                           1000000))
        sizes = sorted({100000, 1000000, 4000000} |
                       {int(n.split(":")[1]) for n in results
                        if n.startswith("CPython_CollectPause/objects:")})
        for n in sizes:
            shapes.append(("pause, %s live" % "{:,}".format(n),
                           "CPython_CollectPause/objects:%d" % n,
                           "BM_CollectPause/objects:%d" % n, "pause_ms", "ms", n))
        for label, cname, bname, key, unit, default_objects in shapes:
            r1 = self.bench.get(bname + "/workers:1")
            r2 = self.bench.get(bname + "/workers:2")
            s1 = r1.counter(key) if r1 is not None and not r1.error else None
            s2 = r2.counter(key) if r2 is not None and not r2.error else None
            c = results.get(cname)
            cs = None
            objects_c = "–"
            if c is not None:
                samples = (c.get("samples") or {}).get(key) or []
                cs = Stat([float(x) for x in samples if isinstance(x, (int, float))])
                if cs.median is None:
                    cs = None
                objects_c = "{:,}".format(int(c.get("objects", default_objects)))
            if s1 is None and s2 is None and cs is None:
                continue
            objects_b = "–"
            if s1 is not None:
                # What brc's collection really covered, where the benchmark says.
                seen = r1.counter({"BM_CollectLiveHeap": "scanned",
                                   "BM_CollectGarbage": "collected"}.get(bname.split("/")[0], ""))
                objects_b = "{:,}".format(int(seen.median) if seen is not None
                                          and seen.median else default_objects)
            r = ratio(cs, s1) if cs is not None and s1 is not None else None
            r2x = ratio(cs, s2) if cs is not None and s2 is not None else None
            rows.append([label, unit, objects_b, objects_c,
                         cell(s1, r1) if r1 is not None else "–",
                         cell(s2, r2) if r2 is not None else "–",
                         cell(cs) if cs is not None else "–", ratio_text(r),
                         ratio_text(r2x)])
            self.cpy_rows.append((label, unit, s1.median if s1 else None,
                                  cs.median if cs else None, r))
        self.w(*md_table(["shape", "unit", "objects (brc)", "objects (CPython)",
                          "brc, 1 worker", "brc, 2 workers", "CPython", "CPython ÷ brc",
                          "CPython ÷ brc, 2 workers"],
                         rows))
        self.w("")

    # -- floors, other rows, errors ------------------------------------------------------
    def floors_section(self):
        quick = self.args.quick
        self.floors = compute_floors(self.bench, self.cpython, getattr(self, "rss", None))
        self.w("## Floors", "")
        if quick:
            self.w("**Quick run: these verdicts are not meaningful** (smoke-run figures); run "
                   "`scripts/bench.sh` without --quick to judge the floors.", "")
        self.w("Judged on medians. \"bound inside the spread\": the bound lies between the "
               "worst and best figure the repetitions allow, so the verdict could flip on "
               "another run. A floor whose benchmarks are missing is \"not measured\".", "")
        rows = [[f.title, f.measured_text(), f.bound_text, verdict_text(f.verdict, quick)]
                for f in self.floors]
        self.w(*md_table(["floor", "measured", "bound", "verdict"], rows,
                         ["l", "l", "l", "l"]))
        failing = [f for f in self.floors if f.verdict is False]
        unmeasured = [f for f in self.floors if f.verdict is None]
        self.w("", "%d of %d floors hold, %d do not, %d not measured."
               % (sum(1 for f in self.floors if f.verdict), len(self.floors), len(failing),
                  len(unmeasured)))
        if self.args.notes:
            self.w("", "### Why a floor does not hold", "")
            try:
                with open(self.args.notes) as f:
                    self.w(f.read().rstrip())
            except OSError as e:
                self.w("(The notes file %s could not be read: %s.)" % (self.args.notes, e))
        self.w("")

    def rest(self):
        b = self.bench
        others = [r for r in b.runs.values() if r.name not in b.used]
        if others:
            self.w("## Other results", "",
                   "Benchmarks in the run that no table above covers.", "")
            rows = []
            for r in others:
                counters = ", ".join("%s=%s" % (k, num(s.median))
                                     for k, s in sorted(r.counters.items())
                                     if s.median is not None)
                rows.append([r.name, cell(r.time_ns, r), "real" if r.uses_real else "cpu",
                             counters or ""])
            self.w(*md_table(["benchmark", "ns/iteration", "time", "counters (medians)"],
                             rows, ["l", "r", "l", "l"]))
            self.w("")
        errors = [r for r in b.runs.values() if r.error or r.failed_repetitions]
        if errors:
            self.w("## Benchmarks that reported errors", "")
            for r in errors:
                if r.error:
                    self.w("- `%s`: %s" % (r.raw_name, r.error))
                else:
                    self.w("- `%s`: %d repetitions failed (left out of its figures)"
                           % (r.raw_name, r.failed_repetitions))
            self.w("")

    def build_all(self):
        self.header()
        self.scenario1()
        self.scenario2_3()
        self.handoff_memory()
        self.scenario4()
        self.scenario5()
        self.scenario6()
        self.scenario7()
        self.floors_section()
        self.rest()
        return "\n".join(self.lines).rstrip() + "\n"

    # -- stdout --------------------------------------------------------------------------
    def summary(self, out_dir):
        p = []
        lo, hi = self.bench.repetitions()
        reps = str(lo) if lo == hi else "%d-%d" % (lo, hi)
        p.append("brc benchmark comparison (medians of %s repetition%s, %s logical cores)"
                 % (reps, "" if reps == "1" else "s", self.cores or "?"))
        if self.args.quick:
            p.append("*** QUICK RUN: smoke-run figures, not measurements; floors not "
                     "meaningful ***")
        p.append("")
        p.append("Reference count pair, one thread   %9s %9s %12s" % ("ns/pair", "x plain",
                                                                      "shared_ptr/"))
        for c, t, rp, rs in self.pairs:
            p.append("  %-32s %9s %9s %12s" % (c, num(t), ratio_text(rp), ratio_text(rs)))
        if self.trees:
            p.append("")
            p.append("Binary trees, one thread (ms/tree) %9s %9s %12s" % ("shared_ptr", "brc",
                                                                         "shared_ptr/"))
            for d, s, f, r in self.trees:
                p.append("  depth %-26d %9s %9s %12s" % (d, num(s), num(f), ratio_text(r)))
        if getattr(self, "cpy_rows", None):
            p.append("")
            p.append("Collector vs CPython gc            %9s %9s %12s" % ("brc 1w", "CPython",
                                                                         "CPython/brc"))
            for label, unit, s, c, r in self.cpy_rows:
                p.append("  %-32s %9s %9s %12s" % ("%s (%s)" % (label, unit), num(s), num(c),
                                                   ratio_text(r)))
        p.append("")
        p.append("Floors%s:" % (" (quick run: not meaningful)" if self.args.quick else ""))
        for f in self.floors:
            v = {True: "holds", False: "DOES NOT HOLD", None: "not measured"}[f.verdict]
            p.append("  %-16s %s: %s" % ("[" + v + "]", f.title, f.measured_text()))
        for why in (self.cpython_why, self.build_why):
            if why:
                p.append("note: " + why)
        p.append("")
        p.append("report: %s, %s" % (os.path.join(out_dir, "report.md"),
                                     os.path.join(out_dir, "throughput.svg")))
        return "\n".join(p)


def main():
    parser = argparse.ArgumentParser(
        description="Writes report.md and throughput.svg from a brc_bench JSON.")
    parser.add_argument("--bench", required=True, help="Google Benchmark JSON output")
    parser.add_argument("--cpython", help="bench/cpython_gc.py JSON output")
    parser.add_argument("--build-info", dest="build_info", help="build_info.json from CMake")
    parser.add_argument("--notes", help="Markdown explaining floors that do not hold")
    parser.add_argument("--out-dir", dest="out_dir", required=True)
    parser.add_argument("--quick", action="store_true", help="the run was a smoke run")
    parser.add_argument("--rss", help="bench/rss/handoff_rss.cc JSON output (hand-off memory)")
    args = parser.parse_args()

    try:
        with open(args.bench) as f:
            doc = json.load(f)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        bench = Bench(doc)
    except FileNotFoundError:
        print("report.py: benchmark JSON %s not found (did brc_bench run with "
              "--benchmark_out=%s --benchmark_out_format=json?)" % (args.bench, args.bench),
              file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print("report.py: benchmark JSON %s could not be read: %s" % (args.bench, e),
              file=sys.stderr)
        return 2
    if not bench.runs:
        print("report.py: benchmark JSON %s holds no benchmark rows" % args.bench,
              file=sys.stderr)
        return 2

    cpython, cpython_why = load_optional(args.cpython, "CPython")
    if cpython is not None and not isinstance(cpython, dict):
        cpython, cpython_why = None, "CPython file %s is not a JSON object" % args.cpython
    build, build_why = load_optional(args.build_info, "build info")
    if build is not None and not isinstance(build, dict):
        build, build_why = None, "build info file %s is not a JSON object" % args.build_info

    report = Report(args, bench, cpython, cpython_why, build, build_why)
    report.rss, report.rss_why = load_optional(args.rss, "hand-off memory")
    if report.rss is not None and not isinstance(report.rss, dict):
        report.rss, report.rss_why = None, "file %s is not a JSON object" % args.rss
    text = report.build_all()
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "report.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out_dir, "throughput.svg"), "w") as f:
        f.write(svg_figure(report.panels, report.cores, args.quick))
    print(report.summary(args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
