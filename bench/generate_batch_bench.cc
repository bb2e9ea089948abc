// The engine alone, without a server: N greedy requests of 64 tokens run together
// through scheduler/batch_runner.h (one prefill step, then one decode token per request per
// step), for N = 1, 8, 32, 64 on the default model. Separates what batching buys in the
// forward pass from what the gRPC path adds (bench/serving_bench.cc).
#include <chrono>
#include <cstdio>
#include <vector>

#include "engine/loader.h"
#include "scheduler/batch_runner.h"

int main() {
  auto lm = moe::LoadModelDir(moe::DefaultModelDir());
  if (!lm.ok()) {
    std::fprintf(stderr, "generate_batch_bench: %s\n", std::string(lm.status().message()).c_str());
    return 1;
  }
  std::printf("%-9s %16s %12s %16s %8s\n", "requests", "decode tok/s", "ms/step", "overall tok/s",
              "ratio");
  double base = 0;
  for (int n : {1, 8, 32, 64}) {
    std::vector<moe::GenerateRequest> reqs(n);
    for (int i = 0; i < n; ++i) {
      reqs[i].prompt = {5 + i, 6, 7, 8, 9};
      reqs[i].max_tokens = 64;
      reqs[i].ignore_eos = true;
      reqs[i].sampling.temperature = 0.f;
    }
    moe::RunStats st;
    const auto t0 = std::chrono::steady_clock::now();
    auto out = moe::RunToCompletion(*lm, reqs, {}, &st);
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!out.ok()) return 1;
    const double overall = n * 64 / wall;
    if (n == 1) base = overall;
    std::printf("%-9d %16.1f %12.3f %16.1f %7.2fx\n", n, st.decode_tokens / st.decode_seconds,
                1000 * st.decode_seconds / (st.steps - 1), overall, overall / base);
  }
  return 0;
}
