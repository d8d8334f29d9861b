#include "server/grpc/proto_convert.h"

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/model_file.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvserve::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The real tokenizer and hyperparameters of the test model.
class ProtoConvertTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<engine::ModelFile>> model =
        engine::LoadModelFile(std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    absl::StatusOr<std::unique_ptr<engine::BpeTokenizer>> tokenizer =
        engine::BpeTokenizer::Create(model_->vocab);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
  }

  static RequestLimits Limits() {
    RequestLimits limits;
    limits.model_name = model_->config.name;
    limits.vocab_size = model_->config.vocab_size;
    limits.context_length = model_->config.context_length;
    limits.default_max_tokens = 32;
    limits.max_tokens_limit = 100;
    limits.max_prompt_bytes = 4096;
    return limits;
  }

  static v1::GenerationParams Params(const std::string& prompt) {
    v1::GenerationParams params;
    params.set_prompt(prompt);
    return params;
  }

  static inline std::unique_ptr<engine::ModelFile> model_;
  static inline std::unique_ptr<engine::BpeTokenizer> tokenizer_;
};

TEST_F(ProtoConvertTest, TestModelIsWhatTheTablesAssume) {
  EXPECT_EQ(model_->config.vocab_size, 512);
  EXPECT_EQ(model_->config.context_length, 512);
  EXPECT_FALSE(model_->config.name.empty());
}

TEST_F(ProtoConvertTest, TextPromptIsTokenizedWithBos) {
  auto request = ToPendingRequest(Params("Once upon a time"), Limits(), *tokenizer_);
  ASSERT_TRUE(request.ok()) << request.status();
  // Same ids as tests/testdata/stories260K_reference.json (llama.cpp).
  EXPECT_THAT((*request)->prompt_ids, ElementsAre(1, 403, 407, 261, 378));
}

TEST_F(ProtoConvertTest, AddBosFalseDropsBos) {
  v1::GenerationParams params = Params("Once upon a time");
  params.set_add_bos(false);
  auto request = ToPendingRequest(params, Limits(), *tokenizer_);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT((*request)->prompt_ids, ElementsAre(403, 407, 261, 378));
}

TEST_F(ProtoConvertTest, TokenIdPromptIsTakenAsIs) {
  v1::GenerationParams params;
  params.add_prompt_token_ids(5);
  params.add_prompt_token_ids(511);
  params.set_add_bos(true);  // Ignored for token ids.
  auto request = ToPendingRequest(params, Limits(), *tokenizer_);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT((*request)->prompt_ids, ElementsAre(5, 511));
}

TEST_F(ProtoConvertTest, FieldsAreCarriedOver) {
  v1::GenerationParams params = Params("Hi");
  params.set_model(model_->config.name);
  params.set_max_tokens(7);
  params.mutable_sampling()->set_temperature(0.8f);
  params.mutable_sampling()->set_top_k(40);
  params.mutable_sampling()->set_top_p(0.9f);
  params.mutable_sampling()->set_seed(1234);
  params.add_stop("\n");
  params.add_stop("The end");
  params.set_priority(-3);
  auto request = ToPendingRequest(params, Limits(), *tokenizer_);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ((*request)->max_tokens, 7);
  EXPECT_FLOAT_EQ((*request)->sampling.temperature, 0.8f);
  EXPECT_EQ((*request)->sampling.top_k, 40);
  EXPECT_FLOAT_EQ((*request)->sampling.top_p, 0.9f);
  EXPECT_EQ((*request)->sampling.seed, 1234u);
  EXPECT_THAT((*request)->stop_strings, ElementsAre("\n", "The end"));
  EXPECT_EQ((*request)->priority, -3);
  EXPECT_EQ((*request)->stream, nullptr);  // The caller attaches the stream.
}

TEST_F(ProtoConvertTest, DefaultsApply) {
  auto request = ToPendingRequest(Params("Hi"), Limits(), *tokenizer_);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ((*request)->max_tokens, 32);            // Server default.
  EXPECT_EQ((*request)->sampling.temperature, 0.0f);  // Greedy.
  EXPECT_EQ((*request)->sampling.top_p, 1.0f);        // 0 on the wire means off.
  EXPECT_EQ((*request)->priority, 0);
}

TEST_F(ProtoConvertTest, MaxTokensAtTheLimitIsAccepted) {
  v1::GenerationParams params = Params("Hi");
  params.set_max_tokens(100);
  EXPECT_TRUE(ToPendingRequest(params, Limits(), *tokenizer_).ok());
}

TEST_F(ProtoConvertTest, PromptThatLeavesOneTokenOfContextIsAccepted) {
  v1::GenerationParams params;
  for (int i = 0; i < 511; ++i) params.add_prompt_token_ids(300);
  EXPECT_TRUE(ToPendingRequest(params, Limits(), *tokenizer_).ok());
}

// One bad-input row: how to spoil a good request, and what the error must say.
struct BadCase {
  std::string name;
  std::function<void(v1::GenerationParams&)> spoil;
  absl::StatusCode code;
  std::vector<std::string> message_parts;
};

// Test names print the row name, not the struct's bytes.
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class BadParamsTest : public ProtoConvertTest,
                      public ::testing::WithParamInterface<BadCase> {};

TEST_P(BadParamsTest, RejectedWithCodeAndMessageNamingTheProblem) {
  const BadCase& c = GetParam();
  v1::GenerationParams params = Params("Once upon a time");
  c.spoil(params);
  auto request = ToPendingRequest(params, Limits(), *tokenizer_);
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(request.status().code(), c.code) << request.status();
  for (const std::string& part : c.message_parts) {
    EXPECT_THAT(std::string(request.status().message()), HasSubstr(part));
  }
}

const float kNan = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

INSTANTIATE_TEST_SUITE_P(
    Rows, BadParamsTest,
    ::testing::Values(
        BadCase{"unknown_model", [](auto& p) { p.set_model("llama-70b"); },
                absl::StatusCode::kNotFound,
                {"model 'llama-70b' is not served; this server serves '"}},
        BadCase{"both_prompt_kinds", [](auto& p) { p.add_prompt_token_ids(1); },
                absl::StatusCode::kInvalidArgument, {"prompt", "prompt_token_ids", "exactly one"}},
        BadCase{"empty_prompt", [](auto& p) { p.clear_prompt(); },
                absl::StatusCode::kInvalidArgument, {"prompt is empty"}},
        BadCase{"negative_token_id",
                [](auto& p) {
                  p.clear_prompt();
                  p.add_prompt_token_ids(1);
                  p.add_prompt_token_ids(-1);
                },
                absl::StatusCode::kInvalidArgument, {"prompt_token_ids[1] = -1", "0..511"}},
        BadCase{"token_id_past_vocab",
                [](auto& p) {
                  p.clear_prompt();
                  p.add_prompt_token_ids(512);
                  p.add_prompt_token_ids(9999);
                },
                absl::StatusCode::kInvalidArgument, {"prompt_token_ids[0] = 512", "0..511"}},
        BadCase{"token_prompt_fills_context",
                [](auto& p) {
                  p.clear_prompt();
                  for (int i = 0; i < 512; ++i) p.add_prompt_token_ids(300);
                },
                absl::StatusCode::kInvalidArgument,
                {"prompt has 512 tokens; this model's context is 512 tokens"}},
        BadCase{"text_prompt_too_long",
                [](auto& p) {
                  std::string text;
                  for (int i = 0; i < 600; ++i) text += " a";  // One token per word.
                  p.set_prompt(text);
                },
                absl::StatusCode::kInvalidArgument, {"prompt has ", "context is 512 tokens"}},
        BadCase{"prompt_bytes_over_limit", [](auto& p) { p.set_prompt(std::string(5000, 'a')); },
                absl::StatusCode::kInvalidArgument, {"prompt is 5000 bytes", "4096"}},
        BadCase{"invalid_utf8", [](auto& p) { p.set_prompt("ab\xFF"); },
                absl::StatusCode::kInvalidArgument, {"UTF-8"}},
        BadCase{"negative_max_tokens", [](auto& p) { p.set_max_tokens(-1); },
                absl::StatusCode::kInvalidArgument, {"max_tokens is -1", "[1, 100]"}},
        BadCase{"max_tokens_over_limit", [](auto& p) { p.set_max_tokens(101); },
                absl::StatusCode::kInvalidArgument, {"max_tokens is 101", "[1, 100]"}},
        BadCase{"negative_temperature",
                [](auto& p) { p.mutable_sampling()->set_temperature(-0.5f); },
                absl::StatusCode::kInvalidArgument, {"temperature"}},
        BadCase{"nan_temperature", [](auto& p) { p.mutable_sampling()->set_temperature(kNan); },
                absl::StatusCode::kInvalidArgument, {"temperature"}},
        BadCase{"infinite_temperature",
                [](auto& p) { p.mutable_sampling()->set_temperature(kInf); },
                absl::StatusCode::kInvalidArgument, {"temperature"}},
        BadCase{"negative_top_k", [](auto& p) { p.mutable_sampling()->set_top_k(-2); },
                absl::StatusCode::kInvalidArgument, {"top_k"}},
        BadCase{"top_p_over_one", [](auto& p) { p.mutable_sampling()->set_top_p(1.5f); },
                absl::StatusCode::kInvalidArgument, {"top_p"}},
        BadCase{"negative_top_p", [](auto& p) { p.mutable_sampling()->set_top_p(-0.1f); },
                absl::StatusCode::kInvalidArgument, {"top_p"}},
        BadCase{"too_many_stop_strings",
                [](auto& p) {
                  for (int i = 0; i < 65; ++i) p.add_stop("s" + std::to_string(i));
                },
                absl::StatusCode::kInvalidArgument, {"65 stop strings", "at most 64"}},
        BadCase{"stop_string_too_long", [](auto& p) { p.add_stop(std::string(300, 'x')); },
                absl::StatusCode::kInvalidArgument, {"stop[0] is 300 bytes", "256"}},
        BadCase{"empty_stop_string",
                [](auto& p) {
                  p.add_stop("ok");
                  p.add_stop("");
                },
                absl::StatusCode::kInvalidArgument, {"stop[1] is empty"}}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return info.param.name; });

TEST_F(ProtoConvertTest, CheckModelName) {
  EXPECT_TRUE(CheckModelName("", "m").ok());
  EXPECT_TRUE(CheckModelName("m", "m").ok());
  const absl::Status status = CheckModelName("x", "m");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "model 'x' is not served; this server serves 'm'");
}

TEST_F(ProtoConvertTest, TokenizeGivesIdsAndReadablePieces) {
  v1::TokenizeRequest request;
  request.set_text("Once upon a time");
  v1::TokenizeResponse response;
  ASSERT_TRUE(Tokenize(request, Limits(), *tokenizer_, &response).ok());
  EXPECT_THAT(response.token_ids(), ElementsAre(1, 403, 407, 261, 378));
  ASSERT_EQ(response.pieces_size(), 5);
  EXPECT_EQ(response.pieces(1), " Once");  // U+2581 shown as a space.
  EXPECT_EQ(response.pieces(4), " time");
}

TEST_F(ProtoConvertTest, TokenizeWithoutBosAndByteTokens) {
  v1::TokenizeRequest request;
  request.set_text("\n");
  request.set_add_bos(false);
  v1::TokenizeResponse response;
  ASSERT_TRUE(Tokenize(request, Limits(), *tokenizer_, &response).ok());
  ASSERT_GT(response.token_ids_size(), 0);
  EXPECT_NE(response.token_ids(0), 1);
  EXPECT_THAT(response.pieces(), ::testing::Contains("<0x0A>"));
}

TEST_F(ProtoConvertTest, TokenizeRejectsOtherModelAndHugeText) {
  v1::TokenizeResponse response;
  v1::TokenizeRequest other;
  other.set_model("gpt");
  other.set_text("hi");
  EXPECT_EQ(Tokenize(other, Limits(), *tokenizer_, &response).code(),
            absl::StatusCode::kNotFound);
  v1::TokenizeRequest huge;
  huge.set_text(std::string(5000, 'a'));
  const absl::Status status = Tokenize(huge, Limits(), *tokenizer_, &response);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("text is 5000 bytes"));
}

struct FinishCase {
  std::string name;
  FinishReason reason;
  v1::FinishReason proto;
};

class FinishReasonTest : public ::testing::TestWithParam<FinishCase> {};

TEST_P(FinishReasonTest, Maps) { EXPECT_EQ(ToProto(GetParam().reason), GetParam().proto); }

INSTANTIATE_TEST_SUITE_P(
    All, FinishReasonTest,
    ::testing::Values(
        FinishCase{"unspecified", FinishReason::kUnspecified, v1::FINISH_REASON_UNSPECIFIED},
        FinishCase{"stop", FinishReason::kStop, v1::FINISH_REASON_STOP},
        FinishCase{"length", FinishReason::kLength, v1::FINISH_REASON_LENGTH},
        FinishCase{"stop_string", FinishReason::kStopString, v1::FINISH_REASON_STOP_STRING},
        FinishCase{"context_length", FinishReason::kContextLength,
                   v1::FINISH_REASON_CONTEXT_LENGTH}),
    [](const ::testing::TestParamInfo<FinishCase>& info) { return info.param.name; });

TEST(ProtoConvertUsageTest, UsageAndModelInfo) {
  v1::Usage usage;
  ToProto(Usage{.prompt_tokens = 5, .completion_tokens = 64, .cached_prompt_tokens = 2}, &usage);
  EXPECT_EQ(usage.prompt_tokens(), 5);
  EXPECT_EQ(usage.completion_tokens(), 64);
  EXPECT_EQ(usage.cached_prompt_tokens(), 2);

  ModelDescription model;
  model.config.name = "tiny";
  model.config.vocab_size = 512;
  model.config.context_length = 256;
  model.config.dim = 64;
  model.config.n_layers = 5;
  model.config.n_heads = 8;
  model.config.n_kv_heads = 4;
  model.config.ffn_dim = 172;
  model.format = "gguf";
  model.device = "cpu";
  model.parameters = 260000;
  model.max_tokens_limit = 256;
  v1::GetModelInfoResponse info;
  ToProto(model, &info);
  EXPECT_EQ(info.name(), "tiny");
  EXPECT_EQ(info.architecture(), "llama");
  EXPECT_EQ(info.format(), "gguf");
  EXPECT_EQ(info.vocab_size(), 512);
  EXPECT_EQ(info.context_length(), 256);
  EXPECT_EQ(info.embedding_dim(), 64);
  EXPECT_EQ(info.layers(), 5);
  EXPECT_EQ(info.heads(), 8);
  EXPECT_EQ(info.kv_heads(), 4);
  EXPECT_EQ(info.ffn_dim(), 172);
  EXPECT_EQ(info.parameters(), 260000);
  EXPECT_EQ(info.bos_token_id(), 1);
  EXPECT_EQ(info.eos_token_id(), 2);
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_EQ(info.max_tokens_limit(), 256);
}

}  // namespace
}  // namespace kvserve::server
