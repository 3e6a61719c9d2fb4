// Object memory comes from a pluggable allocator. Two are built in: glibc malloc and oneTBB's
// scalable allocator (tbbmalloc). The default is the one bench/ measured faster for objects on
// this class of machine (see README); sanitizer builds always default to malloc, which the
// sanitizers intercept.
#ifndef BRC_ALLOCATOR_H_
#define BRC_ALLOCATOR_H_

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"

namespace brc {

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns nullptr on failure (brc::Make then throws std::bad_alloc). Called from any
  // attached thread, concurrently.
  virtual void* Allocate(std::size_t size, std::size_t align) noexcept = 0;
  // `size` and `align` are those given to Allocate. May be called on any thread.
  virtual void Deallocate(void* p, std::size_t size, std::size_t align) noexcept = 0;
  virtual std::string_view Name() const noexcept = 0;
};

Allocator& MallocAllocator() noexcept;
Allocator& ScalableAllocator() noexcept;  // oneTBB tbbmalloc
Allocator& DefaultAllocator() noexcept;

// Installs `allocator` for all later object allocations. Call it at start-up: it fails with
// FailedPrecondition while any object is alive (each object must be freed by the allocator
// that made it), and with InvalidArgument for nullptr. The allocator must outlive its objects.
absl::Status SetAllocator(Allocator* allocator);
Allocator& GetAllocator() noexcept;

namespace detail {
// Allocate from the current allocator; throws std::bad_alloc on failure. Counts allocations.
void* AllocateObject(std::size_t size, std::size_t align);
// Return storage of an object that was never constructed (its constructor threw).
void FreeObjectStorage(void* p, std::size_t size, std::size_t align) noexcept;
}  // namespace detail

}  // namespace brc

#endif  // BRC_ALLOCATOR_H_
