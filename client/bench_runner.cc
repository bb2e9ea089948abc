#include "client/bench_runner.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <limits>
#include <mutex>
#include <thread>
#include <utility>

#include "client/arrivals.h"

namespace moe::client {
namespace {

// The records of one phase and the counters the progress line shows.
struct Collector {
  std::mutex mu;
  std::vector<RequestRecord> records;
  std::atomic<int> done{0};
  std::atomic<int> errors{0};
  std::atomic<int> in_flight{0};

  void Add(RequestRecord record) {
    if (!record.ok()) errors.fetch_add(1);
    {
      std::lock_guard<std::mutex> lock(mu);
      records.push_back(std::move(record));
    }
    done.fetch_add(1);
  }
};

struct Phase {
  Transport* transport;
  const std::vector<PromptSpec>* prompts;
  const GenerateOptions* options;
  Clock::time_point origin;  // of the whole run: record times are relative to it
  int first_index = 0;       // record index of the phase's first request
  bool warmup = false;
  Collector* collector;

  void Send(int i) const {
    collector->in_flight.fetch_add(1);
    const PromptSpec& prompt = (*prompts)[(first_index + i) % prompts->size()];
    RequestRecord record = transport->Run(prompt, *options, origin);
    collector->in_flight.fetch_sub(1);
    record.index = first_index + i;
    record.warmup = warmup;
    collector->Add(std::move(record));
  }
};

// `count` > 0 requests, or (count == 0) requests issued until `duration` has passed.
void RunClosedLoop(const Phase& phase, int concurrency, int count, double duration) {
  const Clock::time_point stop = count > 0
                                     ? Clock::time_point::max()
                                     : Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                          std::chrono::duration<double>(duration));
  std::atomic<int> next{0};
  std::vector<std::thread> workers;
  const int n = count > 0 ? std::min(concurrency, count) : concurrency;
  for (int w = 0; w < n; ++w) {
    workers.emplace_back([&] {
      while (true) {
        if (count == 0 && Clock::now() >= stop) return;
        const int i = next.fetch_add(1);
        if (count > 0 && i >= count) return;
        phase.Send(i);
      }
    });
  }
  for (std::thread& t : workers) t.join();
}

// Requests issued at the schedule's arrival times by a pool of worker threads that grows
// on demand up to `max_in_flight`; when every worker is busy, due requests wait in order.
void RunOpenLoop(const Phase& phase, const BenchConfig& config) {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<int> jobs;
  int waiting_workers = 0;
  bool closing = false;
  std::vector<std::thread> workers;
  auto worker = [&] {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      ++waiting_workers;
      cv.wait(lock, [&] { return !jobs.empty() || closing; });
      --waiting_workers;
      if (jobs.empty()) return;
      const int i = jobs.front();
      jobs.pop_front();
      lock.unlock();
      phase.Send(i);
      lock.lock();
    }
  };
  ArrivalSchedule schedule(*config.request_rate, config.burstiness, config.seed);
  const Clock::time_point start = Clock::now();
  for (int i = 0;; ++i) {
    if (config.num_requests > 0 && i >= config.num_requests) break;
    const double due = schedule.Next();
    if (config.num_requests == 0 && due >= config.duration_seconds) break;
    std::this_thread::sleep_until(
        start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(due)));
    std::lock_guard<std::mutex> lock(mu);
    jobs.push_back(i);
    if (waiting_workers < static_cast<int>(jobs.size()) &&
        static_cast<int>(workers.size()) < config.max_in_flight) {
      workers.emplace_back(worker);
    }
    cv.notify_one();
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    closing = true;
  }
  cv.notify_all();
  for (std::thread& t : workers) t.join();
}

// Prints "completed/total, rate, errors, in flight" on stderr every 250 ms until stopped.
class ProgressLine {
 public:
  ProgressLine(const Collector& collector, const BenchConfig& config)
      : collector_(collector), config_(config) {
    if (config.progress) thread_ = std::thread([this] { Loop(); });
  }
  ~ProgressLine() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    Print();
    std::fputc('\n', stderr);
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return stop_; })) {
      Print();
    }
  }
  void Print() const {
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    const int done = collector_.done.load();
    char total[64];
    if (config_.num_requests > 0) {
      std::snprintf(total, sizeof(total), "%d", config_.num_requests);
    } else {
      std::snprintf(total, sizeof(total), "? (%.0f s)", config_.duration_seconds);
    }
    std::fprintf(stderr, "\r[bench] %d/%s done  %.2f req/s  %d errors  %d in flight  %.1f s   ",
                 done, total, elapsed > 0 ? done / elapsed : 0.0, collector_.errors.load(),
                 collector_.in_flight.load(), elapsed);
    std::fflush(stderr);
  }

  const Collector& collector_;
  const BenchConfig& config_;
  const Clock::time_point start_ = Clock::now();
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

std::vector<RequestRecord> RunBench(Transport& transport, const std::vector<PromptSpec>& prompts,
                                    const BenchConfig& config) {
  const Clock::time_point origin = Clock::now();
  std::vector<RequestRecord> records;
  if (prompts.empty()) return records;
  if (config.warmup > 0) {
    Collector warm;
    Phase phase{&transport, &prompts, &config.options, origin, 0, true, &warm};
    RunClosedLoop(phase, std::max(config.concurrency, 1), config.warmup, 0);
    records = std::move(warm.records);
  }
  Collector counted;
  Phase phase{&transport, &prompts, &config.options, origin, config.warmup, false, &counted};
  {
    ProgressLine progress(counted, config);
    if (config.request_rate) {
      RunOpenLoop(phase, config);
    } else {
      RunClosedLoop(phase, std::max(config.concurrency, 1), config.num_requests,
                    config.duration_seconds);
    }
  }
  std::sort(records.begin(), records.end(),
            [](const RequestRecord& a, const RequestRecord& b) { return a.index < b.index; });
  std::sort(counted.records.begin(), counted.records.end(),
            [](const RequestRecord& a, const RequestRecord& b) { return a.index < b.index; });
  for (RequestRecord& r : counted.records) records.push_back(std::move(r));
  return records;
}

}  // namespace moe::client
