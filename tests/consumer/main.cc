// Links brc::brc from an install prefix: creates an object, shares it with a second thread that
// drops the last reference, and checks it was freed exactly once.
#include <atomic>
#include <cstdio>
#include <thread>

#include "brc/brc.h"

struct Greeting : brc::Object {
  explicit Greeting(std::atomic<int>* d) : destroyed(d) {}
  ~Greeting() { destroyed->fetch_add(1); }
  std::atomic<int>* destroyed;
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
  std::printf("consumer: ok (brc::brc found with find_package)\n");
  return 0;
}
