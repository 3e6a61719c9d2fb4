// The weak-reference table: object -> WeakSlot, split into 64 shards by address, each with
// its own lock, so weak references to unrelated objects rarely contend.
//
// Who runs what: any attached thread creates, copies, locks and drops WeakRefs; the thread
// that frees an object with kFlagHasWeakRefs clears its slot.
//
// Invariants:
//  * slot->target is non-null exactly while the object's memory is live: the freeing thread
//    clears it under the shard lock before the memory is released (DestroyAndFree).
//  * Lock() runs try-incref under the same shard lock, so the target cannot be freed under it;
//    try-incref refuses an object whose count already reached zero.
//  * An object gets a slot only after it is in the maybe-weak state (SetMaybeWeak), so its
//    owner can no longer free it without the CAS that try-incref races against.
#include "no_destroy.h"
#include "weak_table.h"

#include <array>
#include <cstdint>
#include <functional>
#include <unordered_map>
#include <memory>
#include <utility>
#include <vector>

#include "brc/refcount.h"
#include "brc/weak_ref.h"
#include "mutex.h"

namespace brc::detail {

struct WeakSlot {
  // All fields guarded by the shard's mutex.
  Object* target = nullptr;
  uint32_t shard = 0;
  uint64_t weak_refs = 0;
  // Callbacks of WeakRefs created with one, by callback id; taken when the target is cleared.
  std::vector<std::pair<uint64_t, std::function<void()>>> callbacks;
  // Written only by the thread that cleared the slot, while its callbacks wait in that thread's
  // list of deferred frees (lib/refcount.cc): the list is linked through the slots, so
  // deferring needs no memory.
  WeakSlot* deferred_next = nullptr;
};

namespace {

constexpr uint32_t kShards = 64;

struct Shard {
  Mutex mu;
  // std::unordered_map, not absl::flat_hash_map: an insertion that cannot allocate must leave
  // the map as it was (the standard's strong guarantee); the flat_hash_map of Debian's Abseil
  // is left corrupt when its rehash fails (found by the allocation-failure sweep).
  std::unordered_map<Object*, WeakSlot*> slots ABSL_GUARDED_BY(mu);
};

std::array<Shard, kShards>& Shards() {
  static NoDestroy<std::array<Shard, kShards>> shards;  // never destroyed
  return shards.get();
}

uint32_t ShardOf(const Object* ob) {
  auto bits = reinterpret_cast<uintptr_t>(ob);
  return static_cast<uint32_t>((bits >> 4) ^ (bits >> 12)) % kShards;
}

}  // namespace

WeakSlot* AcquireWeakSlot(Object* ob) {
  Rc::CheckNotFreed(ob);
  Rc::SetMaybeWeak(ob);
  uint32_t index = ShardOf(ob);
  Shard& shard = Shards()[index];
  MutexLock lock(&shard.mu);
  auto it = shard.slots.find(ob);
  if (it == shard.slots.end()) {
    // Both allocations may throw std::bad_alloc: the slot is made first and inserted only when
    // the map has room, so a failure leaves the table as it was (never a null entry). The
    // object stays maybe-weak, which costs it nothing but the CAS when its owner frees it.
    auto fresh = std::make_unique<WeakSlot>();
    fresh->target = ob;
    fresh->shard = index;
    it = shard.slots.emplace(ob, fresh.get()).first;
    fresh.release();
    // Relaxed: read by the thread that frees the object, which is ordered after this thread's
    // reference by the acq_rel of the decrements.
    Rc::flags(ob).fetch_or(kFlagHasWeakRefs, std::memory_order_relaxed);
  }
  ++it->second->weak_refs;
  return it->second;
}

void RetainWeakSlot(WeakSlot* slot) noexcept {
  Shard& shard = Shards()[slot->shard];
  MutexLock lock(&shard.mu);
  ++slot->weak_refs;
}

void ReleaseWeakSlot(WeakSlot* slot) noexcept {
  Shard& shard = Shards()[slot->shard];
  bool last;
  {
    MutexLock lock(&shard.mu);
    last = --slot->weak_refs == 0;
    if (last && slot->target != nullptr) {
      // The object lives on without weak references; it keeps kFlagHasWeakRefs and the
      // maybe-weak state, which only cost it a lookup when it is freed.
      shard.slots.erase(slot->target);
    }
  }
  if (last) delete slot;
}

Object* LockWeakSlot(WeakSlot* slot) noexcept {
  Shard& shard = Shards()[slot->shard];
  MutexLock lock(&shard.mu);
  Object* target = slot->target;
  if (target == nullptr || !Rc::TryIncRef(target)) return nullptr;
  return target;
}

bool WeakSlotExpired(WeakSlot* slot) noexcept {
  Shard& shard = Shards()[slot->shard];
  MutexLock lock(&shard.mu);
  return slot->target == nullptr;
}

uint64_t AddWeakCallback(WeakSlot* slot, std::function<void()> callback) {
  static std::atomic<uint64_t> next_id{1};
  // Relaxed: ids only need to be unique.
  uint64_t id = next_id.fetch_add(1, std::memory_order_relaxed);
  Shard& shard = Shards()[slot->shard];
  MutexLock lock(&shard.mu);
  if (slot->target != nullptr) slot->callbacks.emplace_back(id, std::move(callback));
  return id;
}

void RemoveWeakCallback(WeakSlot* slot, uint64_t id) noexcept {
  std::function<void()> doomed;  // destroyed outside the lock: it may hold WeakRefs
  Shard& shard = Shards()[slot->shard];
  MutexLock lock(&shard.mu);
  for (auto it = slot->callbacks.begin(); it != slot->callbacks.end(); ++it) {
    if (it->first == id) {
      doomed = std::move(it->second);
      slot->callbacks.erase(it);
      break;
    }
  }
}

WeakSlot* ClearWeakSlot(Object* ob) noexcept {
  Shard& shard = Shards()[ShardOf(ob)];
  MutexLock lock(&shard.mu);
  auto it = shard.slots.find(ob);
  if (it == shard.slots.end()) return nullptr;  // every WeakRef was dropped before the object
  WeakSlot* slot = it->second;
  slot->target = nullptr;
  shard.slots.erase(it);
  if (slot->callbacks.empty()) return nullptr;
  ++slot->weak_refs;  // released once its callbacks have run (RunWeakSlotCallbacks)
  return slot;
}

void ClearWeakSlotOf(Object* ob, WeakCallbacks* callbacks) noexcept {
  WeakSlot* slot = ClearWeakSlot(ob);
  if (slot == nullptr) return;
  BRC_CHECK(callbacks->size() < callbacks->capacity(),
            "the collector's weak-callback list was not reserved before clearing");
  callbacks->push_back(slot);
}

WeakSlot* DeferredNextOf(const WeakSlot* slot) noexcept { return slot->deferred_next; }
void SetDeferredNext(WeakSlot* slot, WeakSlot* next) noexcept { slot->deferred_next = next; }

bool TakeWeakCallback(WeakSlot* slot, std::function<void()>* callback) noexcept {
  Shard& shard = Shards()[slot->shard];
  MutexLock lock(&shard.mu);
  if (slot->callbacks.empty()) return false;
  *callback = std::move(slot->callbacks.front().second);
  slot->callbacks.erase(slot->callbacks.begin());
  return true;
}

}  // namespace brc::detail
