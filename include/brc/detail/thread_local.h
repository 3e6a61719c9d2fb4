// The two thread-locals the inline fast paths read. Both are constant-initialised PODs, so an
// access needs no TLS wrapper call or guard variable, and the initial-exec model makes it one
// %fs-relative load in executables and shared objects alike (the default model would call
// __tls_get_addr on every count operation in -fPIC code).
#ifndef BRC_DETAIL_THREAD_LOCAL_H_
#define BRC_DETAIL_THREAD_LOCAL_H_

#include <atomic>
#include <cstdint>

namespace brc::detail {

// Owner id of an object nobody owns (merged, or immortal).
inline constexpr uint32_t kNoOwner = 0;
// tls_tid of a thread that is not attached, or is inside a BlockingScope. It never equals an
// object's owner id, so such a thread always takes the slow path, which reports the misuse.
inline constexpr uint32_t kNotAttached = UINT32_MAX;

// Owner-half marker of an object counted per thread (brc/hot.h, lib/per_thread.cc): never a
// thread id (ids stay below 2^20) nor kNotAttached. Its local half holds the object's
// per-thread-count id, an index into every thread's slot array below.
inline constexpr uint32_t kPerThreadOwner = uint32_t{1} << 31;

// This thread's counts of per-thread-counted objects, indexed by their id: slots[id] is this
// thread's share of the object's count (negative when it dropped references others took).
// Written by this thread (its count operations, and growing the array), and by the thread
// holding the world stopped while this one is parked or blocked (a merge pass folds the slots
// into the objects' shared words and zeroes them). `size` is the number of slots.
struct PerThreadSlots {
  int32_t* slots;
  uint32_t size;
};

// This thread's id while attached (1, 2, ...), else kNotAttached. Written only by this thread.
inline constinit thread_local uint32_t tls_tid
    __attribute__((tls_model("initial-exec"))) = kNotAttached;
inline constinit thread_local PerThreadSlots tls_slots
    __attribute__((tls_model("initial-exec"))) = {nullptr, 0};
// This thread's "work pending at the next safepoint" word while attached, else nullptr. The
// word itself is written by other threads (see lib/thread_state.h).
inline constinit thread_local std::atomic<uint32_t>* tls_pending
    __attribute__((tls_model("initial-exec"))) = nullptr;

}  // namespace brc::detail

#endif  // BRC_DETAIL_THREAD_LOCAL_H_
