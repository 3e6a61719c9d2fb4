// brc::Visitor: what a tracked type's Trace() hands each of its references to.
//
// A container type that can be part of a reference cycle declares two members:
//
//   struct Node : brc::Object {
//     brc::Ref<Node> next;
//     std::vector<brc::Ref<brc::Object>> items;
//     void Trace(brc::Visitor& v) const { v.Visit(next); for (auto& i : items) v.Visit(i); }
//     void Clear() { next = nullptr; items.clear(); }   // drop every reference Trace reports
//   };
//
// Trace must report each strong reference the object holds, once per reference (two Refs to
// the same object are two visits), and do nothing else: it runs while the world is stopped,
// possibly on a marking thread that is not attached, so it must not touch counts, allocate
// objects, take locks or throw. Weak references are not reported.
#ifndef BRC_VISITOR_H_
#define BRC_VISITOR_H_

#include "brc/object.h"

namespace brc {

template <class T>
class Ref;

class Visitor {
 public:
  template <class T>
  void Visit(const Ref<T>& ref) noexcept {
    Visit(static_cast<const Object*>(ref.get()));
  }
  void Visit(const Object* referent) noexcept {
    if (referent == nullptr) return;
    if (next_ != end_) {
      *next_++ = const_cast<Object*>(referent);
    } else {
      fn_(this, const_cast<Object*>(referent));
    }
  }

 protected:
  // Each reference goes to fn, or, for a buffered visitor, into the buffer [next, end) without
  // a call; fn runs only when the buffer is full (it makes room, or takes the reference itself).
  // The collector's visitors derive from this; a buffered one processes the buffer after each
  // Trace, in a loop without indirect calls (the mark stack is such a buffer).
  using Fn = void (*)(Visitor* self, Object* referent) noexcept;
  explicit Visitor(Fn fn) noexcept : fn_(fn) {}
  Visitor(Fn fn, Object** next, Object** end) noexcept : next_(next), end_(end), fn_(fn) {}
  ~Visitor() = default;

  // The free part of the buffer; both null when unbuffered. Written by the thread running the
  // Trace that holds this visitor (and by its fn).
  Object** next_ = nullptr;
  Object** end_ = nullptr;

 private:
  Fn fn_;
};

}  // namespace brc

#endif  // BRC_VISITOR_H_
