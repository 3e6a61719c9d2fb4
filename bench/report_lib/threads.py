"""The thread tables: scenario 2 (counting throughput against thread count: own object, shared
object, false sharing, read-mostly sharing, the merge pass of per-thread counts), scenario 3
(hand-off between threads, and the hand-off's resident memory) and scenario 4 (binary trees, one
thread and one tree per thread). Each thread table is also a panel of throughput.svg.

ThreadSections is a part of the Report (document.py): it writes through self.w, reads
self.bench, self.cores, self.rss and self.rss_why, appends (title, unit, series) to self.panels
and keeps the one-thread tree rows in self.trees for the summary on stdout.
"""

from .data import contender_key, rss_rows, thread_series
from .fmt import cell, md_table, num, ratio, ratio_text, threads_label


# ---------------------------------------------------------------------------------------------
# Thread tables (scenarios 2, 3 and 4) and the data of the figure.

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


_SCALING = [
    ("BM_ScaleOwn", "Each thread counts on its own object", [("brc", "atomic"),
                                                             ("brc", "shared_ptr")]),
    ("BM_ScaleShared", "All threads count on one object (brc: thread 0 owns it)",
     [("brc", "atomic"), ("brc", "shared_ptr")]),
    ("BM_FalseSharing", "Each thread its own object, objects adjacent in memory",
     [("brc", "atomic"), ("brc", "shared_ptr")]),
]


class ThreadSections:
    """Sections 2, 3 (with "Hand-off memory") and 4 of report.md."""

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
