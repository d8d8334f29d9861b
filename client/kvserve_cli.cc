// kvserve-cli: one request to a kvserve server per invocation.
//
//   kvserve-cli generate --server 127.0.0.1:50051 --max-tokens 64 --temperature 0 --json "Once"
//   kvserve-cli complete|tokenize|info|health --server HOST:PORT ...
//
// Exit codes: 0 success; 1 `health` found the server not SERVING; 2 the RPC failed (stderr
// says "error: <CODE>: <message>"); CLI11's own codes for unusable command lines.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "CLI/CLI.hpp"
#include "client/cli_support.h"
#include "client/grpc_status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "kvserve/v1/kvserve.grpc.pb.h"

namespace kvserve::client {
namespace {

constexpr char kDefaultServer[] = "127.0.0.1:50051";

// Flags every subcommand has.
struct CommonFlags {
  std::string server = kDefaultServer;  // --server HOST:PORT.
  double timeout_s = 300;               // --timeout: deadline of the RPC in seconds.
  bool json = false;                    // --json: machine-readable output.
  // Transport security and auth (docs/SECURITY.md).
  std::string tls_ca;      // --tls-ca: PEM CA that signed the server's certificate; set = TLS.
  std::string tls_cert;    // --tls-cert: PEM client certificate for mutual TLS.
  std::string tls_key;     // --tls-key: its private key.
  std::string token;       // --token (or KVSERVE_TOKEN): bearer token.
  std::string token_file;  // --token-file: file whose first non-comment line is the token.
};

void AddCommonFlags(CLI::App& sub, CommonFlags& common, bool with_json) {
  sub.add_option("--server", common.server, "HOST:PORT of the kvserve server")
      ->capture_default_str();
  sub.add_option("--timeout", common.timeout_s, "Deadline of the RPC in seconds")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  if (with_json) sub.add_flag("--json", common.json, "Print JSON instead of text");
  sub.add_option("--tls-ca", common.tls_ca, "Connect over TLS, trusting this PEM CA")
      ->check(CLI::ExistingFile);
  CLI::Option* cert = sub.add_option("--tls-cert", common.tls_cert,
                                     "PEM client certificate (mutual TLS; with --tls-key)")
                          ->check(CLI::ExistingFile);
  CLI::Option* key = sub.add_option("--tls-key", common.tls_key, "PEM key of --tls-cert")
                         ->check(CLI::ExistingFile);
  cert->needs(key);
  key->needs(cert);
  CLI::Option* token =
      sub.add_option("--token", common.token,
                     "Bearer token (visible in the process list: prefer --token-file)")
          ->envname("KVSERVE_TOKEN");
  sub.add_option("--token-file", common.token_file,
                 "File holding the bearer token (first line not blank or '#')")
      ->check(CLI::ExistingFile)
      ->excludes(token);
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The token from --token, or the first line of --token-file that is not blank or a comment.
std::string BearerToken(const CommonFlags& common) {
  if (!common.token.empty() || common.token_file.empty()) return common.token;
  std::istringstream lines(ReadWholeFile(common.token_file));
  std::string line;
  while (std::getline(lines, line)) {
    const size_t begin = line.find_first_not_of(" \t\r");
    if (begin == std::string::npos || line[begin] == '#') continue;
    return line.substr(begin, line.find_last_not_of(" \t\r") + 1 - begin);
  }
  return "";
}

void AddGenerateFlags(CLI::App& sub, GenerateFlags& flags) {
  sub.add_option("--max-tokens,-n", flags.max_tokens, "Tokens to generate at most (0 = server default)");
  sub.add_option("--temperature", flags.temperature, "Sampling temperature; 0 = greedy");
  sub.add_option("--top-k", flags.top_k, "Keep the k most likely tokens; 0 = off");
  sub.add_option("--top-p", flags.top_p, "Nucleus sampling mass in (0, 1]; 0 = off");
  sub.add_option("--seed", flags.seed, "Sampler seed");
  sub.add_option("--stop", flags.stop, "Stop before this string (repeatable)")
      ->allow_extra_args(false);
  sub.add_option("--priority", flags.priority, "Scheduling priority; higher runs first");
  sub.add_flag("--no-bos", flags.no_bos, "Do not prepend the BOS token");
  sub.add_option("--kv-policy", flags.kv_policy,
                 "KV-cache policy of this request, e.g. h2o:keep=0.5, keyformer:keep=0.3, "
                 "lazyllm (default: the server's --kv-policy)");
  sub.add_option("prompt", flags.prompt, "Prompt text")->required();
}

std::chrono::system_clock::time_point DeadlineAfter(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(seconds));
}

std::shared_ptr<grpc::Channel> MakeChannel(const CommonFlags& common) {
  if (common.tls_ca.empty() && common.tls_cert.empty()) {
    return grpc::CreateChannel(common.server, grpc::InsecureChannelCredentials());
  }
  grpc::SslCredentialsOptions tls;
  if (!common.tls_ca.empty()) tls.pem_root_certs = ReadWholeFile(common.tls_ca);
  if (!common.tls_cert.empty()) {
    tls.pem_cert_chain = ReadWholeFile(common.tls_cert);
    tls.pem_private_key = ReadWholeFile(common.tls_key);
  }
  return grpc::CreateChannel(common.server, grpc::SslCredentials(tls));
}

// The RPC's deadline, and its bearer token when one is configured.
void PrepareContext(const CommonFlags& common, grpc::ClientContext& context) {
  context.set_deadline(DeadlineAfter(common.timeout_s));
  if (const std::string token = BearerToken(common); !token.empty()) {
    context.AddMetadata("authorization", "Bearer " + token);
  }
}

int Fail(const grpc::Status& status) {
  std::cerr << "error: " << FormatStatus(FromGrpcStatus(status)) << std::endl;
  return 2;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int RunGenerate(const CommonFlags& common, const GenerateFlags& flags) {
  auto stub = kvserve::v1::Inference::NewStub(MakeChannel(common));
  grpc::ClientContext context;
  PrepareContext(common, context);
  kvserve::v1::GenerateRequest request;
  *request.mutable_params() = BuildGenerationParams(flags);

  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<grpc::ClientReader<kvserve::v1::GenerateResponse>> reader =
      stub->Generate(&context, request);
  kvserve::v1::GenerateResponse chunk;
  kvserve::v1::FinishReason reason = kvserve::v1::FINISH_REASON_UNSPECIFIED;
  kvserve::v1::Usage usage;
  bool printed_text = false;
  while (reader->Read(&chunk)) {
    if (common.json) {
      std::cout << JsonLine(GenerateChunkToJson(chunk)) << '\n' << std::flush;
    } else if (!chunk.text().empty()) {
      std::cout << chunk.text() << std::flush;
      printed_text = true;
    }
    if (chunk.finish_reason() != kvserve::v1::FINISH_REASON_UNSPECIFIED) {
      reason = chunk.finish_reason();
      usage = chunk.usage();
    }
  }
  const grpc::Status status = reader->Finish();
  if (!common.json && (status.ok() || printed_text)) std::cout << '\n' << std::flush;
  if (!status.ok()) return Fail(status);
  if (!common.json) std::cerr << FormatGenerationSummary(reason, usage, SecondsSince(start)) << std::endl;
  return 0;
}

int RunComplete(const CommonFlags& common, const GenerateFlags& flags) {
  auto stub = kvserve::v1::Inference::NewStub(MakeChannel(common));
  grpc::ClientContext context;
  PrepareContext(common, context);
  kvserve::v1::CompleteRequest request;
  *request.mutable_params() = BuildGenerationParams(flags);
  kvserve::v1::CompleteResponse response;
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = stub->Complete(&context, request, &response);
  if (!status.ok()) return Fail(status);
  if (common.json) {
    std::cout << JsonLine(CompleteResponseToJson(response)) << std::endl;
  } else {
    std::cout << response.text() << std::endl;
    std::cerr << FormatGenerationSummary(response.finish_reason(), response.usage(),
                                         SecondsSince(start))
              << std::endl;
  }
  return 0;
}

int RunTokenize(const CommonFlags& common, const std::string& text, bool no_bos) {
  auto stub = kvserve::v1::Inference::NewStub(MakeChannel(common));
  grpc::ClientContext context;
  PrepareContext(common, context);
  kvserve::v1::TokenizeRequest request;
  request.set_text(text);
  request.set_add_bos(!no_bos);
  kvserve::v1::TokenizeResponse response;
  const grpc::Status status = stub->Tokenize(&context, request, &response);
  if (!status.ok()) return Fail(status);
  if (common.json) {
    std::cout << JsonLine(TokenizeResponseToJson(response)) << std::endl;
  } else {
    std::cout << FormatTokenIds(response.token_ids()) << '\n'
              << JsonLine(TokenizeResponseToJson(response)["pieces"]) << std::endl;
  }
  return 0;
}

int RunInfo(const CommonFlags& common) {
  auto stub = kvserve::v1::Inference::NewStub(MakeChannel(common));
  grpc::ClientContext context;
  PrepareContext(common, context);
  kvserve::v1::GetModelInfoResponse response;
  const grpc::Status status =
      stub->GetModelInfo(&context, kvserve::v1::GetModelInfoRequest(), &response);
  if (!status.ok()) return Fail(status);
  if (common.json) {
    std::cout << JsonLine(ModelInfoToJson(response)) << std::endl;
  } else {
    std::cout << FormatModelInfo(response) << std::flush;
  }
  return 0;
}

int RunHealth(const CommonFlags& common, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(MakeChannel(common));
  grpc::ClientContext context;
  PrepareContext(common, context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return Fail(status);
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())
            << std::endl;
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

int Main(int argc, char** argv) {
  CLI::App app{"kvserve-cli: send one request to a kvserve server"};
  app.require_subcommand(1);

  CommonFlags generate_common;
  GenerateFlags generate_flags;
  bool stream = true;
  CLI::App* generate =
      app.add_subcommand("generate", "Generate a continuation (streaming Generate RPC)");
  AddCommonFlags(*generate, generate_common, /*with_json=*/true);
  AddGenerateFlags(*generate, generate_flags);
  generate->add_flag("--stream,!--no-stream", stream,
                     "Stream chunks as they arrive (default); --stream=false uses the unary "
                     "Complete RPC");

  CommonFlags complete_common;
  GenerateFlags complete_flags;
  CLI::App* complete =
      app.add_subcommand("complete", "Generate a continuation (unary Complete RPC)");
  AddCommonFlags(*complete, complete_common, /*with_json=*/true);
  AddGenerateFlags(*complete, complete_flags);

  CommonFlags tokenize_common;
  std::string tokenize_text;
  bool tokenize_no_bos = false;
  CLI::App* tokenize = app.add_subcommand("tokenize", "Split text into the model's tokens");
  AddCommonFlags(*tokenize, tokenize_common, /*with_json=*/true);
  tokenize->add_flag("--no-bos", tokenize_no_bos, "Do not prepend the BOS token");
  tokenize->add_option("text", tokenize_text, "Text to tokenize")->required();

  CommonFlags info_common;
  CLI::App* info = app.add_subcommand("info", "Describe the served model");
  AddCommonFlags(*info, info_common, /*with_json=*/true);

  CommonFlags health_common;
  std::string health_service;
  CLI::App* health = app.add_subcommand(
      "health", "Check grpc.health.v1 health; exit 0 when SERVING, 1 otherwise");
  AddCommonFlags(*health, health_common, /*with_json=*/false);
  health->add_option("--service", health_service, "Service name; empty = the whole server");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (generate->parsed()) {
    return stream ? RunGenerate(generate_common, generate_flags)
                  : RunComplete(generate_common, generate_flags);
  }
  if (complete->parsed()) return RunComplete(complete_common, complete_flags);
  if (tokenize->parsed()) return RunTokenize(tokenize_common, tokenize_text, tokenize_no_bos);
  if (info->parsed()) return RunInfo(info_common);
  if (health->parsed()) return RunHealth(health_common, health_service);
  return 2;  // Unreachable: require_subcommand(1).
}

}  // namespace
}  // namespace kvserve::client

int main(int argc, char** argv) { return kvserve::client::Main(argc, argv); }
