"""The report's opening: the machine (CPU model read from /proc/cpuinfo, caches, clock, load
and the front-end probe BM_BranchProbe), the build (build_info.json from CMake) and how to read
the tables (repetitions, medians and spreads, which time is used, oversubscription).

HeaderSection is a part of the Report (document.py): it writes through self.w and reads
self.args, self.bench, self.cores, self.build and self.build_why.
"""

import datetime
import platform
import socket

from .fmt import cell, num


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


class HeaderSection:
    """The "Machine", "Build" and "How to read the tables" sections of report.md."""

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
