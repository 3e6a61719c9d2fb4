// The weak-reference table (see brc/weak_ref.h). Internal to lib/.
#ifndef BRC_LIB_WEAK_TABLE_H_
#define BRC_LIB_WEAK_TABLE_H_

#include "brc/object.h"

namespace brc::detail {

// Called when an object with kFlagHasWeakRefs is freed, before its memory is released: clears
// its slot under the shard lock, so every later Lock() returns null.
void ClearWeakSlotOf(Object* ob) noexcept;

}  // namespace brc::detail

#endif  // BRC_LIB_WEAK_TABLE_H_
