// Helpers shared by the brc_bench sources: the counting discipline every contender follows,
// the counted objects and the baselines' timed loops, and the smoke-run switch.
#ifndef BRC_BENCH_BENCH_UTIL_H_
#define BRC_BENCH_BENCH_UTIL_H_

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "brc/brc.h"

namespace brc_bench {

// The barrier every contender places after each count operation.
inline void Barrier() { benchmark::ClobberMemory(); }

// Returns `p` through an empty asm the compiler cannot see into: it can assume nothing about
// the result, so it must really load and store what the pointer reaches, and the pointee has
// escaped (so Barrier() forces its stores out). A register-only constraint on purpose: with
// benchmark::DoNotOptimize on such a local pointer ("+m,r"), GCC 12.2 at -O3 once dropped the
// store of the pointer to its stack slot and the timed loop dereferenced garbage (reproduced
// with a variant of brc/refcount.h; gone with -fno-ipa-sra or -O2).
template <class T>
inline T* Opaque(T* p) {
  asm volatile("" : "+r"(p));
  return p;
}

// Makes the compiler believe `p` is used (and its pointee read) here.
inline void Use(const void* p) { asm volatile("" : : "r"(p) : "memory"); }

// Objects. The counted payloads are 48 bytes, like brc's: a 24-byte header and three words;
// the plain ones keep their count in the first word.
struct PlainObject {
  int64_t refcount = 1;
  int64_t a = 0, b = 0, c = 0, d = 0, e = 0;
};

struct AtomicObject {
  std::atomic<int64_t> refcount{1};
  int64_t a = 0, b = 0, c = 0, d = 0, e = 0;
};

struct PlainPayload {  // what a shared_ptr's control block points at
  int64_t a = 0, b = 0, c = 0;
};

struct Payload : brc::Object {
  explicit Payload(int64_t v = 0) : a(v) {}
  int64_t a, b = 0, c = 0;
};

static_assert(sizeof(PlainObject) == 48 && sizeof(AtomicObject) == 48 && sizeof(Payload) == 48);

// The baselines' timed loops: one increment and one decrement per iteration, a barrier after
// each (one thread, or several on one counter).
inline void PlainPairs(benchmark::State& state, PlainObject* p) {
  for (auto _ : state) {
    ++p->refcount;
    Barrier();
    --p->refcount;
    Barrier();
  }
}

inline void AtomicPairs(benchmark::State& state, AtomicObject* p) {
  for (auto _ : state) {
    // Relaxed: whoever increments already holds a reference, so nothing needs ordering.
    p->refcount.fetch_add(1, std::memory_order_relaxed);
    Barrier();
    // Acq_rel, as std::shared_ptr: a decrement that might be the last must publish this
    // thread's writes to the object and see everyone else's before it could free it.
    p->refcount.fetch_sub(1, std::memory_order_acq_rel);
    Barrier();
  }
}

// A smoke run: scripts/bench.sh --quick sets BRC_BENCH_QUICK (not empty, not "0"); benchmarks
// then register their smallest sizes only.
inline bool QuickRun() {
  const char* q = std::getenv("BRC_BENCH_QUICK");
  return q != nullptr && q[0] != '\0' && std::strcmp(q, "0") != 0;
}

}  // namespace brc_bench

#endif  // BRC_BENCH_BENCH_UTIL_H_
