// WeakRef<T>: a reference that does not keep its object alive. Lock() returns a strong Ref, or
// null once the object is dying; it never returns a dangling pointer.
//
// How: the first WeakRef to an object puts it in the maybe-weak state (so its owner can no
// longer free it without an atomic operation) and creates a slot in a sharded weak table.
// Lock() runs try-incref on the target under the slot's shard lock; freeing an object with
// weak references clears its slot under the same lock before the memory is released.
// Any thread may create, copy, lock and drop WeakRefs; the thread must be attached to Lock().
#ifndef BRC_WEAK_REF_H_
#define BRC_WEAK_REF_H_

#include <cstdint>
#include <functional>
#include <utility>

#include "brc/object.h"
#include "brc/ref.h"

namespace brc {
namespace detail {

struct WeakSlot;
// Returns the object's slot (creating it), with one more weak reference on it.
WeakSlot* AcquireWeakSlot(Object* ob);
void RetainWeakSlot(WeakSlot* slot) noexcept;
void ReleaseWeakSlot(WeakSlot* slot) noexcept;
// A new strong reference to the target, or nullptr if it is gone or dying.
Object* LockWeakSlot(WeakSlot* slot) noexcept;
bool WeakSlotExpired(WeakSlot* slot) noexcept;
// Registers a callback run once the target is cleared; returns its id (0: the target was
// already gone and the callback was dropped).
uint64_t AddWeakCallback(WeakSlot* slot, std::function<void()> callback);
void RemoveWeakCallback(WeakSlot* slot, uint64_t id) noexcept;

}  // namespace detail

template <class T>
class WeakRef {
 public:
  WeakRef() noexcept = default;
  explicit WeakRef(const Ref<T>& target)
      : slot_(target ? detail::AcquireWeakSlot(static_cast<Object*>(target.get())) : nullptr) {}
  // With a callback: once the target is cleared (freed by its last decrement, or found to be
  // cyclic garbage by the collector), `callback` runs, if this WeakRef is still alive then.
  // It runs after the target was cleared, so Lock() on any WeakRef to it returns null there.
  // It runs on the thread that freed the target, or on the collecting thread with the world
  // running; an exception it throws is caught and reported (brc::SetCollectorErrorHandler).
  // Copies of this WeakRef share the target but not the callback. Destroying this WeakRef
  // before its callback starts cancels it; destroying it while the callback runs does not
  // wait for it.
  WeakRef(const Ref<T>& target, std::function<void()> callback) : WeakRef(target) {
    if (slot_ != nullptr) callback_id_ = detail::AddWeakCallback(slot_, std::move(callback));
  }
  WeakRef(const WeakRef& other) noexcept : slot_(other.slot_) {
    if (slot_ != nullptr) detail::RetainWeakSlot(slot_);
  }
  WeakRef(WeakRef&& other) noexcept
      : slot_(std::exchange(other.slot_, nullptr)),
        callback_id_(std::exchange(other.callback_id_, 0)) {}
  WeakRef& operator=(WeakRef other) noexcept {
    std::swap(slot_, other.slot_);
    std::swap(callback_id_, other.callback_id_);
    return *this;
  }
  ~WeakRef() {
    if (slot_ == nullptr) return;
    if (callback_id_ != 0) detail::RemoveWeakCallback(slot_, callback_id_);
    detail::ReleaseWeakSlot(slot_);
  }

  // A strong reference to the object, or null if it has been (or is being) freed.
  Ref<T> Lock() const noexcept {
    if (slot_ == nullptr) return nullptr;
    return Ref<T>::Adopt(static_cast<T*>(detail::LockWeakSlot(slot_)));
  }
  // True once the object is gone. A false answer may be stale by the time it is used.
  bool expired() const noexcept { return slot_ == nullptr || detail::WeakSlotExpired(slot_); }

 private:
  detail::WeakSlot* slot_ = nullptr;
  uint64_t callback_id_ = 0;  // this WeakRef's callback in the slot, 0 for none
};

}  // namespace brc

#endif  // BRC_WEAK_REF_H_
