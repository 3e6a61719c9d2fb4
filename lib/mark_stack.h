// The collector's stacks: where marking and the acyclic check keep the references still to
// look at, and the visitor that pushes a Trace's references onto one without a call per
// reference (brc/visitor.h, buffered visitors).
//
// Their memory comes from mmap, never from the configured Allocator: they grow while scratch
// counts hold the owner halves of headers, when no user code may run (brc/detail/gc_word.h).
// A stack that cannot grow drops the reference and says so (out_of_memory); the caller then
// gives up on what it was proving (the collection fails, or the acyclic check counts instead).
// Each marking worker keeps its stack between collections (collector_mark.cc, WorkerStates),
// so that its memory is not faulted in again: the collection lock guards them.
#ifndef BRC_LIB_MARK_STACK_H_
#define BRC_LIB_MARK_STACK_H_

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "brc/detail/config.h"
#include "brc/object.h"
#include "brc/visitor.h"

namespace brc::detail {

// The most entries a mark stack may hold; growths beyond it fail as if mmap had no memory
// (brc::testing::LimitMarkStacksForTesting; 0: no limit). Written with the collection lock.
extern std::size_t g_stack_limit;

// The smallest growth of a stack, in entries.
inline constexpr std::size_t kMinStackEntries = std::size_t{1} << 16;

// A stack of object pointers (memory from mmap; see above).
struct MarkStack {
  Object** data = nullptr;
  std::size_t capacity = 0;  // entries

  // Doubles the capacity (at least 64 Ki entries), keeping the first `used` entries. False
  // when the memory cannot be had.
  bool Grow(std::size_t used) noexcept {
    std::size_t cap = std::max<std::size_t>(kMinStackEntries, 2 * capacity);
    if (BRC_UNLIKELY(g_stack_limit != 0 && cap > g_stack_limit)) return false;
    void* mem = mmap(nullptr, cap * sizeof(Object*), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return false;
    auto* fresh = static_cast<Object**>(mem);
    if (used != 0) std::memcpy(fresh, data, used * sizeof(Object*));
    if (data != nullptr) munmap(data, capacity * sizeof(Object*));
    data = fresh;
    capacity = cap;
    return true;
  }
};

// A visitor whose buffer is a MarkStack: a Trace pushes every reference without a call; the
// loop that pops them decides what each one is. A growth of the stack that finds no memory
// drops the reference and is remembered (a visitor may not throw).
class StackVisitor : public Visitor {
 public:
  explicit StackVisitor(MarkStack* stack) noexcept
      : Visitor(&Fn, stack->data, stack->data + stack->capacity),
        stack_(stack),
        base_(stack->data) {}

  bool empty() const noexcept { return next_ == base_; }
  void Clear() noexcept { next_ = base_; }
  // The entries, bottom to top (valid until the next push).
  Object** bottom() noexcept { return base_; }
  Object** top() noexcept { return next_; }
  Object* Pop() noexcept { return *--next_; }
  void Push(Object* ob) noexcept {
    if (BRC_LIKELY(next_ != end_)) {
      *next_++ = ob;
    } else {
      Fn(this, ob);
    }
  }
  // A reference was dropped for want of memory.
  bool out_of_memory() const noexcept { return out_of_memory_; }

 private:
  // The stack is full: doubles it and pushes r.
  [[gnu::noinline]] static void Fn(Visitor* self, Object* r) noexcept {
    auto* me = static_cast<StackVisitor*>(self);
    std::size_t used = static_cast<std::size_t>(me->next_ - me->base_);
    if (!me->stack_->Grow(used)) {
      me->out_of_memory_ = true;
      return;
    }
    me->base_ = me->stack_->data;
    me->next_ = me->base_ + used;
    me->end_ = me->base_ + me->stack_->capacity;
    *me->next_++ = r;
  }
  MarkStack* stack_;
  Object** base_;
  bool out_of_memory_ = false;
};

}  // namespace brc::detail

#endif  // BRC_LIB_MARK_STACK_H_
