"""The floors: each a bound on measured figures (a ratio to a baseline, to CPython's collector,
or an absolute figure), judged "holds", "DOES NOT HOLD" or "not measured", with a note when the
bound lies inside the spread of the repetitions. compute_floors() lists them in the report's
order: hand-off memory, the reference count pair, binary trees, the collector (on against off,
young pauses), memory per object, the collector against CPython, sharing.
"""

from .data import counter_of, cpython_results, cpython_stat, rss_rows, thread_series
from .fmt import num, ratio, ratio_range, ratio_text


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
    floors.extend(pair_floors(bench))
    floors.extend(tree_floors(bench))
    floors.extend(collector_floors(bench))
    floors.append(memory_floor(bench))
    floors.extend(cpython_floors(bench, cpy))
    floors.extend(sharing_floors(bench))
    return floors


def pair_floors(bench):
    """Yields the floors of the pair on one thread: against a plain counter, shared_ptr and
    std::atomic."""
    f = Floor("Owner pair ≤ 1.3× plain counter", "BM_Pair/brc_owner ÷ BM_Pair/plain ≤ 1.3")
    ratio_floor(f, "", bench.get("BM_Pair/brc_owner"), bench.get("BM_Pair/plain"), 1.3, True,
                "brc_owner", "plain")
    yield f

    f = Floor("Owner pair ≥ 5× faster than shared_ptr copy",
              "BM_Pair/shared_ptr ÷ BM_Pair/brc_owner ≥ 5")
    ratio_floor(f, "", bench.get("BM_Pair/shared_ptr"), bench.get("BM_Pair/brc_owner"), 5.0,
                False, "shared_ptr", "brc_owner")
    yield f

    f = Floor("Non-owner pair ≤ 1.2× std::atomic",
              "BM_Pair/brc_nonowner ÷ BM_Pair/atomic ≤ 1.2")
    ratio_floor(f, "", bench.get("BM_Pair/brc_nonowner"), bench.get("BM_Pair/atomic"), 1.2, True,
                "brc_nonowner", "atomic")
    yield f


def tree_floors(bench):
    """Yields the floors of binary trees on one thread: leaf and tracked nodes against
    shared_ptr, each depth."""
    f = Floor("Binary trees, one thread: brc ≥ 1.5× faster than shared_ptr at every depth",
              "BM_BinaryTrees/shared_ptr ÷ BM_BinaryTrees/brc ≥ 1.5, each depth")
    depths = sorted({int(r.args["depth"]) for r in bench.family("BM_BinaryTrees")
                     if "depth" in r.args and r.contender in ("brc", "shared_ptr")})
    for d in depths:
        speedup_floor(f, "depth %d" % d, bench.get("BM_BinaryTrees/shared_ptr/depth:%d" % d),
                      bench.get("BM_BinaryTrees/brc/depth:%d" % d), None, 1.5)
    yield f

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
    yield f


def collector_floors(bench):
    """Yields the collector on against off (build and drop), then the young pause against
    the old heap."""
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
    yield f

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
    yield f


def memory_floor(bench):
    """The tracked node's block, with the other layouts' sizes beside it."""
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
    return f


def cpython_floors(bench, cpy):
    """Yields the collector against CPython's on the live heap (ns per object, 1 worker), 2
    workers against 1, then the collector against CPython's on garbage."""
    yield vs_cpython_floor(bench, cpy, "CollectLiveHeap", "live heap", _LIVE_VS_CPYTHON,
                           _LIVE_NS)

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
    yield f

    yield vs_cpython_floor(bench, cpy, "CollectGarbage", "garbage", _GARBAGE_VS_CPYTHON,
                           _GARBAGE_NS)


def vs_cpython_floor(bench, cpy, shape, what, bound, fallback_ns):
    """BM_<shape> with 1 worker at least `bound` times faster than CPython_<shape>, ns per
    object, each ring size; without CPython figures the former absolute bound `fallback_ns`
    judges (cpython_floor)."""
    f = Floor("Collector, %s, 1 worker ≥ %s× faster than CPython's gc (each ring size)"
              % (what, num(bound)),
              "CPython_%s ÷ BM_%s/ring:R/workers:1 ns_per_obj ≥ %s "
              "(without CPython: ≤ %s ns)" % (shape, shape, num(bound), num(fallback_ns)))
    for r in ring_sizes(bench, "BM_" + shape):
        cpython_floor(f, "ring %d" % r, bench.get("BM_%s/ring:%d/workers:1" % (shape, r)),
                      cpython_stat(cpy, "CPython_%s/ring:%d" % (shape, r), "ns_per_obj"),
                      "ns_per_obj", bound, fallback_ns)
    return f


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
