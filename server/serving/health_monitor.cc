#include "server/serving/health_monitor.h"

#include <utility>

#include "engine/common/logging.h"

namespace kvserve::server {

bool EngineLoopHealthy(bool alive, const EngineLoopStats& stats, absl::Time now,
                       absl::Duration stall_timeout) {
  return alive && now - stats.heartbeat <= stall_timeout;
}

HealthMonitor::HealthMonitor(const EngineLoop* loop, const HealthMonitorOptions& options,
                             std::function<void(bool serving)> set_serving)
    : loop_(loop), options_(options), set_serving_(std::move(set_serving)) {}

HealthMonitor::~HealthMonitor() { Stop(); }

void HealthMonitor::Start() {
  thread_ = std::thread([this] { Run(); });
}

void HealthMonitor::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void HealthMonitor::Run() {
  int last = -1;  // Unknown: the first evaluation always reports.
  do {
    const bool healthy =
        EngineLoopHealthy(loop_->alive(), loop_->stats(), absl::Now(), options_.stall_timeout);
    if (static_cast<int>(healthy) != last) {
      if (last != -1) {
        if (healthy) {
          KV_LOG_INFO("engine loop is making progress again: health SERVING");
        } else {
          KV_LOG_ERROR("engine loop stopped or stalled: health NOT_SERVING");
        }
      }
      set_serving_(healthy);
      last = healthy;
    }
  } while (!stop_.WaitForNotificationWithTimeout(options_.interval));
}

}  // namespace kvserve::server
