// Internal side of brc/allocator.h.
#ifndef BRC_LIB_ALLOCATOR_INTERNAL_H_
#define BRC_LIB_ALLOCATOR_INTERNAL_H_

#include <cstddef>

#include "brc/allocator.h"

namespace brc::detail {

// Returns object storage to the current allocator. No statistics.
void ReleaseObjectStorage(void* mem, std::size_t size, std::size_t align) noexcept;

}  // namespace brc::detail

#endif  // BRC_LIB_ALLOCATOR_INTERNAL_H_
