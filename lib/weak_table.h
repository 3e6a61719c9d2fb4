// The weak-reference table (see brc/weak_ref.h). Internal to lib/.
#ifndef BRC_LIB_WEAK_TABLE_H_
#define BRC_LIB_WEAK_TABLE_H_

#include <functional>
#include <vector>

#include "brc/object.h"
#include "internal_alloc.h"

namespace brc::detail {

struct WeakSlot;

// Slots of cleared objects that still have callbacks to run. Each entry holds one weak
// reference on its slot, so the slot outlives the WeakRefs; the callbacks stay in the slot,
// where destroying a WeakRef still removes its own, until each is taken to run.
using WeakCallbacks = InternalVector<WeakSlot*>;

// Called before an object with kFlagHasWeakRefs is freed (or by the collector, world stopped,
// for garbage): clears its slot under the shard lock, so every later Lock() returns null, and
// appends the slot to `callbacks` if it has any.
void ClearWeakSlotOf(Object* ob, WeakCallbacks* callbacks) noexcept;
// Takes the next callback of a cleared slot (under the shard lock); false when none is left.
bool TakeWeakCallback(WeakSlot* slot, std::function<void()>* callback) noexcept;
// Runs every callback of the slots, each outside any lock, catching and reporting exceptions
// (brc::SetCollectorErrorHandler), then drops the slots' references. lib/collector.cc.
struct WeakCallbackRun {
  uint64_t run = 0;
  uint64_t errors = 0;
};
WeakCallbackRun RunWeakCallbacks(WeakCallbacks& callbacks) noexcept;

}  // namespace brc::detail

#endif  // BRC_LIB_WEAK_TABLE_H_
