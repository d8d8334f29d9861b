#include "server/serving/health_monitor.h"

#include "gtest/gtest.h"

namespace kvserve::server {
namespace {

TEST(EngineLoopHealthyTest, NeedsALiveThreadAndARecentHeartbeat) {
  const absl::Time now = absl::Now();
  EngineLoopStats stats;
  stats.heartbeat = now - absl::Seconds(1);
  EXPECT_TRUE(EngineLoopHealthy(true, stats, now, absl::Seconds(30)));
  EXPECT_FALSE(EngineLoopHealthy(false, stats, now, absl::Seconds(30)));  // Thread gone.
  stats.heartbeat = now - absl::Seconds(31);
  EXPECT_FALSE(EngineLoopHealthy(true, stats, now, absl::Seconds(30)));   // Stalled.
  stats.heartbeat = absl::InfinitePast();
  EXPECT_FALSE(EngineLoopHealthy(true, stats, now, absl::Seconds(30)));   // Never went round.
}

// With the real engine loop: SERVING while it runs, NOT_SERVING once it has stopped.
TEST(HealthMonitorTest, FollowsTheRealEngineLoop) {
  engine::EngineOptions engine_options;
  engine_options.model_path = std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf";
  auto engine = engine::Engine::Create(engine_options).value();
  RequestQueue queue({});
  auto loop = EngineLoop::Create(engine.get(), &queue, {}).value();
  loop->Start();

  absl::Mutex mu;
  std::vector<bool> reports;
  HealthMonitor monitor(loop.get(), {.interval = absl::Milliseconds(10)}, [&](bool serving) {
    absl::MutexLock lock(&mu);
    reports.push_back(serving);
  });
  monitor.Start();
  auto last_report = [&] {
    absl::MutexLock lock(&mu);
    return reports.empty() ? -1 : static_cast<int>(reports.back());
  };
  for (int i = 0; i < 500 && last_report() != 1; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(last_report(), 1);
  loop->Stop();  // The engine thread ends: health must follow.
  for (int i = 0; i < 500 && last_report() != 0; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(last_report(), 0);
  monitor.Stop();
}

}  // namespace
}  // namespace kvserve::server
