// Where the built-in default allocator's 64 KiB heap pages come from: see page_source.cc.
#ifndef BRC_LIB_PAGE_SOURCE_H_
#define BRC_LIB_PAGE_SOURCE_H_

#include <cstddef>

namespace brc::detail {

// A 64 KiB page, 64 KiB aligned, from the page source; nullptr when the source is disabled
// (AddressSanitizer builds) or cannot map memory (the caller falls back to its malloc path).
void* MapHeapPage() noexcept;
// Gives a page back if the page source made it (returns true: its memory is no longer
// resident), else returns false (the page came from the fallback and goes back there).
bool UnmapHeapPage(void* page) noexcept;

// Figures for tests (brc/testing.h): pages handed out and regions mapped now.
std::size_t PageSourcePagesInUse() noexcept;
std::size_t PageSourceRegions() noexcept;
// Makes every later region map fail (true) or not (false), as if mmap found no memory.
void FailPageSourceMapsForTesting(bool fail) noexcept;

}  // namespace brc::detail

#endif  // BRC_LIB_PAGE_SOURCE_H_
