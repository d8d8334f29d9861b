// Integration: the KServe v2 (Open Inference Protocol) service of a real in-process KvServer
// on 127.0.0.1:0, next to kvserve.v1 on the same port. The same request through both APIs
// must give the same tokens and text (greedy and seeded sampling, unary and streaming);
// cancelling a KServe stream must free its request in the engine (counted as cancelled in
// /metrics) without disturbing others; ServerReady turns false while the server drains; the
// health service knows the KServe service name.
// (The independent Python client in kserve_python_client_test.cc covers the protocol
// surface: metadata, tensor forms, bad tensors, final-response flags.)
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.grpc.pb.h"
#include "kvserve/v1/kvserve.grpc.pb.h"
#include "server/grpc/kserve_service.h"
#include "server/grpc/kvserve_server.h"
#include "tests/integration/test_client.h"
#include "tests/server/metrics/metrics_test_support.h"

namespace kvserve::server {
namespace {

using ::kvserve::testing::Reference;
using ::testing::ElementsAreArray;

ServerOptions TestOptions() {
  ServerOptions options;
  options.model_path = std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf";
  options.listen_address = "127.0.0.1:0";
  options.metrics_listen = "127.0.0.1:0";
  options.threads = 1;
  return options;
}

// One generation request, expressed in both APIs.
struct Case {
  std::string name;
  std::string prompt;
  int32_t max_tokens = 0;
  float temperature = 0;
  int32_t top_k = 0;
  float top_p = 0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
};

v1::GenerationParams V1Params(const Case& c) {
  v1::GenerationParams params;
  params.set_prompt(c.prompt);
  params.set_max_tokens(c.max_tokens);
  params.mutable_sampling()->set_temperature(c.temperature);
  params.mutable_sampling()->set_top_k(c.top_k);
  params.mutable_sampling()->set_top_p(c.top_p);
  params.mutable_sampling()->set_seed(c.seed);
  for (const std::string& stop : c.stop) params.add_stop(stop);
  return params;
}

inference::ModelInferRequest::InferInputTensor* AddInput(inference::ModelInferRequest* request,
                                                         const std::string& name,
                                                         const std::string& datatype) {
  inference::ModelInferRequest::InferInputTensor* input = request->add_inputs();
  input->set_name(name);
  input->set_datatype(datatype);
  input->add_shape(1);
  return input;
}

inference::ModelInferRequest KServeRequest(const Case& c, const std::string& id = "") {
  inference::ModelInferRequest request;
  request.set_id(id);
  AddInput(&request, "text_input", "BYTES")->mutable_contents()->add_bytes_contents(c.prompt);
  AddInput(&request, "max_tokens", "INT32")->mutable_contents()->add_int_contents(c.max_tokens);
  AddInput(&request, "temperature", "FP32")
      ->mutable_contents()
      ->add_fp32_contents(c.temperature);
  AddInput(&request, "top_k", "INT64")->mutable_contents()->add_int64_contents(c.top_k);
  AddInput(&request, "top_p", "FP64")->mutable_contents()->add_fp64_contents(c.top_p);
  AddInput(&request, "seed", "UINT64")->mutable_contents()->add_uint64_contents(c.seed);
  if (!c.stop.empty()) {
    inference::ModelInferRequest::InferInputTensor* stop =
        AddInput(&request, "stop_words", "BYTES");
    stop->set_shape(0, static_cast<int64_t>(c.stop.size()));
    for (const std::string& s : c.stop) stop->mutable_contents()->add_bytes_contents(s);
  }
  return request;
}

// text_output and output_ids of a typed response.
struct Output {
  std::string text;
  std::vector<int32_t> ids;
};

Output OutputOf(const inference::ModelInferResponse& response) {
  Output output;
  for (const auto& tensor : response.outputs()) {
    if (tensor.name() == "text_output" && tensor.contents().bytes_contents_size() == 1) {
      output.text = tensor.contents().bytes_contents(0);
    } else if (tensor.name() == "output_ids") {
      output.ids.assign(tensor.contents().int_contents().begin(),
                        tensor.contents().int_contents().end());
    }
  }
  return output;
}

bool FinalFlag(const inference::ModelInferResponse& response) {
  const auto it = response.parameters().find(kFinalResponseParameter);
  return it != response.parameters().end() && it->second.bool_param();
}

std::unique_ptr<grpc::ClientContext> ContextWithDeadline() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  return context;
}

class KServeServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<Reference> reference = kvserve::testing::LoadReference();
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = std::make_unique<Reference>(*std::move(reference));
    absl::StatusOr<std::unique_ptr<KvServer>> server = KvServer::Create(TestOptions());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = kvserve::testing::Connect(server_->address());
    v1_ = v1::Inference::NewStub(channel_);
    kserve_ = inference::GRPCInferenceService::NewStub(channel_);
  }
  static void TearDownTestSuite() {
    kserve_.reset();
    v1_.reset();
    channel_.reset();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5));
    server_.reset();
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  // The whole output of `request` on ModelStreamInfer, and whether its flags were right
  // (every response false but the last).
  static Output Stream(const inference::ModelInferRequest& request, int* responses) {
    std::unique_ptr<grpc::ClientContext> context = ContextWithDeadline();
    auto stream = kserve_->ModelStreamInfer(context.get());
    EXPECT_TRUE(stream->Write(request));
    EXPECT_TRUE(stream->WritesDone());
    Output all;
    inference::ModelStreamInferResponse response;
    std::vector<bool> flags;
    while (stream->Read(&response)) {
      EXPECT_EQ(response.error_message(), "");
      const Output chunk = OutputOf(response.infer_response());
      all.text += chunk.text;
      all.ids.insert(all.ids.end(), chunk.ids.begin(), chunk.ids.end());
      flags.push_back(FinalFlag(response.infer_response()));
    }
    const grpc::Status status = stream->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_FALSE(flags.empty());
    for (size_t i = 0; i < flags.size(); ++i) EXPECT_EQ(flags[i], i + 1 == flags.size()) << i;
    *responses = static_cast<int>(flags.size());
    return all;
  }

  static inline std::unique_ptr<Reference> reference_;
  static inline std::unique_ptr<KvServer> server_;
  static inline std::shared_ptr<grpc::Channel> channel_;
  static inline std::unique_ptr<v1::Inference::Stub> v1_;
  static inline std::unique_ptr<inference::GRPCInferenceService::Stub> kserve_;
};

TEST_F(KServeServerTest, ModelInferGivesTheGreedyReference) {
  const Case c{.prompt = reference_->prompt,
               .max_tokens = static_cast<int32_t>(reference_->generated_ids.size())};
  std::unique_ptr<grpc::ClientContext> context = ContextWithDeadline();
  inference::ModelInferResponse response;
  const grpc::Status status = kserve_->ModelInfer(context.get(), KServeRequest(c), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const Output output = OutputOf(response);
  EXPECT_THAT(output.ids, ElementsAreArray(reference_->generated_ids));
  EXPECT_EQ(output.text, reference_->generated_text);
}

TEST_F(KServeServerTest, HealthServiceKnowsTheKServeService) {
  EXPECT_EQ(kvserve::testing::HealthCheck(*channel_, kKServeServiceName).value_or("error"),
            "SERVING");
}

class KServeMatchesV1Test : public KServeServerTest,
                            public ::testing::WithParamInterface<Case> {};

TEST_P(KServeMatchesV1Test, UnaryAndStreamingEqualV1) {
  const Case& c = GetParam();
  const kvserve::testing::CompleteResult v1 = kvserve::testing::Complete(*v1_, V1Params(c));
  ASSERT_TRUE(v1.status.ok()) << v1.status.error_message();
  ASSERT_GT(v1.response.token_ids_size(), 0);

  std::unique_ptr<grpc::ClientContext> context = ContextWithDeadline();
  inference::ModelInferResponse response;
  const grpc::Status status =
      kserve_->ModelInfer(context.get(), KServeRequest(c, "unary"), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.id(), "unary");
  const Output unary = OutputOf(response);
  EXPECT_THAT(unary.ids, ElementsAreArray(v1.response.token_ids()));
  EXPECT_EQ(unary.text, v1.response.text());

  const kvserve::testing::GenerateResult v1_stream =
      kvserve::testing::Generate(*v1_, V1Params(c));
  ASSERT_TRUE(v1_stream.status.ok()) << v1_stream.status.error_message();
  int responses = 0;
  const Output streamed = Stream(KServeRequest(c, "streamed"), &responses);
  EXPECT_THAT(streamed.ids, ElementsAreArray(v1_stream.token_ids));
  EXPECT_EQ(streamed.text, v1_stream.text);
  // Output produced while a write is in flight goes out together, so how many responses a
  // generation takes depends on timing; a long one always comes in pieces.
  if (v1_stream.token_ids.size() >= 40) {
    EXPECT_GT(responses, 1);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Requests, KServeMatchesV1Test,
    ::testing::Values(
        Case{.name = "greedy_reference_prompt", .prompt = "Once upon a time", .max_tokens = 64},
        Case{.name = "greedy_other_prompt", .prompt = "The little dog", .max_tokens = 40},
        Case{.name = "seeded_sampling",
             .prompt = "Lily and Tom",
             .max_tokens = 48,
             .temperature = 0.8f,
             .top_k = 40,
             .top_p = 0.9f,
             .seed = 1234},
        Case{.name = "stop_words",
             .prompt = "Once upon a time",
             .max_tokens = 64,
             .stop = {"Lily"}}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

double CancelledRequests(const KvServer& server) {
  absl::StatusOr<testing::HttpResponse> response = testing::HttpGet(
      "http://127.0.0.1:" + std::to_string(server.metrics_port()) + "/metrics");
  if (!response.ok()) return -1;
  absl::StatusOr<testing::Exposition> parsed = testing::ParseExposition(response->body);
  if (!parsed.ok()) return -1;
  return parsed->Value("kvserve_requests_total", {{"finish_reason", "none"},
                                                  {"status", "cancelled"}})
      .value_or(0);
}

TEST_F(KServeServerTest, CancellingAStreamFreesItsRequestOnly) {
  // 400 greedy tokens run to the length limit (checked through v1), so the stream is still
  // generating when the client cancels after its first response.
  const Case long_case{.prompt = reference_->prompt, .max_tokens = 400};
  const kvserve::testing::CompleteResult full =
      kvserve::testing::Complete(*v1_, V1Params(long_case));
  ASSERT_TRUE(full.status.ok()) << full.status.error_message();
  ASSERT_EQ(full.response.finish_reason(), v1::FINISH_REASON_LENGTH);

  // A loaded machine may finish the whole generation before the cancel lands; then the
  // attempt proves nothing and is repeated.
  bool cancelled = false;
  for (int attempt = 0; attempt < 5 && !cancelled; ++attempt) {
    const double before = CancelledRequests(*server_);
    ASSERT_GE(before, 0);
    std::unique_ptr<grpc::ClientContext> context = ContextWithDeadline();
    auto stream = kserve_->ModelStreamInfer(context.get());
    ASSERT_TRUE(stream->Write(KServeRequest(long_case, "long")));
    inference::ModelStreamInferResponse response;
    ASSERT_TRUE(stream->Read(&response));
    context->TryCancel();
    while (stream->Read(&response)) {
    }
    const grpc::Status status = stream->Finish();
    if (status.error_code() != grpc::StatusCode::CANCELLED) continue;
    cancelled = true;
    // The engine dropped the request: it is counted as cancelled, nothing keeps running.
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (CancelledRequests(*server_) < before + 1 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_EQ(CancelledRequests(*server_), before + 1);
    while (server_->stats().running > 0 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_EQ(server_->stats().running, 0);
  }
  ASSERT_TRUE(cancelled) << "every attempt finished before its cancel";

  // Other requests are served as before.
  const Case c{.prompt = reference_->prompt,
               .max_tokens = static_cast<int32_t>(reference_->generated_ids.size())};
  int responses = 0;
  EXPECT_THAT(Stream(KServeRequest(c), &responses).ids,
              ElementsAreArray(reference_->generated_ids));
}

TEST(KServeDrainTest, NotReadyWhileDraining) {
  absl::StatusOr<std::unique_ptr<KvServer>> server = KvServer::Create(TestOptions());
  ASSERT_TRUE(server.ok()) << server.status();
  std::shared_ptr<grpc::Channel> channel = kvserve::testing::Connect((*server)->address());
  auto kserve = inference::GRPCInferenceService::NewStub(channel);
  auto v1 = v1::Inference::NewStub(channel);

  const auto ready = [&](bool* value) {
    std::unique_ptr<grpc::ClientContext> context = ContextWithDeadline();
    inference::ServerReadyResponse response;
    const grpc::Status status =
        kserve->ServerReady(context.get(), inference::ServerReadyRequest(), &response);
    *value = response.ready();
    return status.ok();
  };
  bool is_ready = false;
  ASSERT_TRUE(ready(&is_ready));
  EXPECT_TRUE(is_ready);

  // Long generations keep the drain going while readiness is polled.
  constexpr int kLong = 4;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
  v1::GenerateRequest request;
  request.mutable_params()->set_prompt("Once upon a time");
  request.mutable_params()->set_max_tokens(480);
  for (int i = 0; i < kLong; ++i) {
    contexts.push_back(ContextWithDeadline());
    readers.push_back(v1->Generate(contexts.back().get(), request));
    v1::GenerateResponse first;
    ASSERT_TRUE(readers.back()->Read(&first));
  }
  std::thread shutdown([&] { (*server)->Shutdown(absl::Seconds(30)); });
  bool saw_not_ready = false;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!saw_not_ready && absl::Now() < deadline) {
    if (!ready(&is_ready)) break;  // The gRPC server stopped: the drain is over.
    saw_not_ready = !is_ready;
  }
  EXPECT_TRUE(saw_not_ready) << "ServerReady never reported the drain";
  for (auto& reader : readers) {
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    EXPECT_TRUE(reader->Finish().ok());  // Draining finishes what was running.
  }
  shutdown.join();
}

}  // namespace
}  // namespace kvserve::server
