#include "server/grpc/server_options.h"

#include <exception>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/policy/kv_policy.h"
#include "engine/policy/scalekv_budgets.h"
#include "absl/strings/str_format.h"
#include "engine/common/status_macros.h"
#include "server/grpc/tls_credentials.h"

namespace kvserve::server {
namespace {

absl::Status AtLeast(const char* flag, int64_t value, int64_t minimum) {
  if (value < minimum) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s must be >= %d; got %d", flag, minimum, value));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SplitHostPort(const std::string& address, std::string* host, int* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--listen '%s' is not HOST:PORT (e.g. 127.0.0.1:50051, [::1]:0)", address));
  }
  const std::string port_text = address.substr(colon + 1);
  int value = 0;
  if (!absl::SimpleAtoi(port_text, &value) || value < 0 || value > 65535) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--listen '%s' has port '%s'; a port is a number in 0..65535 (0 picks a free one)",
        address, port_text));
  }
  *host = address.substr(0, colon);
  *port = value;
  return absl::OkStatus();
}

absl::Status ValidateServerOptions(const ServerOptions& options) {
  if (options.model_path.empty()) return absl::InvalidArgumentError("--model is required");
  std::string host;
  int port = 0;
  KV_RETURN_IF_ERROR(SplitHostPort(options.listen_address, &host, &port));
  KV_RETURN_IF_ERROR(AtLeast("--threads", options.threads, 0));
  KV_RETURN_IF_ERROR(AtLeast("--max-queued-requests", options.max_queued_requests, 1));
  KV_RETURN_IF_ERROR(AtLeast("--max-queued-prompt-tokens", options.max_queued_prompt_tokens, 1));
  KV_RETURN_IF_ERROR(AtLeast("--max-batch-tokens", options.max_batch_tokens, 1));
  KV_RETURN_IF_ERROR(AtLeast("--max-running", options.max_running, 1));
  KV_RETURN_IF_ERROR(AtLeast("--kv-cache-mb", options.kv_cache_mb, 0));
  KV_ASSIGN_OR_RETURN(const engine::KvPolicyContext policy_context,
                      engine::LoadKvPolicyContext(options.scalekv_budgets_path));
  if (absl::StatusOr<std::shared_ptr<const engine::KvPolicy>> policy =
          engine::CreateKvPolicy(options.kv_policy, policy_context);
      !policy.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-policy: ", policy.status().message()));
  }
  KV_RETURN_IF_ERROR(AtLeast("--default-max-tokens", options.default_max_tokens, 1));
  KV_RETURN_IF_ERROR(AtLeast("--max-tokens-limit", options.max_tokens_limit, 0));
  if (options.max_tokens_limit > 0 && options.default_max_tokens > options.max_tokens_limit) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--default-max-tokens (%d) must not exceed --max-tokens-limit (%d)",
        options.default_max_tokens, options.max_tokens_limit));
  }
  if (options.drain_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--drain-timeout must be >= 0 seconds");
  }
  KV_RETURN_IF_ERROR(ValidateTlsFiles({.cert_path = options.tls_cert_path,
                                       .key_path = options.tls_key_path,
                                       .client_ca_path = options.tls_client_ca_path}));
  if (options.max_message_bytes < 1024 || options.max_message_bytes > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--max-message-bytes must be in [1024, 1073741824]; got %d", options.max_message_bytes));
  }
  KV_RETURN_IF_ERROR(AtLeast("--max-concurrent-streams", options.max_concurrent_streams, 1));
  if (options.write_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--write-timeout must be > 0 seconds (0 on the command "
                                      "line turns it off)");
  }
  return absl::OkStatus();
}

ParsedCommandLine ParseCommandLine(int argc, const char* const* argv) {
  ParsedCommandLine result;
  ServerOptions options;
  std::string device = "cpu";
  std::string kv_dtype = "f32";
  std::string weight_type = "auto";
  double drain_seconds = absl::ToDoubleSeconds(options.drain_timeout);
  double write_timeout_seconds = absl::ToDoubleSeconds(options.write_timeout);

  CLI::App app("kvserve: a gRPC LLM inference server (kvserve.v1.Inference)", "kvserve");
  app.add_option("--model", options.model_path, "GGUF model file or llama2.c checkpoint")
      ->required();
  app.add_option("--tokenizer", options.tokenizer_path,
                 "llama2.c tokenizer .bin (default: tokenizer.bin beside the model)");
  app.add_option("--listen", options.listen_address, "HOST:PORT to serve on; port 0 picks one")
      ->capture_default_str();
  app.add_option("--threads", options.threads, "engine compute threads (0 = all cores)")
      ->capture_default_str();
  app.add_option("--device", device, "compute device: cpu or gpu")->capture_default_str();
  app.add_option("--max-queued-requests", options.max_queued_requests,
                 "waiting requests beyond which new ones get UNAVAILABLE")
      ->capture_default_str();
  app.add_option("--max-queued-prompt-tokens", options.max_queued_prompt_tokens,
                 "waiting prompt tokens beyond which new requests get UNAVAILABLE")
      ->capture_default_str();
  app.add_option("--max-batch-tokens", options.max_batch_tokens,
                 "token budget of one engine step (prefill chunks + decodes)")
      ->capture_default_str();
  app.add_option("--max-running", options.max_running, "sequences that may run at once")
      ->capture_default_str();
  app.add_option("--metrics-listen", options.metrics_listen,
                 "Prometheus metrics HOST:PORT (serves /metrics; port 0 picks one; \"\" = off)");
  app.add_option("--kv-policy", options.kv_policy,
                 "Default KV-cache policy spec, e.g. h2o:keep=0.5 (full, window, h2o, "
                 "keyformer, snapkv, lazyllm, scalekv)");
  app.add_option("--scalekv-budgets", options.scalekv_budgets_path,
                 "ScaleKV layer roles (JSON from kvserve-eval --calibrate-scalekv); enables "
                 "the scalekv policy");
  app.add_option("--kv-dtype", kv_dtype,
                 "KV cache storage type: f32, bf16 or int8 (int8: per-32-value f16 scales)")
      ->capture_default_str();
  app.add_option("--weight-type", weight_type,
                 "weight storage: auto (by file: 16-bit -> bf16, q8_0 -> int8, f32 -> f32), "
                 "f32, bf16 or int8 (per-row scales, dynamic activation quantisation)")
      ->capture_default_str();
  app.add_option("--kv-cache-mb", options.kv_cache_mb, "KV cache size in MiB (0 = auto)")
      ->capture_default_str();
  app.add_option("--default-max-tokens", options.default_max_tokens,
                 "max_tokens of requests that leave it 0")
      ->capture_default_str();
  app.add_option("--max-tokens-limit", options.max_tokens_limit,
                 "largest max_tokens a request may ask for (0 = the model's context length)")
      ->capture_default_str();
  app.add_option("--drain-timeout", drain_seconds,
                 "seconds to let running requests finish on SIGTERM/SIGINT")
      ->capture_default_str();
  app.add_option("--tls-cert", options.tls_cert_path,
                 "PEM certificate chain: serve gRPC over TLS (with --tls-key)");
  app.add_option("--tls-key", options.tls_key_path, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", options.tls_client_ca_path,
                 "PEM CA bundle: require and verify client certificates (mutual TLS)");
  app.add_option("--auth-token-file", options.auth_token_file,
                 "bearer tokens, one a line ('#' comments); calls without 'authorization: "
                 "Bearer <token>' get UNAUTHENTICATED (health and reflection stay open)");
  app.add_option("--max-message-bytes", options.max_message_bytes,
                 "largest request message; larger ones get RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--max-concurrent-streams", options.max_concurrent_streams,
                 "concurrent calls per client connection")
      ->capture_default_str();
  app.add_option("--write-timeout", write_timeout_seconds,
                 "seconds a Generate stream may wait for its client to read before it is "
                 "cancelled and its KV freed (0 = never)")
      ->capture_default_str();

  std::vector<std::string> args;
  for (int i = argc - 1; i > 0; --i) args.emplace_back(argv[i]);  // CLI11 wants them reversed.
  try {
    app.parse(args);
  } catch (const CLI::CallForHelp&) {
    result.action = ParsedCommandLine::Action::kExit;
    result.exit_code = 0;
    result.message = app.help();
    return result;
  } catch (const CLI::ParseError& error) {
    result.action = ParsedCommandLine::Action::kExit;
    result.exit_code = 2;
    result.message = absl::StrFormat("kvserve: %s\nRun 'kvserve --help' for the flags.",
                                     error.what());
    return result;
  } catch (const std::exception& error) {
    result.action = ParsedCommandLine::Action::kExit;
    result.exit_code = 2;
    result.message = absl::StrFormat("kvserve: %s", error.what());
    return result;
  }

  absl::Status status = absl::OkStatus();
  absl::StatusOr<engine::DeviceKind> kind = engine::ParseDeviceKind(device);
  if (!kind.ok()) {
    status = absl::InvalidArgumentError(
        absl::StrFormat("--device: %s", kind.status().message()));
  } else {
    options.device = *kind;
  }
  if (status.ok()) {
    absl::StatusOr<engine::KvDtype> dtype = engine::ParseKvDtype(kv_dtype);
    if (dtype.ok()) {
      options.kv_dtype = *dtype;
    } else {
      status = absl::InvalidArgumentError(
          absl::StrFormat("--kv-dtype: %s", dtype.status().message()));
    }
  }
  if (status.ok()) {
    absl::StatusOr<engine::WeightType> type = engine::ParseWeightType(weight_type);
    if (type.ok()) {
      options.weight_type = *type;
    } else {
      status = absl::InvalidArgumentError(
          absl::StrFormat("--weight-type: %s", type.status().message()));
    }
  }
  if (status.ok() && !(drain_seconds >= 0.0 && drain_seconds <= 24 * 3600.0)) {
    status = absl::InvalidArgumentError(absl::StrFormat(
        "--drain-timeout must be in [0, 86400] seconds; got %g", drain_seconds));
  }
  if (status.ok() && !(write_timeout_seconds >= 0.0 && write_timeout_seconds <= 24 * 3600.0)) {
    status = absl::InvalidArgumentError(absl::StrFormat(
        "--write-timeout must be in [0, 86400] seconds; got %g", write_timeout_seconds));
  }
  if (status.ok()) {
    options.drain_timeout = absl::Seconds(drain_seconds);
    options.write_timeout = write_timeout_seconds == 0.0 ? absl::InfiniteDuration()
                                                         : absl::Seconds(write_timeout_seconds);
    status = ValidateServerOptions(options);
  }
  if (!status.ok()) {
    result.action = ParsedCommandLine::Action::kExit;
    result.exit_code = 2;
    result.message = absl::StrFormat("kvserve: %s", status.message());
    return result;
  }
  result.action = ParsedCommandLine::Action::kRun;
  result.options = std::move(options);
  return result;
}

}  // namespace kvserve::server
