// kvserve-make-model: writes a LLaMA GGUF with seeded random weights and a usable vocabulary,
// for load and speed tests at realistic sizes (e.g. --preset tinyllama-1.1b --dtype q8_0), or
// re-encodes a real model in another storage type (--convert models/stories260K.gguf --dtype q4_0).
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "absl/status/status.h"
#include "engine/model/tensor_data.h"
#include "tools/model_maker.h"

int main(int argc, char** argv) {
  using kvserve::tools::ModelMakerOptions;
  CLI::App app{"Writes a LLaMA GGUF model with seeded random weights (kvserve test models)."};
  std::string preset;
  std::string dtype = "f32";
  ModelMakerOptions flags;
  app.add_option("--preset", preset, "tinyllama-1.1b or stories260k (explicit flags override)");
  app.add_option("--dim", flags.dim, "embedding width");
  app.add_option("--layers", flags.layers, "transformer blocks");
  app.add_option("--heads", flags.heads, "query heads");
  app.add_option("--kv-heads", flags.kv_heads, "key/value heads");
  app.add_option("--ffn", flags.ffn, "feed-forward hidden width");
  app.add_option("--vocab", flags.vocab, "vocabulary size");
  app.add_option("--context", flags.context, "context length");
  app.add_option("--dtype", dtype, "matrix storage: f32, f16, bf16, q8_0 or q4_0");
  app.add_option("--seed", flags.seed, "random seed (same seed and flags: identical file)");
  app.add_option("--init-std", flags.init_std, "standard deviation of the weights");
  app.add_option("--name", flags.name, "general.name");
  app.add_option("--vocab-from", flags.vocab_from, "copy the tokenizer of this GGUF file");
  app.add_option("--out", flags.out, "output file")->required();
  std::string convert;
  app.add_option("--convert", convert,
                 "instead of random weights, re-encode this model (GGUF or llama2.c) with "
                 "--dtype")
      ->excludes(app.get_option("--preset"))
      ->excludes(app.get_option("--seed"))
      ->excludes(app.get_option("--vocab-from"));
  CLI11_PARSE(app, argc, argv);

  ModelMakerOptions options;
  if (!preset.empty()) {
    auto p = kvserve::tools::PresetOptions(preset);
    if (!p.ok()) {
      std::fprintf(stderr, "kvserve-make-model: %s\n", std::string(p.status().message()).c_str());
      return 2;
    }
    options = *p;
  }
  // Flags given on the command line override the preset.
  auto given = [&](const char* name) { return app.count(name) > 0; };
  if (given("--dim")) options.dim = flags.dim;
  if (given("--layers")) options.layers = flags.layers;
  if (given("--heads")) options.heads = flags.heads;
  if (given("--kv-heads")) options.kv_heads = flags.kv_heads;
  if (given("--ffn")) options.ffn = flags.ffn;
  if (given("--vocab")) options.vocab = flags.vocab;
  if (given("--context")) options.context = flags.context;
  if (given("--seed")) options.seed = flags.seed;
  if (given("--init-std")) options.init_std = flags.init_std;
  if (given("--name")) options.name = flags.name;
  options.vocab_from = flags.vocab_from;
  options.out = flags.out;
  if (!options.vocab_from.empty() && !given("--vocab")) options.vocab = 0;  // The file's size.
  auto type = kvserve::tools::ParseDType(dtype);
  if (!type.ok()) {
    std::fprintf(stderr, "kvserve-make-model: %s\n", std::string(type.status().message()).c_str());
    return 2;
  }
  options.dtype = *type;

  const absl::Status status = convert.empty()
                                  ? kvserve::tools::MakeModel(options)
                                  : kvserve::tools::ConvertModel(convert, *type, options.out);
  if (!status.ok()) {
    std::fprintf(stderr, "kvserve-make-model: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  std::printf("wrote %s\n", options.out.c_str());
  return 0;
}
