// Helpers shared by the brc_bench sources: the counting discipline every contender follows,
// and the smoke-run switch.
#ifndef BRC_BENCH_BENCH_UTIL_H_
#define BRC_BENCH_BENCH_UTIL_H_

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>

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

// A smoke run: scripts/bench.sh --quick sets BRC_BENCH_QUICK (not empty, not "0"); benchmarks
// then register their smallest sizes only.
inline bool QuickRun() {
  const char* q = std::getenv("BRC_BENCH_QUICK");
  return q != nullptr && q[0] != '\0' && std::strcmp(q, "0") != 0;
}

}  // namespace brc_bench

#endif  // BRC_BENCH_BENCH_UTIL_H_
