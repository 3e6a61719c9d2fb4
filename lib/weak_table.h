// The weak-reference table (see brc/weak_ref.h). Internal to lib/.
#ifndef BRC_LIB_WEAK_TABLE_H_
#define BRC_LIB_WEAK_TABLE_H_

#include <functional>
#include <vector>

#include "brc/object.h"

namespace brc::detail {

using WeakCallbacks = std::vector<std::function<void()>>;

// Called before an object with kFlagHasWeakRefs is freed (or by the collector, world stopped,
// for garbage): clears its slot under the shard lock, so every later Lock() returns null, and
// appends the callbacks of its live WeakRefs to `callbacks`, for the caller to run later.
void ClearWeakSlotOf(Object* ob, WeakCallbacks* callbacks) noexcept;
// Runs the callbacks, catching and reporting exceptions (brc::SetCollectorErrorHandler).
// Returns the number of exceptions caught.
int RunWeakCallbacks(WeakCallbacks& callbacks) noexcept;

}  // namespace brc::detail

#endif  // BRC_LIB_WEAK_TABLE_H_
