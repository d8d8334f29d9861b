#include "client/cli_support.h"

#include <string>

#include "gtest/gtest.h"

namespace kvserve::client {
namespace {

TEST(GenerateChunkToJsonTest, MiddleChunkHasTextAndIdsOnly) {
  kvserve::v1::GenerateResponse chunk;
  chunk.set_text(", there");
  chunk.add_token_ids(432);
  chunk.add_token_ids(383);
  EXPECT_EQ(JsonLine(GenerateChunkToJson(chunk)),
            R"({"text":", there","token_ids":[432,383]})");
}

TEST(GenerateChunkToJsonTest, LastChunkAddsFinishReasonAndUsage) {
  kvserve::v1::GenerateResponse chunk;
  chunk.set_finish_reason(kvserve::v1::FINISH_REASON_LENGTH);
  chunk.mutable_usage()->set_prompt_tokens(5);
  chunk.mutable_usage()->set_completion_tokens(64);
  chunk.mutable_usage()->set_cached_prompt_tokens(2);
  const nlohmann::ordered_json json = GenerateChunkToJson(chunk);
  EXPECT_EQ(json["text"], "");
  EXPECT_TRUE(json["token_ids"].is_array());
  EXPECT_EQ(json["finish_reason"], "length");
  EXPECT_EQ(json["usage"], (nlohmann::ordered_json{{"prompt_tokens", 5},
                                           {"completion_tokens", 64},
                                           {"cached_prompt_tokens", 2}}));
}

struct FinishReasonCase {
  std::string name;
  kvserve::v1::FinishReason reason;
  std::string expected;
};

class FinishReasonNameTest : public ::testing::TestWithParam<FinishReasonCase> {};

TEST_P(FinishReasonNameTest, MatchesTheDocumentedSpelling) {
  EXPECT_EQ(FinishReasonName(GetParam().reason), GetParam().expected);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, FinishReasonNameTest,
    ::testing::Values(
        FinishReasonCase{"stop", kvserve::v1::FINISH_REASON_STOP, "stop"},
        FinishReasonCase{"length", kvserve::v1::FINISH_REASON_LENGTH, "length"},
        FinishReasonCase{"stop_string", kvserve::v1::FINISH_REASON_STOP_STRING, "stop_string"},
        FinishReasonCase{"context_length", kvserve::v1::FINISH_REASON_CONTEXT_LENGTH,
                         "context_length"},
        FinishReasonCase{"unspecified", kvserve::v1::FINISH_REASON_UNSPECIFIED, "unspecified"}),
    [](const ::testing::TestParamInfo<FinishReasonCase>& info) { return info.param.name; });

TEST(BuildGenerationParamsTest, CopiesEveryFlag) {
  GenerateFlags flags;
  flags.prompt = "Once upon a time";
  flags.max_tokens = 64;
  flags.temperature = 0.7f;
  flags.top_k = 40;
  flags.top_p = 0.9f;
  flags.seed = 11;
  flags.stop = {"\n", "The end"};
  flags.priority = 3;
  flags.no_bos = true;
  flags.kv_policy = "keyformer:keep=0.3";
  const kvserve::v1::GenerationParams params = BuildGenerationParams(flags);
  EXPECT_EQ(params.prompt(), "Once upon a time");
  EXPECT_EQ(params.prompt_token_ids_size(), 0);
  EXPECT_EQ(params.max_tokens(), 64);
  EXPECT_FLOAT_EQ(params.sampling().temperature(), 0.7f);
  EXPECT_EQ(params.sampling().top_k(), 40);
  EXPECT_FLOAT_EQ(params.sampling().top_p(), 0.9f);
  EXPECT_EQ(params.sampling().seed(), 11u);
  ASSERT_EQ(params.stop_size(), 2);
  EXPECT_EQ(params.stop(1), "The end");
  EXPECT_EQ(params.priority(), 3);
  EXPECT_EQ(params.kv_policy(), "keyformer:keep=0.3");
  ASSERT_TRUE(params.has_add_bos());
  EXPECT_FALSE(params.add_bos());
}

TEST(BuildGenerationParamsTest, BosIsExplicitlyOnByDefault) {
  GenerateFlags flags;
  flags.prompt = "x";
  const kvserve::v1::GenerationParams params = BuildGenerationParams(flags);
  ASSERT_TRUE(params.has_add_bos());
  EXPECT_TRUE(params.add_bos());
}

TEST(FormatTest, TokenIdsAsList) {
  const int32_t ids[] = {1, 403, 407, 261, 378};
  EXPECT_EQ(FormatTokenIds(ids), "[1, 403, 407, 261, 378]");
  EXPECT_EQ(FormatTokenIds({}), "[]");
}

TEST(FormatTest, JsonLineReplacesInvalidUtf8InsteadOfThrowing) {
  nlohmann::ordered_json value{{"text", std::string("a\xff" "b")}};
  std::string line;
  ASSERT_NO_THROW(line = JsonLine(value));
  EXPECT_EQ(line, "{\"text\":\"a\xEF\xBF\xBD" "b\"}");
}

TEST(FormatTest, SummaryNamesFinishAndCounts) {
  kvserve::v1::Usage usage;
  usage.set_prompt_tokens(5);
  usage.set_completion_tokens(64);
  EXPECT_EQ(FormatGenerationSummary(kvserve::v1::FINISH_REASON_LENGTH, usage, 0.5),
            "finish_reason=length prompt_tokens=5 completion_tokens=64 cached_prompt_tokens=0 "
            "elapsed_s=0.500 tokens_per_s=128.0");
}

TEST(FormatTest, ModelInfoListsEveryField) {
  kvserve::v1::GetModelInfoResponse info;
  info.set_name("stories260K");
  info.set_vocab_size(512);
  const std::string text = FormatModelInfo(info);
  EXPECT_NE(text.find("name: stories260K\n"), std::string::npos) << text;
  EXPECT_NE(text.find("vocab_size: 512\n"), std::string::npos) << text;
  EXPECT_NE(text.find("max_tokens_limit: 0\n"), std::string::npos) << text;
  info.set_weight_type("bf16");
  EXPECT_NE(FormatModelInfo(info).find("weight_type: bf16\n"), std::string::npos);
  // One entry per proto field: a field added to the API without the CLI showing it fails here.
  EXPECT_EQ(ModelInfoToJson(info).size(),
            static_cast<size_t>(kvserve::v1::GetModelInfoResponse::descriptor()->field_count()));
}

}  // namespace
}  // namespace kvserve::client
