// BRC_DEBUG support: the quarantine of freed objects. Internal to lib/.
#ifndef BRC_LIB_DEBUG_H_
#define BRC_LIB_DEBUG_H_

#include <cstddef>

#include "brc/object.h"

namespace brc::detail {

// Objects kept poisoned after being freed, before their memory goes back to the allocator.
inline constexpr std::size_t kQuarantineCapacity = 1 << 16;

// `ob` has been destroyed; `mem` is its allocation. Poisons the memory, writes a tombstone
// header (type kept, kFlagFreed set, count zero-and-merged) so any later count operation is
// reported as a use after free naming the type, and frees the oldest quarantined object when
// the quarantine is full.
void Quarantine(Object* ob, void* mem, const TypeInfo* type) noexcept;

}  // namespace brc::detail

#endif  // BRC_LIB_DEBUG_H_
