// Links brc::brc from an install prefix: creates an object, shares it with a second thread that
// drops the last reference, and checks it was freed exactly once; then builds a two-node cycle
// of a tracked type and checks that a collection frees it.
#include <atomic>
#include <cstdio>
#include <thread>

#include "brc/brc.h"

struct Greeting : brc::Object {
  explicit Greeting(std::atomic<int>* d) : destroyed(d) {}
  ~Greeting() { destroyed->fetch_add(1); }
  std::atomic<int>* destroyed;
};

// The README's tracked-type example.
struct Node : brc::Object {
  explicit Node(std::atomic<int>* d) : destroyed(d) {}
  ~Node() { destroyed->fetch_add(1); }
  std::atomic<int>* destroyed;
  brc::Ref<Node> next;
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  void Finalize() {}
};

int main() {
  std::atomic<int> destroyed{0};
  {
    brc::ThreadScope attach;
    auto g = brc::Make<Greeting>(&destroyed);
    std::thread other([r = std::move(g)]() mutable {
      brc::ThreadScope attach_other;
      r.Reset();  // last reference, dropped by a non-owner: queued to the owner
    });
    other.join();
    brc::Safepoint();  // the owner merges and frees it
  }
  if (destroyed.load() != 1) {
    std::fprintf(stderr, "consumer: expected 1 destruction, saw %d\n", destroyed.load());
    return 1;
  }
  std::atomic<int> nodes_destroyed{0};
  {
    brc::ThreadScope attach;
    auto a = brc::Make<Node>(&nodes_destroyed);
    auto b = brc::Make<Node>(&nodes_destroyed);
    a->next = b;
    b->next = a;
  }
  {
    brc::ThreadScope attach;
    absl::StatusOr<brc::CollectResult> r = brc::Collect();
    if (!r.ok() || r->collected != 2 || nodes_destroyed.load() != 2) {
      std::fprintf(stderr, "consumer: the collector did not free the cycle\n");
      return 1;
    }
  }
  std::printf("consumer: ok (brc::brc found with find_package)\n");
  return 0;
}
