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

The work is done in bench/report_lib/, one module per mechanism (its __init__.py lists them);
this file parses the command line, reads the inputs and writes the files.

Exit status: 0 when the report was written (whether or not the floors hold), 2 when the benchmark
JSON is missing or cannot be read, 1 on a bad command line. Standard library only.
"""

import argparse
import json
import os
import sys

from report_lib.data import Bench, load_optional
from report_lib.document import Report
from report_lib.svg import svg_figure


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
