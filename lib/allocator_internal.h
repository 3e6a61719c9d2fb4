// Internal side of brc/allocator.h.
#ifndef BRC_LIB_ALLOCATOR_INTERNAL_H_
#define BRC_LIB_ALLOCATOR_INTERNAL_H_

#include <cstddef>

#include "brc/allocator.h"

namespace brc::detail {

// Returns object storage to the current allocator. No statistics.
void ReleaseObjectStorage(void* mem, std::size_t size, std::size_t align) noexcept;
// The installed allocator, nullptr for the built-in default; and the release through it (for
// storage freed later than its object died: the BRC_DEBUG quarantine).
Allocator* CurrentAllocatorOrNull() noexcept;
void ReleaseObjectStorageWith(Allocator* a, void* mem, std::size_t size,
                              std::size_t align) noexcept;

}  // namespace brc::detail

#endif  // BRC_LIB_ALLOCATOR_INTERNAL_H_
