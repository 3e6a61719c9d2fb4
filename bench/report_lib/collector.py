"""The collector tables: scenario 5 (live heap and garbage with one and two marking workers,
pause against heap size, time to stop the world against mutators, collector on against off
while building and dropping lists, young against full pauses) and scenario 7 (the same shapes
under CPython's gc, from bench/cpython_gc.py's samples).

CollectorSections is a part of the Report (document.py): it writes through self.w, reads
self.bench, self.cores, self.cpython and self.cpython_why, and keeps scenario 7's rows in
self.cpy_rows for the summary on stdout.
"""

from .data import Stat, counter_of
from .floors import build_and_drop_sizes, collections_text, pause_sizes
from .fmt import cell, md_table, ratio, ratio_text, threads_label


class CollectorSections:
    """Sections 5 and 7 of report.md."""

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
