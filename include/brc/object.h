// brc::Object: the header every brc object starts with, and the per-type record it points to.
//
// The header is 24 bytes (CPython's free-threaded header is 32), for leaf and tracked objects
// alike: no vtable is required, because the type record carries the destructor, the name used
// in error reports and the layout, and the cycle collector keeps its per-object state in the
// header's spare bits (brc/detail/gc_word.h).
//
//   byte  0       8                     16                    20         24
//         +-------+---------------------+---------------------+----------+
//         | type_ | biased_             | shared_             | flags_ 8 |
//         | ptr   | uint64: local<<32 | | int32: count<<2|st  | gc_bits 8|
//         |       |         owner       |                     | epoch 16 |
//         +-------+---------------------+---------------------+----------+
//
// The owner id and the local count share one 64-bit word (the "biased" word; below, owner =
// its low half, local = its high half), so the owner's fast path is one load and one store of
// it, checked against the thread's id with one comparison, like a plain counter plus a test.
//
// Invariants (protocol.md §1-§2):
//  * true count = local + (shared_ >> 2)  (arithmetic shift; the shared count may be negative
//    while unmerged: the owner took a reference that another thread dropped).
//  * owner == 0  <=>  the object is unowned and its whole count lives in shared_ (state merged),
//    or the object is immortal.
//  * owner == kPerThreadOwner (2^31, brc/detail/thread_local.h): counted per thread (brc/hot.h);
//    the local half is the object's per-thread id, the state maybe-weak, and the true count is
//    shared + every thread's slot for the id.
//  * An owned object has local >= 1: the owner gives up ownership when its count reaches zero.
//  * Immortal: local == kLocalImmortal, or the shared count is in the saturation band
//    [kSharedSaturationMin, 2^29). Both are sticky: no decrement ever leaves them.
#ifndef BRC_OBJECT_H_
#define BRC_OBJECT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "brc/detail/config.h"
#include "brc/detail/thread_local.h"

namespace brc {

class Object;
class Visitor;

namespace detail {
struct Rc;
}  // namespace detail

// What the cycle collector needs from a tracked type (brc/collector.h): a type that declares
// Trace(Visitor&) const and Clear() gets one, built by Make<T>; leaf types have none.
struct GcOps {
  void (*trace)(const Object* ob, Visitor& visitor);
  void (*clear)(Object* ob);
  void (*finalize)(Object* ob);  // nullptr when the type declares no Finalize()
};

// One per object type, built at compile time by brc::Make<T> (see TypeInfoFor<T>).
struct TypeInfo {
  std::string_view name;  // for reports; see brc/detail/type_name.h
  uint32_t size;          // sizeof the most-derived type
  uint32_t align;         // alignof the most-derived type
  // Runs the most-derived destructor and returns the start of the allocation.
  void* (*destroy)(Object* ob) noexcept;
  // Non-null for tracked container types: their instances live in the collector's heap, with
  // the collector's state in their header (brc/detail/gc_word.h).
  const GcOps* gc;
};

// States in the low two bits of the shared word.
enum SharedState : int32_t {
  kStateDefault = 0,    // owner may free with no atomic operation when its count reaches 0
  kStateMaybeWeak = 1,  // may be reached by try-incref (a WeakRef exists): owner must CAS
  kStateQueued = 2,     // queued to its owner for a merge; the queue entry holds one reference
  kStateMerged = 3,     // unowned: the whole count is in the shared word
};

inline constexpr int32_t kSharedShift = 2;
inline constexpr int32_t kStateMask = 3;
inline constexpr int32_t kSharedOne = 1 << kSharedShift;
// The shared count has 30 bits: [-2^29, 2^29). Counts at or above kSharedSaturationMin are
// saturated (immortal); whoever sees one re-stores kSharedSaturated, the middle of the band, so
// 2^27 racing increments would be needed to leave it. A non-owner decrement that would go
// below kSharedNegativeLimit saturates the object too (leak, never wrap).
inline constexpr int32_t kSharedSaturationMin = 1 << 28;
inline constexpr int32_t kSharedSaturated = 3 << 27;
inline constexpr int32_t kSharedNegativeLimit = -(1 << 28);
// The local count saturates at its maximum, which marks the object immortal.
inline constexpr uint32_t kLocalImmortal = UINT32_MAX;

namespace detail {
// The biased word: owner id in the low 32 bits, local count in the high 32 bits.
inline constexpr int kLocalShift = 32;
inline constexpr uint64_t kLocalOne = uint64_t{1} << kLocalShift;
constexpr uint32_t OwnerOf(uint64_t biased) noexcept { return static_cast<uint32_t>(biased); }
constexpr uint32_t LocalOf(uint64_t biased) noexcept {
  return static_cast<uint32_t>(biased >> kLocalShift);
}
constexpr uint64_t Biased(uint32_t owner, uint32_t local) noexcept {
  return (uint64_t{local} << kLocalShift) | owner;
}
// The shared word's halves: its count (arithmetic shift: it may be negative) and its state.
constexpr int32_t CountOf(int32_t word) noexcept { return word >> kSharedShift; }
constexpr int32_t StateOf(int32_t word) noexcept { return word & kStateMask; }
constexpr int32_t Word(int32_t count, int32_t state) noexcept {
  return static_cast<int32_t>(static_cast<uint32_t>(count) << kSharedShift) | state;
}
constexpr bool InSaturationBand(int32_t count) noexcept { return count >= kSharedSaturationMin; }
}  // namespace detail

// Bits of Object::flags_ (the collector's own state is in gc_bits_ and gc_epoch_: see
// brc/detail/gc_word.h).
enum ObjectFlag : uint8_t {
  kFlagHasWeakRefs = 1u << 0,  // a weak slot exists in the weak table (brc/weak_ref.h)
  kFlagFreed = 1u << 1,        // BRC_DEBUG: the object was freed and sits in the quarantine
  // (bit 2 is free)
  // Its true count reached zero while a merge-queue entry (or the collector's final drop)
  // still holds the last counted reference: it is dead and only waits to be freed, so
  // try-incref (WeakRef::Lock) refuses it. Set before the count is published as merged.
  kFlagDead = 1u << 3,
};

// The base of every brc object. Derive from it and create instances with brc::Make<T>; never
// construct one on the stack or with `new`. Destruction goes through the type record, so the
// destructor need not be virtual, and a Ref<Base> holding a Derived destroys a Derived.
class Object {
 public:
  Object(const Object&) = delete;
  Object& operator=(const Object&) = delete;

  // The type record, or nullptr while the object is still under construction.
  const TypeInfo* type_info() const noexcept { return type_; }
  std::string_view type_name() const noexcept {
    return type_ != nullptr ? type_->name : std::string_view("<under construction>");
  }

 protected:
  // The creating thread owns the object and holds its first reference (adopted by Make, which
  // has checked that the thread is attached). Nothing is shared yet, so relaxed is enough.
  Object() noexcept
      : biased_(detail::Biased(detail::tls_tid, 1)),
        shared_(0),
        flags_(0),
        gc_bits_(0),
        gc_epoch_(0) {}
  ~Object() = default;

 private:
  friend struct detail::Rc;

  // Written once by brc::Make before the object is published.
  const TypeInfo* type_ = nullptr;
  // Owner thread id (low half, 0 when unowned) and local count (high half). Written only by the
  // owner (its counting, and giving up ownership), by a thread merging on behalf of a dead or
  // blocked owner while holding that owner's queue lock, or with the world stopped: never by two
  // threads at once, so relaxed loads and whole-word stores (the collector's parallel marking
  // workers add to the low half atomically among themselves). Read by every thread (relaxed: a
  // stale owner can only send a thread to the atomic path, and only the owner relies on the
  // local half). While the world is stopped for a collection, the low half of a tracked object
  // the collection examines holds the collector's scratch count instead of the owner, restored
  // before the world restarts (brc/detail/gc_word.h).
  std::atomic<uint64_t> biased_;
  // Shared word: (count << 2) | state. Any thread, atomic read-modify-write.
  std::atomic<int32_t> shared_;
  // ObjectFlag bits. Any thread, atomic fetch_or.
  std::atomic<uint8_t> flags_;
  // The cycle collector's bits and mark epoch, in tracked objects (brc/detail/gc_word.h says who
  // writes them: never two threads at once, so relaxed loads and stores; a word apart from
  // flags_, whose fetch_or from any thread would otherwise race with those stores).
  std::atomic<uint8_t> gc_bits_;
  std::atomic<uint16_t> gc_epoch_;
};

static_assert(sizeof(void*) == 8, "brc's header layout assumes a 64-bit target");
static_assert(sizeof(Object) == 24, "the object header must stay at 24 bytes");
static_assert(alignof(Object) == 8);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<uint16_t>::is_always_lock_free);
static_assert(std::atomic<uint8_t>::is_always_lock_free);
static_assert(std::atomic<int32_t>::is_always_lock_free);
static_assert(kSharedSaturated > kSharedSaturationMin && kSharedSaturated < (1 << 29));

}  // namespace brc

#endif  // BRC_OBJECT_H_
