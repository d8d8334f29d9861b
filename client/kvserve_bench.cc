// kvserve-bench: drives a kvserve server (or, with --model, the same serving core in this
// process, without gRPC) with a closed- or open-loop generation workload and reports
// throughput and latency percentiles (see client/bench_report.h for definitions).
//
//   kvserve-bench --server 127.0.0.1:50051 --concurrency 4 --requests 64
//                 --prompt-tokens 128 --max-tokens 64 --json
//   kvserve-bench --model models/stories260K.gguf --threads 2 --concurrency 16 --requests 64
//
// Exit codes: 0 the run completed (individual request errors are in the report), 1 a request
// was lost (a driver bug), 2 the run could not start (bad flags, server unreachable).
#include <cstdio>
#include <iostream>
#include <memory>

#include "CLI/CLI.hpp"
#include "client/bench_options.h"
#include "client/bench_report.h"
#include "client/engine_generation_target.h"
#include "client/grpc_generation_target.h"
#include "client/grpc_status.h"
#include "client/load_generator.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace kvserve::client {
namespace {

int Fail(const absl::Status& status) {
  std::cerr << "error: " << FormatStatus(status) << std::endl;
  return 2;
}

absl::StatusOr<std::unique_ptr<GenerationTarget>> MakeTarget(const BenchOptions& options) {
  if (options.model.empty()) {
    absl::StatusOr<std::unique_ptr<GrpcGenerationTarget>> grpc =
        GrpcGenerationTarget::Create(GrpcTargetOptions{options.server});
    if (!grpc.ok()) return grpc.status();
    return std::unique_ptr<GenerationTarget>(*std::move(grpc));
  }
  absl::StatusOr<EngineTargetOptions> engine_options = MakeEngineTargetOptions(options);
  if (!engine_options.ok()) return engine_options.status();
  absl::StatusOr<std::unique_ptr<EngineGenerationTarget>> engine =
      EngineGenerationTarget::Create(*engine_options);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<GenerationTarget>(*std::move(engine));
}

int Main(int argc, char** argv) {
  // The in-process engine logs (model loaded, ...); stdout is for the report alone, so that
  // --json output stays one parseable object.
  spdlog::set_default_logger(spdlog::stderr_color_mt("kvserve-bench"));
  CLI::App app{"kvserve-bench: load generator for kvserve"};
  BenchOptions options;
  AddBenchFlags(app, options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (absl::Status status = ValidateBenchOptions(options); !status.ok()) return Fail(status);

  absl::StatusOr<std::unique_ptr<GenerationTarget>> target = MakeTarget(options);
  if (!target.ok()) return Fail(target.status());
  absl::StatusOr<BenchReport> report = RunLoad(**target, options.load);
  if (!report.ok()) return Fail(report.status());

  if (options.json) {
    std::cout << BenchReportToJson(*report).dump(-1, ' ', false,
                                                 nlohmann::ordered_json::error_handler_t::replace)
              << std::endl;
  } else {
    std::cout << FormatBenchReportTable(*report) << std::flush;
  }
  if (report->lost != 0) {
    std::cerr << "error: " << report->lost << " requests were lost" << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace kvserve::client

int main(int argc, char** argv) { return kvserve::client::Main(argc, argv); }
