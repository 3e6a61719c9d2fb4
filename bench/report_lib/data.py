"""Reading the inputs: the benchmark JSON, bench/cpython_gc.py's JSON and handoff_rss.json.

canonical() turns a Google Benchmark name into its contract name (the naming contract shared
with bench/*.cc); Stat is the median and min..max of one quantity over the repetitions; Run is
one benchmark instance over its repetitions; Bench holds every run of one JSON by contract name
and remembers which runs a table has used (the rest go to "Other results"). Below them, the
small queries both the tables and the floors make: a run's counter, a thread family's series,
CPython's samples of one case, the hand-off memory rows.
"""

import json
import math
import re
import statistics


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
# Queries the tables and the floors share.

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


def rss_rows(rss):
    """{(contender, case): row} from handoff_rss.json, or {}."""
    if not isinstance(rss, dict):
        return {}
    out = {}
    for r in rss.get("rows") or []:
        if isinstance(r, dict) and "contender" in r and "case" in r:
            out[(r["contender"], r["case"])] = r
    return out


def thread_series(bench, family, **args):
    """{contender: {threads: run}} for one thread family."""
    series = {}
    for run in bench.family(family, **args):
        if run.contender is None:
            continue
        bench.used.add(run.name)
        series.setdefault(run.contender, {})[run.threads] = run
    return series
