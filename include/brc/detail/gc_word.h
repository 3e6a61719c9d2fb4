// The collector word: 8 bytes in front of the header of every tracked object.
//
//   byte  -8        -4        0                        24
//         +---------+---------+------------------------+---------
//         | refs    | bits    | brc::Object header     | fields of T ...
//         +---------+---------+------------------------+---------
//
// With the 24-byte header that makes 32 bytes of per-object space for a tracked object, the
// same as CPython (3.11's GC links + header, or the free-threaded build's header). Nothing else
// is kept per object: the collector finds tracked objects by walking the pages of its heap
// (lib/gc_heap.h), not through a list.
#ifndef BRC_DETAIL_GC_WORD_H_
#define BRC_DETAIL_GC_WORD_H_

#include <atomic>
#include <cstdint>

#include "brc/object.h"

namespace brc::detail {

// The low 8 bits of GcWord::bits are flags; the high 24 bits hold the number of the last
// collection that marked the object reachable (0: never), so marks need no clearing pass.
enum GcBit : uint32_t {
  kGcAllocated = 1u << 0,  // the heap block holds an object (set at allocation, 0 when free)
  kGcTracked = 1u << 1,    // constructed and not yet being destroyed: the collector traces it
  kGcYoung = 1u << 2,      // allocated since the last collection (set at allocation, cleared by
                           // the collection that promotes it; lib/gc_heap.h, "Young pages")
  kGcGarbage = 1u << 3,    // in the running collection's garbage set
  kGcFinalized = 1u << 4,  // Finalize() has run; sticky, so it never runs twice
  kGcFrozen = 1u << 5,     // excluded from collections by brc::Freeze()
};
inline constexpr uint32_t kGcFlagMask = 0xff;
inline constexpr int kGcEpochShift = 8;
inline constexpr uint32_t kGcEpochLimit = 1u << 24;  // epochs run 1 .. kGcEpochLimit - 1

struct GcWord {
  // Scratch count of references from other tracked objects. 0 outside a collection. Written
  // only by the collector: while the world is stopped (by its marking workers, atomically when
  // there are several), and on its own garbage set after the world restarted.
  std::atomic<uint32_t> refs;
  // GcBit flags. kGcAllocated/kGcTracked are written by the allocating thread (Make) and the
  // freeing thread (Dealloc); the other bits by the collector while the world is stopped. The
  // two never overlap in time: a thread in Make or Dealloc is not parked, so no stop is in
  // progress, and the stop's handshake orders them. Hence relaxed loads and stores, except the
  // parallel marking workers' fetch_or among themselves.
  std::atomic<uint32_t> bits;

  void Track() noexcept {
    bits.store(bits.load(std::memory_order_relaxed) | kGcTracked, std::memory_order_relaxed);
  }
  bool Has(uint32_t bit) const noexcept {
    return (bits.load(std::memory_order_relaxed) & bit) != 0;
  }
  void Set(uint32_t bit) noexcept {
    bits.store(bits.load(std::memory_order_relaxed) | bit, std::memory_order_relaxed);
  }
  void Unset(uint32_t bit) noexcept {
    bits.store(bits.load(std::memory_order_relaxed) & ~bit, std::memory_order_relaxed);
  }
};

static_assert(sizeof(GcWord) == 8);

inline GcWord* GcWordOf(const Object* ob) noexcept {
  return reinterpret_cast<GcWord*>(
      const_cast<char*>(reinterpret_cast<const char*>(ob)) - sizeof(GcWord));
}

}  // namespace brc::detail

#endif  // BRC_DETAIL_GC_WORD_H_
