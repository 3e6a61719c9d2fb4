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

// Called before an object with kFlagHasWeakRefs is freed: clears its slot under the shard lock,
// so every later Lock() returns null. Returns the slot when it has callbacks to run, holding one
// weak reference on it (RunWeakSlotCallbacks drops it), else nullptr. Never allocates.
WeakSlot* ClearWeakSlot(Object* ob) noexcept;
// The same for the collector, with the world stopped: appends the slot to `callbacks`, whose
// capacity the caller reserved beforehand (checked: it never allocates with the world stopped).
void ClearWeakSlotOf(Object* ob, WeakCallbacks* callbacks) noexcept;
// Takes the next callback of a cleared slot (under the shard lock); false when none is left.
bool TakeWeakCallback(WeakSlot* slot, std::function<void()>* callback) noexcept;
// The link of a thread's list of cleared slots whose callbacks wait to run (lib/refcount.cc
// defers them so that a chain of callbacks, each dropping the next object, uses bounded stack).
WeakSlot* DeferredNextOf(const WeakSlot* slot) noexcept;
void SetDeferredNext(WeakSlot* slot, WeakSlot* next) noexcept;

// Runs every callback of a cleared slot, each outside any lock, catching and reporting
// exceptions (brc::SetCollectorErrorHandler), then drops the slot's reference. lib/collector.cc.
struct WeakCallbackRun {
  uint64_t run = 0;
  uint64_t errors = 0;
};
WeakCallbackRun RunWeakSlotCallbacks(WeakSlot* slot) noexcept;
// The same for each slot of the list, which is left empty (its capacity kept).
WeakCallbackRun RunWeakCallbacks(WeakCallbacks& callbacks) noexcept;

}  // namespace brc::detail

#endif  // BRC_LIB_WEAK_TABLE_H_
