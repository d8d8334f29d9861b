// Integration: the listener's security and abuse limits over real gRPC on loopback — TLS,
// mutual TLS, bearer-token auth, the receive-size limit, and the write timeout that cancels a
// Generate whose client never reads. Certificates are made at test time (test_certs.h).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvserve/v1/kvserve.grpc.pb.h"
#include "server/grpc/kvserve_server.h"
#include "tests/integration/test_certs.h"
#include "tests/integration/test_client.h"

namespace kvserve::server {
namespace {

using ::kvserve::testing::Complete;
using ::kvserve::testing::CompleteResult;
using ::kvserve::testing::Generate;
using ::kvserve::testing::GenerateResult;
using ::kvserve::testing::ReadFileOrEmpty;
using ::kvserve::testing::TestCerts;
using ::testing::Contains;
using ::testing::HasSubstr;

ServerOptions TestOptions() {
  ServerOptions options;
  options.model_path = std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf";
  options.listen_address = "127.0.0.1:0";
  options.metrics_listen = "";
  options.threads = 1;
  return options;
}

v1::GenerationParams Greedy(const std::string& prompt, int32_t max_tokens) {
  v1::GenerationParams params;
  params.set_prompt(prompt);
  params.set_max_tokens(max_tokens);
  return params;
}

std::unique_ptr<KvServer> StartServer(const ServerOptions& options) {
  absl::StatusOr<std::unique_ptr<KvServer>> server = KvServer::Create(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

// A fresh channel (no connection sharing between differently credentialed clients).
std::shared_ptr<grpc::Channel> Channel(const std::string& address,
                                       std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetInt("grpc.use_local_subchannel_pool", 1);
  return grpc::CreateCustomChannel(address, std::move(credentials), args);
}

std::shared_ptr<grpc::ChannelCredentials> TlsClient(const TestCerts& certs, bool with_cert,
                                                    bool rogue = false) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ReadFileOrEmpty(certs.ca_cert);
  if (with_cert) {
    options.pem_cert_chain = ReadFileOrEmpty(rogue ? certs.rogue_client_cert : certs.client_cert);
    options.pem_private_key = ReadFileOrEmpty(rogue ? certs.rogue_client_key : certs.client_key);
  }
  return grpc::SslCredentials(options);
}

// A short Complete on `channel` with an optional bearer token.
grpc::Status SmallComplete(grpc::Channel& channel, const std::string& token = "") {
  auto stub = v1::Inference::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](auto*) {}));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  v1::CompleteRequest request;
  *request.mutable_params() = Greedy("Once upon a time", 4);
  v1::CompleteResponse response;
  const grpc::Status status = stub->Complete(&context, request, &response);
  if (status.ok()) {
    EXPECT_EQ(response.token_ids_size(), 4);
  }
  return status;
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<TestCerts> certs = kvserve::testing::MakeTestCerts(::testing::TempDir());
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = std::make_unique<TestCerts>(*std::move(certs));
  }
  void SetUp() override { ASSERT_NE(certs_, nullptr); }

  static std::string WriteFile(const std::string& name, const std::string& contents) {
    const std::string path = certs_->dir + "/" + name;
    std::ofstream(path) << contents;
    return path;
  }

  static inline std::unique_ptr<TestCerts> certs_;
};

// --- TLS ------------------------------------------------------------------------------------

TEST_F(SecurityTest, TlsServesTlsClientsAndRefusesPlaintext) {
  ServerOptions options = TestOptions();
  options.tls_cert_path = certs_->server_cert;
  options.tls_key_path = certs_->server_key;
  std::unique_ptr<KvServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);

  auto tls = Channel(server->address(), TlsClient(*certs_, /*with_cert=*/false));
  EXPECT_TRUE(SmallComplete(*tls).ok());
  EXPECT_EQ(kvserve::testing::HealthCheck(*tls, "").value_or("error"), "SERVING");

  auto plaintext = Channel(server->address(), grpc::InsecureChannelCredentials());
  const grpc::Status refused = SmallComplete(*plaintext);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  server->Shutdown(absl::Seconds(1));
}

TEST_F(SecurityTest, MutualTlsRequiresAClientCertificateFromTheCa) {
  ServerOptions options = TestOptions();
  options.tls_cert_path = certs_->server_cert;
  options.tls_key_path = certs_->server_key;
  options.tls_client_ca_path = certs_->ca_cert;
  std::unique_ptr<KvServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);

  auto with_cert = Channel(server->address(), TlsClient(*certs_, /*with_cert=*/true));
  EXPECT_TRUE(SmallComplete(*with_cert).ok());

  auto without_cert = Channel(server->address(), TlsClient(*certs_, /*with_cert=*/false));
  EXPECT_EQ(SmallComplete(*without_cert).error_code(), grpc::StatusCode::UNAVAILABLE);
  auto rogue = Channel(server->address(),
                       TlsClient(*certs_, /*with_cert=*/true, /*rogue=*/true));
  EXPECT_EQ(SmallComplete(*rogue).error_code(), grpc::StatusCode::UNAVAILABLE);
  auto plaintext = Channel(server->address(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(SmallComplete(*plaintext).error_code(), grpc::StatusCode::UNAVAILABLE);
  server->Shutdown(absl::Seconds(1));
}

// --- Bearer tokens ---------------------------------------------------------------------------

struct AuthCase {
  std::string name;
  bool tls;
};

class TokenAuthTest : public SecurityTest, public ::testing::WithParamInterface<AuthCase> {};

TEST_P(TokenAuthTest, OnlyConfiguredTokensGetInAndHealthStaysOpen) {
  ServerOptions options = TestOptions();
  options.auth_token_file = WriteFile(
      "tokens", "# kvserve tokens\n\n  first-token-0123  \nsecond-token-4567\n");
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (GetParam().tls) {
    options.tls_cert_path = certs_->server_cert;
    options.tls_key_path = certs_->server_key;
    credentials = TlsClient(*certs_, /*with_cert=*/false);
  }
  std::unique_ptr<KvServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto channel = Channel(server->address(), credentials);

  const grpc::Status missing = SmallComplete(*channel);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(missing.error_message(), HasSubstr("authorization: Bearer <token>"));
  const grpc::Status wrong = SmallComplete(*channel, "first-token-0124");
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(wrong.error_message(), HasSubstr("invalid bearer token"));
  EXPECT_EQ(SmallComplete(*channel, "first-token-012").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(SmallComplete(*channel, "# kvserve tokens").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(SmallComplete(*channel, "first-token-0123").ok());
  EXPECT_TRUE(SmallComplete(*channel, "second-token-4567").ok());

  // Every kvserve.v1 method is covered, not only generation.
  auto stub = v1::Inference::NewStub(channel);
  {
    grpc::ClientContext context;
    v1::GetModelInfoResponse info;
    EXPECT_EQ(stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    v1::TokenizeRequest request;
    request.set_text("hi");
    v1::TokenizeResponse response;
    EXPECT_EQ(stub->Tokenize(&context, request, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    const GenerateResult stream = Generate(*stub, Greedy("Once upon a time", 4));
    EXPECT_EQ(stream.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_TRUE(stream.chunks.empty());
  }
  // Health and reflection need no token.
  EXPECT_EQ(kvserve::testing::HealthCheck(*channel, "").value_or("error"), "SERVING");
  absl::StatusOr<std::vector<std::string>> services =
      kvserve::testing::ReflectionListServices(*channel);
  ASSERT_TRUE(services.ok()) << services.status();
  EXPECT_THAT(*services, Contains("kvserve.v1.Inference"));
  server->Shutdown(absl::Seconds(1));
}

INSTANTIATE_TEST_SUITE_P(Transports, TokenAuthTest,
                         ::testing::Values(AuthCase{"plaintext", false}, AuthCase{"tls", true}),
                         [](const ::testing::TestParamInfo<AuthCase>& info) {
                           return info.param.name;
                         });

// --- Start-up errors -------------------------------------------------------------------------

struct StartupCase {
  std::string name;
  std::function<void(ServerOptions&, const TestCerts&)> spoil;
  std::string message_part;
};

void PrintTo(const StartupCase& c, std::ostream* os) { *os << c.name; }

class SecurityStartupTest : public SecurityTest,
                            public ::testing::WithParamInterface<StartupCase> {};

TEST_P(SecurityStartupTest, RefusesToStartNamingTheProblem) {
  ServerOptions options = TestOptions();
  options.tls_cert_path = certs_->server_cert;
  options.tls_key_path = certs_->server_key;
  WriteFile("no_tokens", "# nothing here\n\n");
  WriteFile("bad_token", "good\nhas space\n");
  GetParam().spoil(options, *certs_);
  absl::StatusOr<std::unique_ptr<KvServer>> server = KvServer::Create(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << server.status();
  EXPECT_THAT(std::string(server.status().message()), HasSubstr(GetParam().message_part));
}

INSTANTIATE_TEST_SUITE_P(
    BadFiles, SecurityStartupTest,
    ::testing::Values(
        StartupCase{"missing_cert",
                    [](ServerOptions& o, const TestCerts&) { o.tls_cert_path = "/no/cert.pem"; },
                    "--tls-cert: cannot read '/no/cert.pem'"},
        StartupCase{"key_is_a_certificate",
                    [](ServerOptions& o, const TestCerts& c) { o.tls_key_path = c.ca_cert; },
                    "is not a PEM file with a PRIVATE KEY"},
        StartupCase{"key_without_cert",
                    [](ServerOptions& o, const TestCerts&) { o.tls_cert_path.clear(); },
                    "--tls-cert and --tls-key must be given together"},
        StartupCase{"missing_client_ca",
                    [](ServerOptions& o, const TestCerts&) {
                      o.tls_client_ca_path = "/no/ca.pem";
                    },
                    "--tls-client-ca: cannot read '/no/ca.pem'"},
        StartupCase{"missing_token_file",
                    [](ServerOptions& o, const TestCerts&) {
                      o.auth_token_file = "/no/tokens";
                    },
                    "--auth-token-file: cannot read '/no/tokens'"},
        StartupCase{"token_file_without_tokens",
                    [](ServerOptions& o, const TestCerts& c) {
                      o.auth_token_file = c.dir + "/no_tokens";
                    },
                    "holds no token"},
        StartupCase{"token_with_a_space",
                    [](ServerOptions& o, const TestCerts& c) {
                      o.auth_token_file = c.dir + "/bad_token";
                    },
                    "line 2"}),
    [](const ::testing::TestParamInfo<StartupCase>& info) { return info.param.name; });

// --- Limits ----------------------------------------------------------------------------------

TEST(SecurityLimitsTest, MessageOverTheReceiveLimitIsResourceExhaustedAndServingContinues) {
  ServerOptions options = TestOptions();
  options.max_message_bytes = 64 << 10;
  std::unique_ptr<KvServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto stub = v1::Inference::NewStub(kvserve::testing::Connect(server->address()));

  const v1::GenerationParams huge = Greedy(std::string(100 << 10, 'a'), 4);
  const CompleteResult unary = Complete(*stub, huge);
  EXPECT_EQ(unary.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << unary.status.error_message();
  const GenerateResult stream = Generate(*stub, huge);
  EXPECT_EQ(stream.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << stream.status.error_message();
  // Just under the limit is accepted (and then judged by the request rules).
  const CompleteResult under = Complete(*stub, Greedy(std::string(60 << 10, 'a'), 4));
  EXPECT_NE(under.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // The same connection keeps working.
  const CompleteResult after = Complete(*stub, Greedy("Once upon a time", 8));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.response.token_ids_size(), 8);
  server->Shutdown(absl::Seconds(1));
}

TEST(SecurityLimitsTest, ConcurrentStreamsPerConnectionAreCapped) {
  ServerOptions options = TestOptions();
  options.max_concurrent_streams = 2;
  std::unique_ptr<KvServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto stub = v1::Inference::NewStub(kvserve::testing::Connect(server->address()));

  // Six long calls on one connection: gRPC holds back all but two, so the server never has
  // more than two of them at once (queued or running), and all six still complete.
  constexpr int kCalls = 6;
  std::vector<GenerateResult> results(kCalls);
  std::vector<std::thread> threads;
  for (GenerateResult& result : results) {
    threads.emplace_back([&] { result = Generate(*stub, Greedy("Once upon a time", 400)); });
  }
  int64_t most = 0;
  std::atomic<bool> done = false;
  std::thread watcher([&] {
    while (!done) {
      const EngineLoopStats stats = server->stats();
      most = std::max(most, stats.running + stats.waiting);
      absl::SleepFor(absl::Microseconds(200));
    }
  });
  for (std::thread& thread : threads) thread.join();
  done = true;
  watcher.join();
  for (const GenerateResult& result : results) {
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.token_ids.size(), 400u);
  }
  EXPECT_GE(most, 1);
  EXPECT_LE(most, 2);
  server->Shutdown(absl::Seconds(1));
}

// A bare HTTP/2 client on a TCP socket that opens one Generate call and announces a stream
// window of 0 bytes (SETTINGS_INITIAL_WINDOW_SIZE = 0) and never grants more: the server can
// never deliver a single message, exactly like a client that never reads. It answers the
// server's SETTINGS and PINGs so the connection itself stays healthy.
class NeverReadingClient {
 public:
  // Connects to 127.0.0.1:`port` and sends the request. False on socket errors.
  bool Open(int port, const v1::GenerateRequest& request) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return false;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) return false;
    std::string out = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // SETTINGS: INITIAL_WINDOW_SIZE (0x4) = 0.
    Frame(&out, 0x4, 0, 0, std::string("\x00\x04\x00\x00\x00\x00", 6));
    std::string headers;
    for (const auto& [name, value] :
         std::vector<std::pair<std::string, std::string>>{
             {":method", "POST"},
             {":scheme", "http"},
             {":path", "/kvserve.v1.Inference/Generate"},
             {":authority", absl::StrCat("127.0.0.1:", port)},
             {"content-type", "application/grpc"},
             {"te", "trailers"}}) {
      // HPACK literal header field without indexing, new name (all lengths < 127).
      headers.push_back('\0');
      headers.push_back(static_cast<char>(name.size()));
      headers += name;
      headers.push_back(static_cast<char>(value.size()));
      headers += value;
    }
    Frame(&out, 0x1, /*END_HEADERS*/ 0x4, 1, headers);
    const std::string message = request.SerializeAsString();
    std::string data(5, '\0');  // gRPC prefix: uncompressed, 4-byte big-endian length.
    for (int i = 0; i < 4; ++i) data[1 + i] = static_cast<char>(message.size() >> (24 - 8 * i));
    Frame(&out, 0x0, /*END_STREAM*/ 0x1, 1, data + message);
    return Send(out);
  }

  ~NeverReadingClient() {
    if (fd_ >= 0) close(fd_);
  }

  // Reads frames until the server ends stream 1 (RST_STREAM, or HEADERS with END_STREAM) or
  // the connection (GOAWAY, EOF), or `timeout` passes. Returns a description of the end, or
  // nullopt on timeout. Never sends WINDOW_UPDATE.
  std::optional<std::string> WaitForStreamEnd(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      std::string header;
      if (!ReadExactly(9, deadline, &header)) return std::nullopt;
      const uint32_t length = (static_cast<uint8_t>(header[0]) << 16) |
                              (static_cast<uint8_t>(header[1]) << 8) |
                              static_cast<uint8_t>(header[2]);
      const uint8_t type = static_cast<uint8_t>(header[3]);
      const uint8_t flags = static_cast<uint8_t>(header[4]);
      const uint32_t stream = ((static_cast<uint8_t>(header[5]) & 0x7f) << 24) |
                              (static_cast<uint8_t>(header[6]) << 16) |
                              (static_cast<uint8_t>(header[7]) << 8) |
                              static_cast<uint8_t>(header[8]);
      std::string payload;
      if (!ReadExactly(length, deadline, &payload)) return std::nullopt;
      if (type == 0x0 && stream == 1) data_frames_++;
      if (type == 0x4 && (flags & 0x1) == 0) {
        std::string ack;
        Frame(&ack, 0x4, 0x1, 0, "");
        Send(ack);
      } else if (type == 0x6 && (flags & 0x1) == 0) {
        std::string pong;
        Frame(&pong, 0x6, 0x1, 0, payload);
        Send(pong);
      } else if (type == 0x3 && stream == 1) {
        const uint32_t code = (static_cast<uint8_t>(payload[0]) << 24) |
                              (static_cast<uint8_t>(payload[1]) << 16) |
                              (static_cast<uint8_t>(payload[2]) << 8) |
                              static_cast<uint8_t>(payload[3]);
        return absl::StrCat("RST_STREAM ", code);
      } else if (type == 0x1 && stream == 1 && (flags & 0x1) != 0) {
        return "END_STREAM";
      } else if (type == 0x7) {
        return "GOAWAY";
      }
    }
  }

  int data_frames() const { return data_frames_; }

  // Drops the TCP connection (as a client process that dies does), with the stream open.
  void Disconnect() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  static void Frame(std::string* out, uint8_t type, uint8_t flags, uint32_t stream,
                    const std::string& payload) {
    const uint32_t length = static_cast<uint32_t>(payload.size());
    out->push_back(static_cast<char>(length >> 16));
    out->push_back(static_cast<char>(length >> 8));
    out->push_back(static_cast<char>(length));
    out->push_back(static_cast<char>(type));
    out->push_back(static_cast<char>(flags));
    for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(stream >> shift));
    *out += payload;
  }

  bool Send(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  bool ReadExactly(size_t count, absl::Time deadline, std::string* into) {
    while (into->size() < count) {
      const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (ms <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(ms)) <= 0) return false;
      char buffer[4096];
      const ssize_t n = recv(fd_, buffer, std::min(sizeof(buffer), count - into->size()), 0);
      if (n <= 0) return false;
      into->append(buffer, static_cast<size_t>(n));
    }
    return true;
  }

  int fd_ = -1;
  int data_frames_ = 0;
};

int PortOf(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }

TEST(SecurityLimitsTest, NeverReadingClientIsCancelledAfterTheWriteTimeoutAndKvIsFreed) {
  constexpr absl::Duration kWriteTimeout = absl::Seconds(1);
  ServerOptions options = TestOptions();
  options.write_timeout = kWriteTimeout;
  std::unique_ptr<KvServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto stub = v1::Inference::NewStub(kvserve::testing::Connect(server->address()));
  const CompleteResult reference = Complete(*stub, Greedy("Once upon a time", 64));
  ASSERT_TRUE(reference.status.ok()) << reference.status.error_message();

  NeverReadingClient stalled;
  v1::GenerateRequest request;
  *request.mutable_params() = Greedy("Once upon a time", 500);
  const absl::Time opened = absl::Now();
  ASSERT_TRUE(stalled.Open(PortOf(server->address()), request));

  // Good requests alongside are unaffected.
  std::vector<CompleteResult> good(3);
  std::vector<std::thread> threads;
  for (CompleteResult& result : good) {
    threads.emplace_back([&] { result = Complete(*stub, Greedy("Once upon a time", 64)); });
  }

  const std::optional<std::string> end = stalled.WaitForStreamEnd(absl::Seconds(30));
  const absl::Duration took = absl::Now() - opened;
  for (std::thread& thread : threads) thread.join();
  ASSERT_TRUE(end.has_value()) << "the server never gave up on the stalled stream";
  // gRPC ends a server-cancelled stream with CANCELLED trailers and/or RST_STREAM(CANCEL).
  EXPECT_THAT(*end, ::testing::AnyOf("END_STREAM", "RST_STREAM 8"));
  EXPECT_GE(took, kWriteTimeout * 0.9);
  EXPECT_EQ(stalled.data_frames(), 0);
  for (const CompleteResult& result : good) {
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_THAT(result.response.token_ids(),
                ::testing::ElementsAreArray(reference.response.token_ids()));
  }
  // Nothing of the stalled request is left in the engine.
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while ((server->stats().running > 0 || server->stats().kv_blocks_used > 0) &&
         absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(server->stats().running, 0);
  EXPECT_EQ(server->stats().kv_blocks_used, 0);
  // And the server goes on serving.
  EXPECT_TRUE(Complete(*stub, Greedy("Once upon a time", 8)).status.ok());
  server->Shutdown(absl::Seconds(1));
}

// A client whose connection drops mid-stream (no RST_STREAM, no cancel: the socket just
// closes, as when a client process dies) must not keep its sequence running: the server sees
// the transport close, cancels the request and frees its KV long before the request could
// have finished (500 tokens take at least 500 engine steps), and serving goes on.
TEST(SecurityLimitsTest, ClientDisconnectMidStreamStopsItsRequestAndFreesKv) {
  ServerOptions options = TestOptions();
  options.write_timeout = absl::Seconds(120);  // Far beyond the checks below.
  std::unique_ptr<KvServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto stub = v1::Inference::NewStub(kvserve::testing::Connect(server->address()));
  const CompleteResult reference = Complete(*stub, Greedy("Once upon a time", 64));
  ASSERT_TRUE(reference.status.ok()) << reference.status.error_message();
  const int64_t steps_before = server->stats().steps;

  NeverReadingClient client;
  v1::GenerateRequest request;
  constexpr int kMaxTokens = 500;
  *request.mutable_params() = Greedy("Once upon a time", kMaxTokens);
  ASSERT_TRUE(client.Open(PortOf(server->address()), request));
  absl::Time until = absl::Now() + absl::Seconds(30);
  while (server->stats().running == 0 && absl::Now() < until) {
    absl::SleepFor(absl::Microseconds(200));
  }
  ASSERT_EQ(server->stats().running, 1);
  client.Disconnect();

  until = absl::Now() + absl::Seconds(20);
  while ((server->stats().running > 0 || server->stats().kv_blocks_used > 0) &&
         absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(server->stats().running, 0);
  EXPECT_EQ(server->stats().kv_blocks_used, 0);
  // Cut short: had the request run on, its 500 tokens would have taken 500 steps.
  EXPECT_LT(server->stats().steps - steps_before, kMaxTokens * 4 / 5);
  const CompleteResult after = Complete(*stub, Greedy("Once upon a time", 64));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_THAT(after.response.token_ids(),
              ::testing::ElementsAreArray(reference.response.token_ids()));
  server->Shutdown(absl::Seconds(1));
}

}  // namespace
}  // namespace kvserve::server
