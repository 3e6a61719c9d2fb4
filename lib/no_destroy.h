// NoDestroy<T>: a process-wide object built in static storage on first use and never
// destroyed. Internal to lib/.
//
// Why: brc's globals (the thread registry, the collector's state, the weak table) must outlive
// every thread, including ones still running during static destruction, so they are never
// destroyed; and building them must not allocate, because the first use may come from a
// decrement (which cannot fail) or while memory is exhausted (found by the allocation-failure
// sweep: `static T* t = new T` threw std::bad_alloc out of the first brc::Collect()). The
// function-local static that holds a NoDestroy is initialised once, thread-safely, by the
// compiler's guard.
#ifndef BRC_LIB_NO_DESTROY_H_
#define BRC_LIB_NO_DESTROY_H_

#include <new>
#include <utility>

namespace brc::detail {

template <class T>
class NoDestroy {
 public:
  template <class... Args>
  explicit NoDestroy(Args&&... args) {
    ::new (static_cast<void*>(storage_)) T(std::forward<Args>(args)...);
  }
  NoDestroy(const NoDestroy&) = delete;
  NoDestroy& operator=(const NoDestroy&) = delete;
  // No destructor body: T's destructor never runs.

  T& get() noexcept { return *std::launder(reinterpret_cast<T*>(storage_)); }

 private:
  alignas(T) unsigned char storage_[sizeof(T)];
};

}  // namespace brc::detail

#endif  // BRC_LIB_NO_DESTROY_H_
