"""The code of bench/report.py, one module per mechanism.

  data.py        reading the inputs: Stat, Run, Bench (the benchmark JSON), CPython's samples,
                 the hand-off memory rows, and the queries the tables and the floors share
  fmt.py         figures, medians with their spread, ratios and Markdown tables as text
  header.py      the machine and build probes and the report's opening sections
  per_object.py  what one object costs: scenario 1 (the pair, object life), 6 (memory)
  threads.py     the thread tables: scenarios 2, 3 (and hand-off memory) and 4
  collector.py   the collector tables: scenario 5 and 7 (beside CPython)
  floors.py      the floors: each a bound on measured figures, judged holds / does not hold
  svg.py         throughput.svg, throughput against thread count
  document.py    Report: the sections in order, the floors table, the summary on stdout

Layers point one way: data and fmt know nothing of the others; the floors read data; the
sections read data, fmt and floors; document.py joins the sections; bench/report.py parses the
command line and writes the files. Standard library only.
"""
