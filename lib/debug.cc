// BRC_DEBUG: the quarantine that turns a use after free into a report naming the type.
//
// Any thread that frees an object runs Quarantine; the ring is guarded by one mutex (debug
// builds only, so the cost is acceptable). Objects leave the quarantine oldest first, and
// only then is a use after free no longer detectable: the README states the window.
#include "debug.h"

#include <array>
#include <cstring>
#include <new>

#include "allocator_internal.h"
#include "brc/allocator.h"
#include "brc/refcount.h"
#include "gc_heap.h"
#include "mutex.h"

namespace brc::detail {
namespace {

struct Entry {
  void* mem = nullptr;
  const TypeInfo* type = nullptr;
  Allocator* allocator = nullptr;
};

struct QuarantineRing {
  Mutex mu;
  std::array<Entry, kQuarantineCapacity> ring ABSL_GUARDED_BY(mu);
  std::size_t next ABSL_GUARDED_BY(mu) = 0;
};

// In static storage, never destroyed: the first free of the process must not allocate (it
// runs inside a decrement, which cannot fail), and frees may happen during static destruction.
alignas(QuarantineRing) unsigned char g_ring_storage[sizeof(QuarantineRing)];

QuarantineRing& Ring() {
  static QuarantineRing* q = ::new (g_ring_storage) QuarantineRing();
  return *q;
}

}  // namespace

void Quarantine(Object* ob, void* mem, const TypeInfo* type) noexcept {
  std::memset(mem, 0xDB, type->size);
  // The tombstone. The object is dead and this thread is the only one entitled to its memory,
  // so relaxed stores suffice; readers are by definition racing with the free.
  Rc::SetType(ob, type);
  Rc::SetBiased(ob, kNoOwner, 0);
  Rc::shared(ob).store(kStateMerged, std::memory_order_relaxed);
  Rc::flags(ob).store(kFlagFreed, std::memory_order_relaxed);
  Rc::gc_bits(ob).store(0, std::memory_order_relaxed);  // not tracked: walks skip it
  Rc::gc_epoch(ob).store(0, std::memory_order_relaxed);
  Entry evicted;
  {
    QuarantineRing& q = Ring();
    MutexLock lock(&q.mu);
    evicted = q.ring[q.next];
    q.ring[q.next] = Entry{mem, type, CurrentAllocatorOrNull()};
    q.next = (q.next + 1) % kQuarantineCapacity;
  }
  if (evicted.mem == nullptr) return;
  if (evicted.type->gc != nullptr) {
    FreeTrackedBlock(evicted.mem);  // tracked objects live in the collector's heap
  } else {
    // The allocator that made it (nullptr: the built-in default, whose leaf heap may hold it).
    ReleaseObjectStorageWith(evicted.allocator, evicted.mem, evicted.type->size,
                             evicted.type->align);
  }
}

}  // namespace brc::detail
