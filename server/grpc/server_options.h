// ServerOptions: everything kvserve's command line configures, and its parser (CLI11).
// Plain value type and pure functions; thread-safe.
#ifndef KVSERVE_SERVER_GRPC_SERVER_OPTIONS_H_
#define KVSERVE_SERVER_GRPC_SERVER_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/compute/device.h"
#include "engine/compute/linear.h"
#include "engine/runtime/kv_dtype.h"

namespace kvserve::server {

struct ServerOptions {
  std::string model_path;                       // GGUF file or llama2.c checkpoint. Required.
  std::string tokenizer_path;                   // llama2.c only; "" = tokenizer.bin beside it.
  std::string listen_address = "127.0.0.1:50051";  // HOST:PORT; port 0 picks a free port.
  int threads = 0;                              // Engine compute threads; 0 = all cores.
  engine::DeviceKind device = engine::DeviceKind::kCpu;
  int64_t max_queued_requests = 1024;           // Waiting requests beyond this get UNAVAILABLE.
  int64_t max_queued_prompt_tokens = 1 << 20;   // Waiting prompt tokens, likewise.
  int max_batch_tokens = 512;                   // Token budget of one engine step.
  int max_running = 64;                         // Sequences holding KV at once.
  int64_t kv_cache_mb = 0;                      // KV cache size in MiB; 0 = sized automatically.
  int32_t default_max_tokens = 256;             // Used when a request leaves max_tokens 0.
  int32_t max_tokens_limit = 0;                 // Largest max_tokens; 0 = the context length.
  absl::Duration drain_timeout = absl::Seconds(30);  // Graceful drain on SIGTERM/SIGINT.
  std::string metrics_listen = "127.0.0.1:9090";  // Prometheus /metrics HOST:PORT; "" = off.
  std::string kv_policy = "full";                  // Default KV policy spec of requests.
  // --scalekv-budgets: ScaleKV layer roles (kvserve-eval --calibrate-scalekv); "" = scalekv
  // unavailable.
  std::string scalekv_budgets_path;
  engine::KvDtype kv_dtype = engine::KvDtype::kF32;  // --kv-dtype: KV cache storage type.
  // --weight-type: storage of the weight matrices; kAuto follows the file (16-bit -> bf16,
  // q8_0 -> int8, f32 -> f32), so a file is served in the precision it was published in.
  engine::WeightType weight_type = engine::WeightType::kAuto;
  // Security and abuse limits (docs/SECURITY.md).
  std::string tls_cert_path;       // --tls-cert: PEM server certificate chain; "" = plaintext.
  std::string tls_key_path;        // --tls-key: its PEM private key (with --tls-cert).
  std::string tls_client_ca_path;  // --tls-client-ca: require client certs it signed (mTLS).
  std::string auth_token_file;     // --auth-token-file: bearer tokens, one a line; "" = off.
  int64_t max_message_bytes = 4 << 20;  // Largest request message; larger: RESOURCE_EXHAUSTED.
  int max_concurrent_streams = 256;     // Concurrent calls per client connection.
  // A streaming write the client has not accepted for this long cancels the call and frees
  // its KV; InfiniteDuration = never (flag value 0).
  absl::Duration write_timeout = absl::Seconds(30);
};

// Checks value ranges that need no model: OK or INVALID_ARGUMENT naming the flag.
absl::Status ValidateServerOptions(const ServerOptions& options);

// What the command line asks for.
struct ParsedCommandLine {
  enum class Action {
    kRun,   // Serve with `options`.
    kExit,  // Print `message` (help on stdout when exit_code is 0, else an error on stderr).
  };
  Action action = Action::kExit;
  ServerOptions options;  // Validated; meaningful when action is kRun.
  int exit_code = 0;
  std::string message;
};

// Parses kvserve's flags (argv[0] is the program name). Never throws or exits.
ParsedCommandLine ParseCommandLine(int argc, const char* const* argv);

// Splits "host:port" ("[::1]:port" for IPv6). INVALID_ARGUMENT unless the port is 0..65535
// and the host is non-empty.
absl::Status SplitHostPort(const std::string& address, std::string* host, int* port);

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_SERVER_OPTIONS_H_
