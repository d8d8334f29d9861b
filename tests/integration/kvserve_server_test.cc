// Integration: a real KvServer (engine, queue, engine loop, gRPC) on 127.0.0.1:0 with the
// test model, driven by real gRPC clients over loopback.
#include "server/grpc/kvserve_server.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "grpcpp/generic/generic_stub.h"
#include "kvserve/v1/kvserve.grpc.pb.h"
#include "tests/integration/test_client.h"

namespace kvserve::server {
namespace {

using ::kvserve::testing::Complete;
using ::kvserve::testing::CompleteResult;
using ::kvserve::testing::Generate;
using ::kvserve::testing::GenerateResult;
using ::kvserve::testing::Reference;
using ::testing::Contains;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

const std::string& ModelPath() {
  static const std::string* const kPath =
      new std::string(std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf");
  return *kPath;
}

ServerOptions TestOptions() {
  ServerOptions options;
  options.model_path = ModelPath();
  options.listen_address = "127.0.0.1:0";
  options.metrics_listen = "127.0.0.1:0";
  options.threads = 1;
  return options;
}

v1::GenerationParams Greedy(const std::string& prompt, int32_t max_tokens) {
  v1::GenerationParams params;
  params.set_prompt(prompt);
  params.set_max_tokens(max_tokens);
  return params;
}

// One server for the suite: starting it loads the model once.
class KvServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<Reference> reference = kvserve::testing::LoadReference();
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = std::make_unique<Reference>(*std::move(reference));
    absl::StatusOr<std::unique_ptr<KvServer>> server = KvServer::Create(TestOptions());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = kvserve::testing::Connect(server_->address());
    stub_ = v1::Inference::NewStub(channel_);
  }
  static void TearDownTestSuite() {
    stub_.reset();
    channel_.reset();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5));
    server_.reset();
  }

  void SetUp() override { ASSERT_NE(server_, nullptr); }

  static v1::GenerationParams ReferenceParams() {
    return Greedy(reference_->prompt, static_cast<int32_t>(reference_->generated_ids.size()));
  }

  static inline std::unique_ptr<Reference> reference_;
  static inline std::unique_ptr<KvServer> server_;
  static inline std::shared_ptr<grpc::Channel> channel_;
  static inline std::unique_ptr<v1::Inference::Stub> stub_;
};

TEST_F(KvServerTest, AddressIsLoopbackWithSelectedPort) {
  EXPECT_THAT(server_->address(), ::testing::StartsWith("127.0.0.1:"));
  EXPECT_NE(server_->address(), "127.0.0.1:0");
}

TEST_F(KvServerTest, GenerateStreamsTheGreedyReference) {
  const GenerateResult result = Generate(*stub_, ReferenceParams());
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_THAT(result.token_ids, ElementsAreArray(reference_->generated_ids));
  EXPECT_EQ(result.text, reference_->generated_text);
  EXPECT_EQ(result.finish_reason, v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(result.usage.prompt_tokens(), 5);
  EXPECT_EQ(result.usage.completion_tokens(), 64);
  // Only the last chunk carries a finish reason and usage.
  ASSERT_FALSE(result.chunks.empty());
  for (size_t i = 0; i + 1 < result.chunks.size(); ++i) {
    EXPECT_EQ(result.chunks[i].finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
    EXPECT_FALSE(result.chunks[i].has_usage());
  }
}

TEST_F(KvServerTest, CompleteGivesTheGreedyReference) {
  const CompleteResult result = Complete(*stub_, ReferenceParams());
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_THAT(result.response.token_ids(), ElementsAreArray(reference_->generated_ids));
  EXPECT_EQ(result.response.text(), reference_->generated_text);
  EXPECT_EQ(result.response.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(result.response.usage().prompt_tokens(), 5);
  EXPECT_EQ(result.response.usage().completion_tokens(), 64);
}

TEST_F(KvServerTest, TokenIdPromptGivesTheSameResult) {
  v1::GenerationParams params = ReferenceParams();
  params.clear_prompt();
  for (int32_t id : reference_->prompt_ids) params.add_prompt_token_ids(id);
  const CompleteResult result = Complete(*stub_, params);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_THAT(result.response.token_ids(), ElementsAreArray(reference_->generated_ids));
}

TEST_F(KvServerTest, Tokenize) {
  grpc::ClientContext context;
  v1::TokenizeRequest request;
  request.set_text(reference_->prompt);
  v1::TokenizeResponse response;
  const grpc::Status status = stub_->Tokenize(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(response.token_ids(), ElementsAreArray(reference_->prompt_ids));
  ASSERT_EQ(response.pieces_size(), response.token_ids_size());
  EXPECT_EQ(response.pieces(1), " Once");
}

TEST_F(KvServerTest, GetModelInfo) {
  grpc::ClientContext context;
  v1::GetModelInfoResponse info;
  const grpc::Status status = stub_->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(info.name(), "stories260K");
  EXPECT_EQ(info.architecture(), "llama");
  EXPECT_EQ(info.format(), "gguf");
  EXPECT_EQ(info.vocab_size(), 512);
  EXPECT_EQ(info.context_length(), 512);
  EXPECT_EQ(info.embedding_dim(), 64);
  EXPECT_EQ(info.layers(), 5);
  EXPECT_EQ(info.heads(), 8);
  EXPECT_EQ(info.kv_heads(), 4);
  EXPECT_GT(info.parameters(), 0);
  EXPECT_EQ(info.bos_token_id(), 1);
  EXPECT_EQ(info.eos_token_id(), 2);
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_EQ(info.max_tokens_limit(), 512);
  // The bundled file stores f32 matrices: --weight-type auto keeps them f32.
  EXPECT_EQ(info.weight_type(), "f32");
  EXPECT_EQ(info.kv_dtype(), "f32");
  EXPECT_EQ(info.default_kv_policy(), "full");
}

// --weight-type, --kv-dtype and --kv-policy reach the engine: GetModelInfo reports what it
// runs, and generation works in that configuration.
TEST(KvServerConfigTest, StorageFlagsReachTheEngineAndModelInfo) {
  ServerOptions options = TestOptions();
  options.weight_type = engine::WeightType::kBf16;
  options.kv_dtype = engine::KvDtype::kInt8;
  options.kv_policy = "h2o:keep=0.5";
  absl::StatusOr<std::unique_ptr<KvServer>> created = KvServer::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  auto stub = v1::Inference::NewStub(kvserve::testing::Connect((*created)->address()));

  grpc::ClientContext context;
  v1::GetModelInfoResponse info;
  ASSERT_TRUE(stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.weight_type(), "bf16");
  EXPECT_EQ(info.kv_dtype(), "int8");
  EXPECT_THAT(info.default_kv_policy(), ::testing::StartsWith("h2o:"));
  EXPECT_THAT(info.default_kv_policy(), HasSubstr("keep=0.5"));

  const CompleteResult result = Complete(*stub, Greedy("Once upon a time", 16));
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.response.usage().completion_tokens(), 16);
  (*created)->Shutdown(absl::Seconds(5));
}

TEST_F(KvServerTest, GetModelInfoOfAnotherModelIsNotFound) {
  grpc::ClientContext context;
  v1::GetModelInfoRequest request;
  request.set_model("llama-3-8b");
  v1::GetModelInfoResponse info;
  const grpc::Status status = stub_->GetModelInfo(&context, request, &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("'llama-3-8b' is not served"));
}

TEST_F(KvServerTest, HealthIsServing) {
  EXPECT_EQ(kvserve::testing::HealthCheck(*channel_, "").value_or("error"), "SERVING");
  EXPECT_EQ(kvserve::testing::HealthCheck(*channel_, "kvserve.v1.Inference").value_or("error"),
            "SERVING");
  EXPECT_EQ(kvserve::testing::HealthCheck(*channel_, "no.such.Service").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(KvServerTest, ReflectionListsServices) {
  absl::StatusOr<std::vector<std::string>> services =
      kvserve::testing::ReflectionListServices(*channel_);
  ASSERT_TRUE(services.ok()) << services.status();
  EXPECT_THAT(*services, Contains("kvserve.v1.Inference"));
  EXPECT_THAT(*services, Contains("grpc.health.v1.Health"));
  EXPECT_THAT(*services, Contains("grpc.reflection.v1alpha.ServerReflection"));
}

TEST_F(KvServerTest, StopStringEndsBeforeTheString) {
  v1::GenerationParams params = ReferenceParams();
  params.add_stop("Lily");
  const GenerateResult result = Generate(*stub_, params);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.finish_reason, v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(result.text, ", there was a little girl named ");
  EXPECT_EQ(result.usage.prompt_tokens(), 5);

  const CompleteResult complete = Complete(*stub_, params);
  ASSERT_TRUE(complete.status.ok()) << complete.status.error_message();
  EXPECT_EQ(complete.response.finish_reason(), v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(complete.response.text(), ", there was a little girl named ");
}

TEST_F(KvServerTest, ContextLengthFinish) {
  // 500 prompt tokens leave 12 positions of the 512-token context.
  v1::GenerationParams params;
  params.add_prompt_token_ids(1);
  for (int i = 1; i < 500; ++i) params.add_prompt_token_ids(reference_->generated_ids[i % 64]);
  params.set_max_tokens(100);
  const GenerateResult result = Generate(*stub_, params);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.finish_reason, v1::FINISH_REASON_CONTEXT_LENGTH);
  EXPECT_EQ(result.usage.prompt_tokens(), 500);
  EXPECT_EQ(result.usage.completion_tokens(), 12);
  EXPECT_EQ(result.token_ids.size(), 12u);
}

TEST_F(KvServerTest, DeadlineExceeded) {
  // A deadline far shorter than the generation.
  const GenerateResult stream =
      Generate(*stub_, Greedy(reference_->prompt, 500), absl::Milliseconds(2));
  EXPECT_EQ(stream.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  const CompleteResult unary =
      Complete(*stub_, Greedy(reference_->prompt, 500), absl::Milliseconds(2));
  EXPECT_EQ(unary.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server carries on.
  const CompleteResult after = Complete(*stub_, ReferenceParams());
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_THAT(after.response.token_ids(), ElementsAreArray(reference_->generated_ids));
}

TEST_F(KvServerTest, CancelMidStreamDoesNotDisturbOthers) {
  // Several long streams that the client abandons after the first chunk, while reference
  // requests run alongside.
  std::vector<std::thread> threads;
  std::vector<grpc::Status> cancelled_status(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
      v1::GenerateRequest request;
      v1::GenerationParams* params = request.mutable_params();
      params->set_prompt("Once upon a time");
      params->set_max_tokens(500);
      params->mutable_sampling()->set_temperature(1.0f);
      params->mutable_sampling()->set_seed(100 + i);
      auto reader = stub_->Generate(&context, request);
      v1::GenerateResponse chunk;
      reader->Read(&chunk);
      context.TryCancel();
      while (reader->Read(&chunk)) {
      }
      cancelled_status[i] = reader->Finish();
    });
  }
  std::vector<CompleteResult> good(3);
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] { good[i] = Complete(*stub_, ReferenceParams()); });
  }
  for (auto& thread : threads) thread.join();
  for (const grpc::Status& status : cancelled_status) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
  }
  for (const CompleteResult& result : good) {
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_THAT(result.response.token_ids(), ElementsAreArray(reference_->generated_ids));
  }
  // The engine let go of the cancelled sequences.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (server_->stats().running > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(server_->stats().running, 0);
}

// One row of the error table: how to spoil the reference request, and what must come back.
struct BadRequestCase {
  std::string name;
  std::function<void(v1::GenerationParams&)> spoil;
  grpc::StatusCode code;
  std::string message_part;
};

// Test names print the row name, not the struct's bytes.
void PrintTo(const BadRequestCase& c, std::ostream* os) { *os << c.name; }

class KvServerBadRequestTest : public KvServerTest,
                               public ::testing::WithParamInterface<BadRequestCase> {};

TEST_P(KvServerBadRequestTest, GenerateAndCompleteRejectWhileAGoodRequestRuns) {
  const BadRequestCase& c = GetParam();
  v1::GenerationParams bad = ReferenceParams();
  c.spoil(bad);
  // A good request runs alongside the bad ones and must be untouched by them.
  CompleteResult good;
  std::thread good_thread([&] { good = Complete(*stub_, ReferenceParams()); });

  const GenerateResult stream = Generate(*stub_, bad);
  EXPECT_EQ(stream.status.error_code(), c.code) << stream.status.error_message();
  EXPECT_THAT(stream.status.error_message(), HasSubstr(c.message_part));
  EXPECT_TRUE(stream.chunks.empty());
  const CompleteResult unary = Complete(*stub_, bad);
  EXPECT_EQ(unary.status.error_code(), c.code) << unary.status.error_message();
  EXPECT_THAT(unary.status.error_message(), HasSubstr(c.message_part));

  good_thread.join();
  ASSERT_TRUE(good.status.ok()) << good.status.error_message();
  EXPECT_THAT(good.response.token_ids(), ElementsAreArray(reference_->generated_ids));
  EXPECT_EQ(good.response.text(), reference_->generated_text);
}

INSTANTIATE_TEST_SUITE_P(
    ErrorTable, KvServerBadRequestTest,
    ::testing::Values(
        BadRequestCase{"unknown_model", [](auto& p) { p.set_model("gpt-5"); },
                       grpc::StatusCode::NOT_FOUND,
                       "model 'gpt-5' is not served; this server serves 'stories260K'"},
        BadRequestCase{"empty_prompt", [](auto& p) { p.clear_prompt(); },
                       grpc::StatusCode::INVALID_ARGUMENT, "prompt is empty"},
        BadRequestCase{"both_prompts", [](auto& p) { p.add_prompt_token_ids(1); },
                       grpc::StatusCode::INVALID_ARGUMENT, "exactly one"},
        BadRequestCase{"token_out_of_range",
                       [](auto& p) {
                         p.clear_prompt();
                         p.add_prompt_token_ids(1);
                         p.add_prompt_token_ids(600);
                       },
                       grpc::StatusCode::INVALID_ARGUMENT, "prompt_token_ids[1] = 600"},
        BadRequestCase{"prompt_too_long",
                       [](auto& p) {
                         p.clear_prompt();
                         for (int i = 0; i < 700; ++i) p.add_prompt_token_ids(300);
                       },
                       grpc::StatusCode::INVALID_ARGUMENT,
                       "prompt has 700 tokens; this model's context is 512 tokens"},
        BadRequestCase{"max_tokens_over_limit", [](auto& p) { p.set_max_tokens(513); },
                       grpc::StatusCode::INVALID_ARGUMENT, "[1, 512]"},
        BadRequestCase{"negative_max_tokens", [](auto& p) { p.set_max_tokens(-5); },
                       grpc::StatusCode::INVALID_ARGUMENT, "max_tokens is -5"},
        BadRequestCase{"negative_temperature",
                       [](auto& p) { p.mutable_sampling()->set_temperature(-1.0f); },
                       grpc::StatusCode::INVALID_ARGUMENT, "temperature"},
        BadRequestCase{"top_p_over_one", [](auto& p) { p.mutable_sampling()->set_top_p(2.0f); },
                       grpc::StatusCode::INVALID_ARGUMENT, "top_p"},
        BadRequestCase{"negative_top_k", [](auto& p) { p.mutable_sampling()->set_top_k(-1); },
                       grpc::StatusCode::INVALID_ARGUMENT, "top_k"},
        BadRequestCase{"stop_string_too_long",
                       [](auto& p) { p.add_stop(std::string(1000, 's')); },
                       grpc::StatusCode::INVALID_ARGUMENT, "stop[0] is 1000 bytes"},
        BadRequestCase{"thousands_of_stop_strings",
                       [](auto& p) {
                         for (int i = 0; i < 5000; ++i) p.add_stop("stop" + std::to_string(i));
                       },
                       grpc::StatusCode::INVALID_ARGUMENT,
                       "5000 stop strings given; at most 64 are allowed"},
        BadRequestCase{"empty_stop_string", [](auto& p) { p.add_stop(""); },
                       grpc::StatusCode::INVALID_ARGUMENT, "stop[0] is empty"},
        BadRequestCase{"nan_temperature",
                       [](auto& p) {
                         p.mutable_sampling()->set_temperature(
                             std::numeric_limits<float>::quiet_NaN());
                       },
                       grpc::StatusCode::INVALID_ARGUMENT, "temperature is nan"},
        BadRequestCase{"infinite_temperature",
                       [](auto& p) {
                         p.mutable_sampling()->set_temperature(
                             std::numeric_limits<float>::infinity());
                       },
                       grpc::StatusCode::INVALID_ARGUMENT, "temperature is inf"},
        BadRequestCase{"negative_top_p", [](auto& p) { p.mutable_sampling()->set_top_p(-0.5f); },
                       grpc::StatusCode::INVALID_ARGUMENT, "top_p is -0.5"},
        BadRequestCase{"nan_top_p",
                       [](auto& p) {
                         p.mutable_sampling()->set_top_p(std::numeric_limits<float>::quiet_NaN());
                       },
                       grpc::StatusCode::INVALID_ARGUMENT, "top_p"},
        BadRequestCase{"negative_token_id",
                       [](auto& p) {
                         p.clear_prompt();
                         p.add_prompt_token_ids(1);
                         p.add_prompt_token_ids(-3);
                       },
                       grpc::StatusCode::INVALID_ARGUMENT, "prompt_token_ids[1] = -3"},
        // `prompt` is proto `bytes`, so invalid UTF-8 reaches the server's own check.
        BadRequestCase{"invalid_utf8_prompt", [](auto& p) { p.set_prompt("Once \xff\xfe time"); },
                       grpc::StatusCode::INVALID_ARGUMENT,
                       "prompt is not valid UTF-8 (byte offset 5)"},
        BadRequestCase{"truncated_utf8_prompt",
                       [](auto& p) { p.set_prompt("Once upon \xE2\x82"); },
                       grpc::StatusCode::INVALID_ARGUMENT,
                       "prompt is not valid UTF-8 (byte offset 10)"},
        BadRequestCase{"malformed_kv_policy", [](auto& p) { p.set_kv_policy("h2o:keep=banana"); },
                       grpc::StatusCode::INVALID_ARGUMENT, "h2o"},
        BadRequestCase{"unknown_kv_policy", [](auto& p) { p.set_kv_policy("/etc/passwd"); },
                       grpc::StatusCode::INVALID_ARGUMENT, "/etc/passwd"}),
    [](const ::testing::TestParamInfo<BadRequestCase>& info) { return info.param.name; });

TEST_F(KvServerTest, TokenizeErrors) {
  grpc::ClientContext context;
  v1::TokenizeRequest request;
  request.set_model("other");
  request.set_text("hi");
  v1::TokenizeResponse response;
  EXPECT_EQ(stub_->Tokenize(&context, request, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext context2;
  request.clear_model();
  // Invalid UTF-8 cannot even be sent (protobuf refuses to serialize it); size is checked.
  request.set_text(std::string(3 << 20, 'a'));
  const grpc::Status status = stub_->Tokenize(&context2, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("text is 3145728 bytes"));
}

TEST_F(KvServerTest, InvalidUtf8PromptIsRefusedAndOthersAreUnaffected) {
  // As a client built from the schema's earlier `string prompt` would send it (the wire
  // format is the same; such a client cannot serialize it, other languages' clients can), in
  // raw bytes: CompleteRequest{params: {prompt: "Once \xff\xfe time", max_tokens: 8}}.
  const std::string prompt = "Once \xff\xfe time";
  std::string params;
  params.push_back(0x12);  // field 2 (prompt), length-delimited
  params.push_back(static_cast<char>(prompt.size()));
  params += prompt;
  params += std::string("\x20\x08", 2);  // field 4 (max_tokens) = 8
  std::string request_bytes;
  request_bytes.push_back(0x0a);  // field 1 (params), length-delimited
  request_bytes.push_back(static_cast<char>(params.size()));
  request_bytes += params;

  CompleteResult good;
  std::thread good_thread([&] { good = Complete(*stub_, ReferenceParams()); });
  grpc::GenericStub generic(channel_);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  absl::Notification done;
  grpc::Status status;
  generic.UnaryCall(&context, "/kvserve.v1.Inference/Complete", grpc::StubOptions(), &request,
                    &response, [&](grpc::Status s) {
                      status = std::move(s);
                      done.Notify();
                    });
  done.WaitForNotification();
  // `prompt` is `bytes` (not `string`, whose parser would refuse the message before any
  // handler runs, an UNIMPLEMENTED/INTERNAL error): the server's own check names the byte.
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("prompt is not valid UTF-8 (byte offset 5)"));
  good_thread.join();
  ASSERT_TRUE(good.status.ok()) << good.status.error_message();
  EXPECT_THAT(good.response.token_ids(), ElementsAreArray(reference_->generated_ids));
}

TEST_F(KvServerTest, MaxTokensZeroMeansTheServerDefault) {
  // Not an error: 0 (the proto default) asks for --default-max-tokens (256 here).
  const CompleteResult result = Complete(*stub_, Greedy(reference_->prompt, 0));
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.response.usage().completion_tokens(), 256);
  EXPECT_EQ(result.response.finish_reason(), v1::FINISH_REASON_LENGTH);
}

// --- Servers of their own -------------------------------------------------------------------

TEST(KvServerLimitsTest, QueueFullIsUnavailableAndRetryable) {
  ServerOptions options = TestOptions();
  options.max_running = 1;
  options.max_queued_requests = 1;
  absl::StatusOr<std::unique_ptr<KvServer>> server = KvServer::Create(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::Inference::NewStub(kvserve::testing::Connect((*server)->address()));

  // Far more simultaneous long requests than one running + one waiting slot.
  constexpr int kRequests = 12;
  std::vector<CompleteResult> results(kRequests);
  std::vector<std::thread> threads;
  absl::Notification go;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      go.WaitForNotification();
      results[i] = Complete(*stub, Greedy("Once upon a time", 400));
    });
  }
  go.Notify();
  for (auto& thread : threads) thread.join();
  int ok = 0, refused = 0;
  for (const CompleteResult& result : results) {
    if (result.status.ok()) {
      ++ok;
    } else {
      ++refused;
      EXPECT_EQ(result.status.error_code(), grpc::StatusCode::UNAVAILABLE);
      EXPECT_THAT(result.status.error_message(), HasSubstr("queue full"));
      EXPECT_THAT(result.status.error_message(), HasSubstr("retry"));
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(refused, 1);
  (*server)->Shutdown(absl::Seconds(5));
}

TEST(KvServerDrainTest, DrainFinishesAdmittedWorkAndRefusesNew) {
  ServerOptions options = TestOptions();
  options.max_running = 1;  // Queued work keeps the drain busy for a while.
  absl::StatusOr<std::unique_ptr<KvServer>> created = KvServer::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  KvServer& server = **created;
  std::shared_ptr<grpc::Channel> channel = kvserve::testing::Connect(server.address());
  auto stub = v1::Inference::NewStub(channel);

  // Enough queued work (one sequence at a time) to keep the drain busy for a while, little
  // enough to finish quickly on a loaded machine.
  constexpr int kRequests = 3;
  std::vector<GenerateResult> results(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] { results[i] = Generate(*stub, Greedy("Once upon a time", 200)); });
  }
  // Wait until they are all in (running or queued).
  const absl::Time wait_until = absl::Now() + absl::Seconds(20);
  while (server.stats().running + server.stats().waiting < kRequests &&
         absl::Now() < wait_until) {
    absl::SleepFor(absl::Milliseconds(1));
  }

  std::thread drainer([&] { server.Shutdown(absl::Seconds(120)); });
  // Health turns NOT_SERVING first; the queue closes right after.
  const absl::Time health_until = absl::Now() + absl::Seconds(20);
  absl::StatusOr<std::string> health = kvserve::testing::HealthCheck(*channel, "");
  while (health.ok() && *health == "SERVING" && absl::Now() < health_until) {
    health = kvserve::testing::HealthCheck(*channel, "");
  }
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, "NOT_SERVING");
  absl::SleepFor(absl::Milliseconds(5));
  const CompleteResult refused = Complete(*stub, Greedy("Once upon a time", 8));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("server is shutting down"));

  drainer.join();
  for (auto& thread : threads) thread.join();
  for (const GenerateResult& result : results) {
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.finish_reason, v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(result.token_ids.size(), 200u);
  }
}

TEST(KvServerFaultTest, DeadlineWhileQueuedIsDeadlineExceeded) {
  ServerOptions options = TestOptions();
  options.max_running = 1;  // A second request must wait.
  absl::StatusOr<std::unique_ptr<KvServer>> created = KvServer::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  KvServer& server = **created;
  auto stub = v1::Inference::NewStub(kvserve::testing::Connect(server.address()));

  // Four long requests one at a time keep the queue busy far longer than the deadline.
  constexpr int kAhead = 4;
  std::vector<GenerateResult> ahead(kAhead);
  std::vector<std::thread> runners;
  for (GenerateResult& result : ahead) {
    runners.emplace_back([&] { result = Generate(*stub, Greedy("Once upon a time", 500)); });
  }
  const absl::Time until = absl::Now() + absl::Seconds(20);
  while (server.stats().waiting < kAhead - 1 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_EQ(server.stats().running, 1);
  ASSERT_GE(server.stats().waiting, 1);

  const absl::Time sent = absl::Now();
  const CompleteResult queued =
      Complete(*stub, Greedy("Once upon a time", 8), absl::Milliseconds(50));
  EXPECT_EQ(queued.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << queued.status.error_message() << " after " << absl::Now() - sent;
  for (std::thread& runner : runners) runner.join();
  for (const GenerateResult& result : ahead) {
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.token_ids.size(), 500u);
  }
  // The expired request left the queue without ever holding KV.
  const absl::Time drained = absl::Now() + absl::Seconds(10);
  while ((server.stats().waiting > 0 || server.stats().kv_blocks_used > 0) &&
         absl::Now() < drained) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(server.stats().waiting, 0);
  EXPECT_EQ(server.stats().kv_blocks_used, 0);
  server.Shutdown(absl::Seconds(1));
}

TEST(KvServerFaultTest, KvExhaustionWithPreemptionWhileClientsDisconnect) {
  ServerOptions options = TestOptions();
  options.kv_cache_mb = 1;  // ~800 tokens of KV for ~3200 tokens of demand: preemption.
  absl::StatusOr<std::unique_ptr<KvServer>> created = KvServer::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  KvServer& server = **created;
  auto channel = kvserve::testing::Connect(server.address());
  auto stub = v1::Inference::NewStub(channel);

  constexpr int kStreams = 8;
  std::vector<grpc::Status> statuses(kStreams);
  std::vector<int> tokens(kStreams, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
      v1::GenerateRequest request;
      v1::GenerationParams* params = request.mutable_params();
      params->set_prompt("Once upon a time");
      params->set_max_tokens(400);
      params->mutable_sampling()->set_temperature(1.0f);
      params->mutable_sampling()->set_seed(7 + i);
      auto reader = stub->Generate(&context, request);
      v1::GenerateResponse chunk;
      // Odd streams walk away after some tokens, at different points. Counted in tokens, not
      // chunks: under load the server packs several tokens into one chunk, and a stream
      // counting chunks could reach its end first.
      const int give_up_after = i % 2 == 1 ? 5 + 20 * i : -1;
      bool cancelled = false;
      while (reader->Read(&chunk)) {
        tokens[i] += chunk.token_ids_size();
        if (!cancelled && give_up_after > 0 && tokens[i] >= give_up_after) {
          context.TryCancel();
          cancelled = true;
        }
      }
      statuses[i] = reader->Finish();
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < kStreams; ++i) {
    if (i % 2 == 1) {
      EXPECT_EQ(statuses[i].error_code(), grpc::StatusCode::CANCELLED)
          << i << ": " << statuses[i].error_message();
    } else {
      EXPECT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].error_message();
      EXPECT_EQ(tokens[i], 400) << i;
    }
  }
  EXPECT_GT(server.stats().preemptions, 0);
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while ((server.stats().running > 0 || server.stats().kv_blocks_used > 0) &&
         absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(server.stats().running, 0);
  EXPECT_EQ(server.stats().kv_blocks_used, 0);
  // Still serving.
  EXPECT_TRUE(Complete(*stub, Greedy("Once upon a time", 8)).status.ok());
  server.Shutdown(absl::Seconds(1));
}

TEST(KvServerStartupTest, MissingModelIsAClearError) {
  ServerOptions options = TestOptions();
  options.model_path = "/nonexistent/model.gguf";
  absl::StatusOr<std::unique_ptr<KvServer>> server = KvServer::Create(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("/nonexistent/model.gguf"));
}

TEST(KvServerStartupTest, CorruptModelIsAClearError) {
  ServerOptions options = TestOptions();
  // Not a model: the reference JSON.
  options.model_path =
      std::string(KVSERVE_SOURCE_DIR) + "/tests/testdata/stories260K_reference.json";
  absl::StatusOr<std::unique_ptr<KvServer>> server = KvServer::Create(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << server.status();
}

TEST(KvServerStartupTest, AddressInUseIsAClearError) {
  absl::StatusOr<std::unique_ptr<KvServer>> first = KvServer::Create(TestOptions());
  ASSERT_TRUE(first.ok()) << first.status();
  ServerOptions options = TestOptions();
  options.listen_address = (*first)->address();
  absl::StatusOr<std::unique_ptr<KvServer>> second = KvServer::Create(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr((*first)->address()));
  (*first)->Shutdown(absl::Seconds(1));
}

}  // namespace
}  // namespace kvserve::server
