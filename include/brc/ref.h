// Ref<T>: the strong handle; Borrowed<T>: the non-owning one; Make<T>: the only way to create.
//
// Conventions (as in CPython's "new" and "borrowed" references):
//  * A Ref<T> owns one reference. Copying increments, destruction decrements, moving costs
//    nothing: a Ref returned from a function or passed by value with std::move does no count
//    traffic at all.
//  * A function that only looks at an object takes Borrowed<T> (or `T*`, or `const Ref<T>&`):
//    the caller guarantees the object outlives the call. Borrowed<T>::ToRef() takes a reference
//    when the callee wants to keep it.
#ifndef BRC_REF_H_
#define BRC_REF_H_

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

#include "brc/allocator.h"
#include "brc/detail/gc_word.h"
#include "brc/detail/type_name.h"
#include "brc/object.h"
#include "brc/refcount.h"
#include "brc/visitor.h"

namespace brc {

template <class T>
class Ref;

namespace detail {

template <class T>
void* DestroyAs(Object* ob) noexcept {
  T* t = static_cast<T*>(ob);
  t->~T();
  return static_cast<void*>(t);
}

// A tracked (container) type: brc/visitor.h shows the two members it declares.
template <class T>
concept Traced = requires(const T& c, T& m, Visitor& v) {
  c.Trace(v);
  m.Clear();
};
template <class T>
concept DeclaresTrace = requires(const T& c, Visitor& v) { c.Trace(v); };
template <class T>
concept DeclaresFinalize = requires(T& m) { m.Finalize(); };

template <class T>
void TraceAs(const Object* ob, Visitor& v) {
  static_cast<const T*>(ob)->Trace(v);
}
template <class T>
void ClearAs(Object* ob) {
  static_cast<T*>(ob)->Clear();
}
template <class T>
void FinalizeAs(Object* ob) {
  static_cast<T*>(ob)->Finalize();
}

template <class T>
constexpr void (*FinalizerOf())(Object*) {
  if constexpr (DeclaresFinalize<T>) {
    return &FinalizeAs<T>;
  } else {
    return nullptr;
  }
}

template <class T>
inline constexpr GcOps kGcOpsFor = {&TraceAs<T>, &ClearAs<T>, FinalizerOf<T>()};

template <class T>
constexpr const GcOps* GcOpsOf() {
  static_assert(Traced<T> || !DeclaresTrace<T>,
                "brc: a type that declares Trace(Visitor&) const must also declare Clear(), "
                "which drops every reference Trace reports");
  static_assert(Traced<T> || !DeclaresFinalize<T>,
                "brc: Finalize() is called by the cycle collector, so only tracked types "
                "(Trace + Clear) may declare it; a leaf type cleans up in its destructor");
  if constexpr (Traced<T>) {
    return &kGcOpsFor<T>;
  } else {
    return nullptr;
  }
}

template <class T>
inline constexpr TypeInfo kTypeInfoFor = {
    TypeNameOf<T>(),
    static_cast<uint32_t>(sizeof(T)),
    static_cast<uint32_t>(alignof(T)),
    &DestroyAs<T>,
    GcOpsOf<T>(),
};

// The collector's heap (lib/gc_heap.cc). AllocateTracked may first run an automatic collection
// (brc/collector.h); it returns where the object goes, at the start of a heap block.
void* AllocateTracked(std::size_t size, std::size_t align);
void FreeTrackedStorage(void* object_start) noexcept;
// The end of a tracked Make: the object is constructed and typed; from now on the collector
// traces it, and it is young (brc/detail/gc_word.h).
void TrackConstructed(Object* ob) noexcept;

// Reports Make<T> on a thread that is not attached.
[[noreturn]] void ReportMakeUnattached(std::string_view type_name) noexcept;
// T's constructor threw: clears the weak-reference slot the constructor may have made for its
// object (a WeakRef to `this`) and runs that slot's callbacks, so that no WeakRef can reach the
// memory once it is reused; reports, as fatal misuse, a constructor that left other references
// to its object behind. `header` is where the Object base was (its words outlive it).
void AbandonConstruction(Object* header, const TypeInfo* type) noexcept;

}  // namespace detail

template <class T>
class Ref {
 public:
  using element_type = T;

  constexpr Ref() noexcept = default;
  constexpr Ref(std::nullptr_t) noexcept {}
  Ref(const Ref& other) noexcept : ptr_(other.ptr_) {
    if (ptr_ != nullptr) IncRef(AsObject(ptr_));
  }
  Ref(Ref&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  Ref(const Ref<U>& other) noexcept : ptr_(other.get()) {
    if (ptr_ != nullptr) IncRef(AsObject(ptr_));
  }
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  Ref(Ref<U>&& other) noexcept : ptr_(other.Release()) {}
  ~Ref() {
    if (ptr_ != nullptr) DecRef(AsObject(ptr_));
  }

  Ref& operator=(const Ref& other) noexcept {
    Ref(other).swap(*this);
    return *this;
  }
  Ref& operator=(Ref&& other) noexcept {
    Ref(std::move(other)).swap(*this);
    return *this;
  }
  Ref& operator=(std::nullptr_t) noexcept {
    Reset();
    return *this;
  }

  // Takes over a reference the caller already owns (from Release(), or counted by hand).
  static Ref Adopt(T* ptr) noexcept {
    Ref r;
    r.ptr_ = ptr;
    return r;
  }
  // Takes a new reference to an object the caller borrows.
  static Ref NewRef(T* ptr) noexcept {
    if (ptr != nullptr) IncRef(AsObject(ptr));
    return Adopt(ptr);
  }

  // Gives up the reference without decrementing; the caller now owns it.
  [[nodiscard]] T* Release() noexcept { return std::exchange(ptr_, nullptr); }
  void Reset() noexcept { Ref().swap(*this); }
  void swap(Ref& other) noexcept { std::swap(ptr_, other.ptr_); }

  T* get() const noexcept { return ptr_; }
  T* operator->() const noexcept { return ptr_; }
  T& operator*() const noexcept { return *ptr_; }
  explicit operator bool() const noexcept { return ptr_ != nullptr; }

  friend bool operator==(const Ref& a, const Ref& b) noexcept { return a.ptr_ == b.ptr_; }
  friend bool operator==(const Ref& a, std::nullptr_t) noexcept { return a.ptr_ == nullptr; }

 private:
  static Object* AsObject(T* p) noexcept {
    if constexpr (std::is_const_v<T>) {
      return const_cast<Object*>(static_cast<const Object*>(p));
    } else {
      return static_cast<Object*>(p);
    }
  }

  T* ptr_ = nullptr;
};

// A non-owning pointer: documents that the callee borrows. Converts from Ref<T> and T*.
template <class T>
class Borrowed {
 public:
  constexpr Borrowed() noexcept = default;
  constexpr Borrowed(std::nullptr_t) noexcept {}
  constexpr Borrowed(T* ptr) noexcept : ptr_(ptr) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  Borrowed(const Ref<U>& ref) noexcept : ptr_(ref.get()) {}

  // A new strong reference, for a callee that keeps the object beyond the call.
  Ref<T> ToRef() const noexcept { return Ref<T>::NewRef(ptr_); }

  T* get() const noexcept { return ptr_; }
  T* operator->() const noexcept { return ptr_; }
  T& operator*() const noexcept { return *ptr_; }
  explicit operator bool() const noexcept { return ptr_ != nullptr; }

 private:
  T* ptr_ = nullptr;
};

// Allocates a T and returns the only reference to it, owned by the calling thread. Leaf types
// come from the configured allocator (brc/allocator.h); tracked types (Trace + Clear, see
// brc/visitor.h) from the collector's heap, and their allocation may first run an automatic
// collection (brc/collector.h). Throws std::bad_alloc when the allocator fails;
// an exception from T's constructor propagates after the memory is returned.
template <class T, class... Args>
Ref<T> Make(Args&&... args) {
  static_assert(std::is_base_of_v<Object, T>, "brc::Make<T>: T must derive from brc::Object");
  static_assert(!std::is_const_v<T>);
  if (BRC_UNLIKELY(detail::tls_tid == detail::kNotAttached)) {
    detail::ReportMakeUnattached(detail::kTypeInfoFor<T>.name);
  }
  constexpr bool kTracked = detail::Traced<T>;
  static_assert(!kTracked || !std::is_polymorphic_v<T>,
                "brc::Make<T>: a tracked type (Trace + Clear) may not have virtual functions: "
                "its vtable pointer would sit before the object header, where the collector "
                "expects the header at the start of each heap block (leaf types may have them)");
  void* mem = kTracked ? detail::AllocateTracked(sizeof(T), alignof(T))
                       : detail::AllocateObject(sizeof(T), alignof(T));
  T* t;
  try {
    t = ::new (mem) T(std::forward<Args>(args)...);
  } catch (...) {
    // Where the Object base was: a fixed offset from the start (non-zero when T has a vtable
    // and Object has none), computed without touching the dead object.
    detail::AbandonConstruction(static_cast<Object*>(static_cast<T*>(mem)),
                                &detail::kTypeInfoFor<T>);
    if constexpr (kTracked) {
      detail::FreeTrackedStorage(mem);
    } else {
      detail::FreeObjectStorage(mem, sizeof(T), alignof(T));
    }
    throw;
  }
  if constexpr (kTracked) {
    // The collector finds the header at the start of each block (README "What you must do":
    // brc::Object first). Folds to nothing when it holds.
    if (BRC_UNLIKELY(static_cast<void*>(static_cast<Object*>(t)) != mem)) {
      detail::ReportMisuseOfType(static_cast<Object*>(t), detail::kTypeInfoFor<T>.name,
                                 "brc::Object must be the first base class of a tracked type");
    }
  }
  detail::Rc::SetType(static_cast<Object*>(t), &detail::kTypeInfoFor<T>);
  // Only now, fully constructed and typed, does the collector see it.
  if constexpr (kTracked) detail::TrackConstructed(static_cast<Object*>(t));
  return Ref<T>::Adopt(t);
}

}  // namespace brc

#endif  // BRC_REF_H_
