// brc's internal lock. absl::Mutex normally; std::mutex in ThreadSanitizer builds, because
// Debian's libabsl is not built with TSan and TSan would report every access guarded by an
// absl::Mutex as a race (protocol.md §8). std::mutex goes through pthread, which TSan
// intercepts, so its reports stay meaningful. Both carry Abseil's thread-safety annotations.
#ifndef BRC_LIB_MUTEX_H_
#define BRC_LIB_MUTEX_H_

#include "absl/base/thread_annotations.h"
#include "brc/detail/config.h"

#ifdef BRC_TSAN
#include <mutex>
#else
#include "absl/synchronization/mutex.h"
#endif

namespace brc::detail {

class ABSL_LOCKABLE Mutex {
 public:
#ifdef BRC_TSAN
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
#else
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.Lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.Unlock(); }
#endif

 private:
#ifdef BRC_TSAN
  std::mutex mu_;
#else
  absl::Mutex mu_;
#endif
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

}  // namespace brc::detail

#endif  // BRC_LIB_MUTEX_H_
