"""What one object costs: scenario 1 (the reference count pair on one thread against a plain
counter, std::atomic and a shared_ptr copy; object life, ns per object made and dropped) and
scenario 6 (memory per object: tracked and leaf nodes beside make_shared).

PerObjectSections is a part of the Report (document.py): it writes through self.w and reads
self.bench; scenario1 keeps its rows in self.pairs for the summary on stdout.
"""

from .fmt import cell, md_table, num, ratio, ratio_text


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


class PerObjectSections:
    """Sections 1 and 6 of report.md."""

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
