"""The report as a whole. Report holds the inputs and the lines of report.md; the sections are
its mixins, one module per group of scenarios (header.py, per_object.py, threads.py,
collector.py). This module writes the floors table, the other results and the errors itself,
joins the sections in the order of build_all(), and makes the summary printed on stdout.
"""

import os

from .collector import CollectorSections
from .floors import compute_floors, verdict_text
from .fmt import cell, md_table, num, ratio_text
from .header import HeaderSection
from .per_object import PerObjectSections
from .threads import ThreadSections


# ---------------------------------------------------------------------------------------------
# The report.

class Report(HeaderSection, PerObjectSections, ThreadSections, CollectorSections):
    """The lines of report.md, the inputs the sections read and what they keep for the summary
    on stdout (pairs, trees, cpy_rows, floors) and for throughput.svg (panels)."""

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
