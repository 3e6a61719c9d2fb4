// Event counters, one list (BRC_STAT_FIELDS) from which the per-thread counters, the summed
// snapshot, the printer and the tests are all generated, so they cannot drift apart.
//
// Each attached thread counts into its own thread-local block with relaxed load+store (no
// read-modify-write: only that thread writes it). GetStats() sums every live thread's block and
// the blocks of threads that have exited.
#ifndef BRC_STATS_H_
#define BRC_STATS_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "brc/detail/config.h"

// X(name, description). The first four count every single operation, so they are compiled in
// only with BRC_OP_STATS (CMake option, default OFF, like CPython's Py_STATS): on the owner's
// fast path a counter costs as much as the count itself. They read 0 otherwise. The other
// counters mark rare events and are always on unless BRC_NO_STATS.
#define BRC_STAT_FIELDS(X)                                                              \
  X(local_increfs, "owner increments (no atomic instruction) [BRC_OP_STATS]")         \
  X(local_decrefs, "owner decrements (no atomic instruction) [BRC_OP_STATS]")         \
  X(shared_increfs, "non-owner increments (atomic add) [BRC_OP_STATS]")               \
  X(shared_decrefs, "non-owner decrements (CAS) [BRC_OP_STATS]")                      \
  X(queued, "objects queued to their owner for a merge")                              \
  X(merges, "merges of the two halves (owner at zero, queue drain, on behalf)")       \
  X(merges_for_owner, "merges done on behalf of an exited or blocked owner")          \
  X(queue_push_failures, "queue pushes that found no memory (merged, world stopped)")  \
  X(handoff_pushes, "hand-off buffers pushed in one locked step (queued, or merged on a blocked or exited owner's behalf)") \
  X(saturated, "objects made immortal because a count would have overflowed")         \
  X(made_immortal, "objects made immortal by MakeImmortal")                           \
  X(per_thread_switched, "objects switched to per-thread counting")                    \
  X(per_thread_detected, "of those, switched by the contention detector")              \
  X(merge_passes, "merge passes over per-thread counts (collections' included)")       \
  X(per_thread_freed, "per-thread-counted objects freed by a merge pass")              \
  X(allocations, "objects allocated")                                                  \
  X(frees, "objects freed")

namespace brc {

// A snapshot: plain numbers, safe to copy and compare.
struct Stats {
#define BRC_STAT_MEMBER_(name, help) uint64_t name = 0;
  BRC_STAT_FIELDS(BRC_STAT_MEMBER_)
#undef BRC_STAT_MEMBER_

  // Objects allocated and not yet freed.
  int64_t live_objects() const { return static_cast<int64_t>(allocations - frees); }
};

// Sum over every thread, live or exited. Takes the thread registry's lock.
Stats GetStats();
// The calling thread's counters only.
Stats GetThreadStats();
// One "name value  # description" line per field.
std::string FormatStats(const Stats& stats);

namespace detail {

// Written only by the thread that owns the block; read (relaxed) by GetStats under the registry
// lock. Relaxed is enough: a snapshot is a diagnostic, not a synchronisation point.
struct StatCounters {
#define BRC_STAT_COUNTER_(name, help) std::atomic<uint64_t> name{0};
  BRC_STAT_FIELDS(BRC_STAT_COUNTER_)
#undef BRC_STAT_COUNTER_
};

// initial-exec: one %fs-relative access even when brc is linked into a shared object.
inline constinit thread_local StatCounters tls_stats __attribute__((tls_model("initial-exec")));

}  // namespace detail

// Whether the per-operation counters (local/shared increfs/decrefs) are compiled in.
#ifdef BRC_OP_STATS
inline constexpr bool kOpStatsEnabled = true;
#else
inline constexpr bool kOpStatsEnabled = false;
#endif

namespace detail {

}  // namespace detail
}  // namespace brc

#ifdef BRC_NO_STATS
#define BRC_STAT_ADD(field, n) \
  do {                         \
  } while (0)
#else
// Only the owning thread writes its block, so load+store (not fetch_add) is race-free.
#define BRC_STAT_ADD(field, n)                                                       \
  ::brc::detail::tls_stats.field.store(                                              \
      ::brc::detail::tls_stats.field.load(std::memory_order_relaxed) + (n),          \
      std::memory_order_relaxed)
#endif
#define BRC_STAT_INC(field) BRC_STAT_ADD(field, 1)
// `allocations` and `frees` are counted even with BRC_NO_STATS: brc::SetAllocator relies on
// them to know that no object is alive.
#define BRC_STAT_ALWAYS_INC(field)                                                   \
  ::brc::detail::tls_stats.field.store(                                              \
      ::brc::detail::tls_stats.field.load(std::memory_order_relaxed) + 1,            \
      std::memory_order_relaxed)
#if defined(BRC_OP_STATS) && !defined(BRC_NO_STATS)
#define BRC_OP_STAT_INC(field) BRC_STAT_ADD(field, 1)
#else
#define BRC_OP_STAT_INC(field) \
  do {                         \
  } while (0)
#endif

#endif  // BRC_STATS_H_
