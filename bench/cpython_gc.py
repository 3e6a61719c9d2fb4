#!/usr/bin/env python3
"""CPython's cycle collector on the heaps brc's collector benchmarks build.

Scenario 7 of the benchmark report puts brc's collector beside CPython's gc module. This script
builds the same graph shapes as bench/collector_heaps.cc and times gc.collect() on them:

  CPython_CollectLiveHeap/ring:R   1,000,000 nodes in rings of R (10, 1000), every ring kept
                                   alive by its head in a root list. A full collection
                                   (gc.collect(2)) scans them all and frees nothing.
                                   ns_per_obj = collection time / node count.
  CPython_CollectGarbage/ring:R    the same 1,000,000 nodes with the root list dropped, so every
                                   ring is cyclic garbage. gc.collect(2) finds, clears and frees
                                   them. ns_per_obj = collection time / node count.
  CPython_CollectPause/objects:N   N (100K, 1M, 4M) live nodes in rings of 10; pause_ms = the
                                   wall time of one gc.collect(2): CPython stops every thread
                                   (the GIL, or the stop-the-world of free-threaded builds) for
                                   the whole collection, so the whole collection is the pause.

As in brc's benchmarks a repetition is the mean of several collections (live heap: 10 on one
heap; garbage: 5, each on a freshly built heap; pause: 5 on one heap). Automatic collection is off
(gc.disable()) while heaps are built, so only the timed gc.collect() calls collect. Nothing is
frozen (gc.freeze() would move the heap out of the collector's sight and hide the very work brc's
collector does); the collections are full ones, over every tracked object, as brc's Collect() is.
Besides the nodes a full collection also scans the interpreter's own tracked objects (about ten
thousand in this script, reported as "baseline_tracked"); the per-object figure divides by the
node count only, so at 1M nodes it is about 1% pessimistic for CPython.

--quick (a smoke run): 2 repetitions, 100,000 nodes for the live and garbage heaps, and the
100K pause size only.

Output (--out FILE), the schema of bench/report.py and /tmp/notes/bench_contract.md:
  {"python": sys.version, "gil": ..., "repetitions": N,
   "results": [{"name": "CPython_CollectLiveHeap/ring:10",
                "samples": {"ns_per_obj": [...], "pause_ms": [...]}, ...}, ...]}
"""

import argparse
import gc
import json
import os
import platform
import sys
import sysconfig
import time


class Node:
    """One ring node: a single reference to the next node, like brc's `Node`.

    Cost in CPython (64-bit, 3.11): the object is 24 bytes (reference count, type pointer, one
    slot) plus the collector's 16-byte PyGC_Head in front of it, 40 bytes in all
    (sys.getsizeof), which pymalloc places in a 48-byte block (16-byte size classes) -- the
    same 48-byte block a brc Node takes in brc's collector heap. __slots__ keeps the instance
    dict (and the extra tracked object it would be) away.
    """

    __slots__ = ("next",)


def build_rings(objects, ring_size):
    """Returns a list holding one node of each ring; the ring hangs off it."""
    roots = []
    for _ in range(objects // ring_size):
        head = Node()
        tail = head
        for _ in range(ring_size - 1):
            node = Node()
            tail.next = node
            tail = node
        tail.next = head  # closes the ring
        roots.append(head)
    return roots


def timed_collect():
    """One full collection; returns (nanoseconds, objects found unreachable)."""
    start = time.perf_counter_ns()
    unreachable = gc.collect(2)
    return time.perf_counter_ns() - start, unreachable


def settle():
    """Frees what the previous case left behind, untimed."""
    gc.collect(2)
    gc.collect(2)


def warn(msg):
    print("cpython_gc: warning: " + msg, file=sys.stderr)


def live_heap(name, objects, ring_size, repetitions, collections):
    """Times `collections` full collections of a live heap per repetition."""
    settle()
    roots = build_rings(objects, ring_size)
    timed_collect()  # warm-up: moves the new nodes into the oldest generation
    ns_per_obj, pause_ms = [], []
    bad = 0
    for _ in range(repetitions):
        total = 0
        for _ in range(collections):
            ns, unreachable = timed_collect()
            total += ns
            if unreachable != 0:
                bad += 1
        mean = total / collections
        ns_per_obj.append(mean / objects)
        pause_ms.append(mean / 1e6)
    if bad:
        warn("%s: %d collections found unreachable objects on a live heap" % (name, bad))
    del roots
    settle()
    return {"name": name, "objects": objects, "ring": ring_size,
            "collections_per_repetition": collections,
            "samples": {"ns_per_obj": ns_per_obj, "pause_ms": pause_ms}}


def garbage_heap(name, objects, ring_size, repetitions, collections):
    """Per repetition, `collections` times: build the rings, drop them, time the collection."""
    settle()
    ns_per_obj, pause_ms = [], []
    short = 0
    for _ in range(repetitions):
        total = 0
        for _ in range(collections):
            roots = build_rings(objects, ring_size)
            del roots  # every ring is now referenced only from inside itself
            ns, unreachable = timed_collect()
            total += ns
            if unreachable < objects:
                short += 1
        mean = total / collections
        ns_per_obj.append(mean / objects)
        pause_ms.append(mean / 1e6)
    if short:
        warn("%s: %d collections freed fewer than %d objects" % (name, short, objects))
    settle()
    return {"name": name, "objects": objects, "ring": ring_size,
            "collections_per_repetition": collections,
            "samples": {"ns_per_obj": ns_per_obj, "pause_ms": pause_ms}}


def gil_state():
    """(free-threaded build?, GIL active now?) as far as this interpreter tells."""
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    is_enabled = getattr(sys, "_is_gil_enabled", None)  # Python 3.13 and later
    gil_active = bool(is_enabled()) if is_enabled is not None else not free_threaded
    return free_threaded, gil_active


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 repetitions, 100K-node heaps only")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()

    repetitions = 2 if args.quick else 5
    objects = 100_000 if args.quick else 1_000_000
    pause_sizes = [100_000] if args.quick else [100_000, 1_000_000, 4_000_000]

    gc.disable()
    settle()
    baseline = len(gc.get_objects())
    started = time.perf_counter()
    results = []
    for ring in (10, 1000):
        results.append(live_heap("CPython_CollectLiveHeap/ring:%d" % ring,
                                 objects, ring, repetitions, 10))
    for ring in (10, 1000):
        results.append(garbage_heap("CPython_CollectGarbage/ring:%d" % ring,
                                    objects, ring, repetitions, 5))
    for n in pause_sizes:
        results.append(live_heap("CPython_CollectPause/objects:%d" % n,
                                 n, 10, repetitions, 5))
    elapsed = time.perf_counter() - started
    gc.enable()

    free_threaded, gil_active = gil_state()
    node_sizeof = sys.getsizeof(Node())
    doc = {
        "python": sys.version,
        "implementation": platform.python_implementation(),
        "gil": gil_active,
        "free_threaded_build": free_threaded,
        "quick": args.quick,
        "repetitions": repetitions,
        "node": {"slots": list(Node.__slots__), "sizeof_B": node_sizeof,
                 "block_B": (node_sizeof + 15) // 16 * 16},
        "baseline_tracked": baseline,
        "elapsed_s": round(elapsed, 2),
        "results": results,
    }
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print("cpython_gc: %d cases, %.1f s, written to %s" % (len(results), elapsed, args.out))


if __name__ == "__main__":
    main()
