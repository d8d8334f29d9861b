// HealthMonitor: turns the engine loop's progress into a serving status, so health means
// "the model is loaded and the engine thread is alive and going round", not a latch set once
// at start-up. A background thread re-evaluates every `interval` and reports changes.
//
// Thread-safe: Start/Stop from the owner; the callback runs on the monitor's thread.
#ifndef KVSERVE_SERVER_SERVING_HEALTH_MONITOR_H_
#define KVSERVE_SERVER_SERVING_HEALTH_MONITOR_H_

#include <functional>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/serving/engine_loop.h"

namespace kvserve::server {

struct HealthMonitorOptions {
  absl::Duration interval = absl::Seconds(1);      // How often to re-evaluate.
  absl::Duration stall_timeout = absl::Seconds(30); // No heartbeat for this long = unhealthy.
};

// Healthy iff the loop thread is alive and its heartbeat is recent. Pure; for tests.
bool EngineLoopHealthy(bool alive, const EngineLoopStats& stats, absl::Time now,
                       absl::Duration stall_timeout);

class HealthMonitor {
 public:
  // `loop` must outlive the monitor. `set_serving` is called with the initial status and on
  // every change.
  HealthMonitor(const EngineLoop* loop, const HealthMonitorOptions& options,
                std::function<void(bool serving)> set_serving);
  ~HealthMonitor();  // Stops.

  void Start();
  void Stop();  // Idempotent; no callback runs after it returns.

 private:
  void Run();

  const EngineLoop* const loop_;
  const HealthMonitorOptions options_;
  const std::function<void(bool)> set_serving_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_SERVING_HEALTH_MONITOR_H_
