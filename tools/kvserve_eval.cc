// kvserve-eval: measures what a KV-cache policy costs in quality against the full cache on a
// corpus the model sampled itself (teacher forced, policy applied online), and what it saves
// in bytes. Modes: one policy (--policy), the fixed grid (--grid), or corpus generation
// (--make-corpus), or ScaleKV calibration (--calibrate-scalekv). See docs/KV-EVAL.md for the
// protocol and results.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/common/logging.h"
#include "engine/policy/kv_policy.h"
#include "engine/policy/scalekv_budgets.h"
#include "engine/runtime/engine.h"
#include "tools/kv_eval.h"
#include "tools/scalekv_calibration.h"

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "kvserve-eval: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ||
                 status.code() == absl::StatusCode::kUnimplemented
             ? 2
             : 1;
}

}  // namespace

int main(int argc, char** argv) {
  using kvserve::tools::EvalOptions;
  using kvserve::tools::EvalResult;
  CLI::App app{"KV-cache policy quality evaluation against the full cache (kvserve)."};
  std::string model;
  std::string corpus_path = "tests/testdata/eval/stories260K_corpus.jsonl";
  EvalOptions options;
  bool json = false;
  bool grid = false;
  int seed_repeats = 5;
  bool make_corpus = false;
  kvserve::tools::CorpusOptions corpus_options;
  std::string out_path;
  app.add_option("--model", model, "GGUF model or llama2.c checkpoint")->required();
  app.add_option("--policy", options.policy_spec, "KV policy spec, e.g. keyformer:keep=0.3");
  app.add_option("--kv-dtype", options.kv_dtype,
                 "KV storage type of the policy sequences: f32, bf16 or int8 (the full-cache "
                 "reference is always f32)");
  app.add_option("--sequences", options.sequences, "corpus sequences to evaluate (first N)");
  app.add_option("--corpus", corpus_path, "corpus JSON lines (from --make-corpus)");
  app.add_option("--prompt-tokens", options.prompt_tokens,
                 "corpus tokens prefilled; the rest are teacher forced");
  app.add_option("--greedy-tokens", options.greedy_tokens,
                 "greedy continuation length (-1: as many as teacher forced)");
  app.add_option("--policy-seed", options.policy_seed,
                 "policy noise seed (keyformer): seed = this * 1e6 + corpus seed");
  app.add_option("--batch", options.batch, "corpus sequences evaluated together");
  app.add_option("--bootstrap", options.bootstrap_samples, "bootstrap resamples (0: no CIs)");
  app.add_flag("--json", json, "print JSON (one object; JSON lines with --grid)");
  app.add_flag("--grid", grid, "run the fixed grid: policies x keep fractions x KV types");
  std::vector<std::string> grid_specs;
  app.add_option("--grid-specs", grid_specs,
                 "grid: run only these cells (to split the grid over processes)")
      ->delimiter(';');
  std::vector<std::string> grid_kv_dtypes = {"f32", "bf16", "int8"};
  app.add_option("--grid-kv-dtypes", grid_kv_dtypes,
                 "grid: KV storage types, each crossed with every cell (default f32;bf16;int8)")
      ->delimiter(';');
  app.add_option("--seed-repeats", seed_repeats,
                 "grid: keyformer policy seeds 1..N at keep 0.3 and 0.2 (0: skip)");
  app.add_flag("--make-corpus", make_corpus, "sample a corpus from the model and write it");
  app.add_option("--out", out_path, "--make-corpus: output file");
  app.add_option("--corpus-sequences", corpus_options.sequences, "--make-corpus: sequences");
  app.add_option("--corpus-tokens", corpus_options.tokens,
                 "--make-corpus: tokens per sequence, BOS included");
  app.add_option("--first-seed", corpus_options.first_seed, "--make-corpus: seed of sequence 1");
  app.add_option("--temperature", corpus_options.temperature, "--make-corpus: temperature");
  app.add_option("--top-p", corpus_options.top_p, "--make-corpus: top_p");
  std::string calibrate_path, budgets_path;
  kvserve::tools::CalibrationOptions calibration;
  app.add_option("--calibrate-scalekv", calibrate_path,
                 "measure each layer's attention selectivity on --corpus and write ScaleKV's "
                 "budget file (drafter/refiner roles) here");
  app.add_option("--calibration-sequences", calibration.sequences,
                 "--calibrate-scalekv: corpus sequences used (the first N)");
  app.add_option("--asi-window", calibration.window,
                 "--calibrate-scalekv: current-map width (last positions a query sees)");
  app.add_option("--asi-top-k", calibration.top_k,
                 "--calibrate-scalekv: K' of the history top-K' attention ratio");
  app.add_option("--drafters", calibration.drafters,
                 "--calibrate-scalekv: drafter layers (0: 8% of the layers, at least 1)");
  app.add_option("--scalekv-budgets", budgets_path,
                 "ScaleKV budget file (from --calibrate-scalekv) for scalekv policies");
  CLI11_PARSE(app, argc, argv);
  // stdout carries only results (JSON / tables); the engine's info lines would mix in.
  spdlog::set_level(spdlog::level::warn);

  if (absl::Status s = kvserve::tools::CheckKvDtype(options.kv_dtype); !s.ok()) return Fail(s);
  for (const std::string& t : grid_kv_dtypes) {
    if (absl::Status s = kvserve::tools::CheckKvDtype(t); !s.ok()) return Fail(s);
  }
  if (auto context = kvserve::engine::LoadKvPolicyContext(budgets_path); context.ok()) {
    options.policy_context = *std::move(context);
  } else {
    return Fail(context.status());
  }
  if (!grid && !make_corpus && calibrate_path.empty()) {
    // Reject a bad spec before loading anything.
    if (auto p = kvserve::engine::CreateKvPolicy(options.policy_spec, options.policy_context);
        !p.ok()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("invalid --policy: ", std::string(p.status().message()))));
    }
  }
  auto engine = kvserve::engine::Engine::Create(
      kvserve::tools::EvalEngineOptions(model, std::max(options.batch, corpus_options.batch)));
  if (!engine.ok()) return Fail(engine.status());

  if (make_corpus) {
    if (out_path.empty()) return Fail(absl::InvalidArgumentError("--make-corpus needs --out"));
    auto corpus = kvserve::tools::MakeCorpus(**engine, corpus_options);
    if (!corpus.ok()) return Fail(corpus.status());
    std::ofstream out(out_path, std::ios::binary);
    out << kvserve::tools::CorpusToJsonLines(*corpus);
    if (!out.good()) return Fail(absl::InternalError(absl::StrCat("cannot write ", out_path)));
    std::fprintf(stderr, "wrote %zu sequences to %s\n", corpus->size(), out_path.c_str());
    return 0;
  }

  auto corpus = kvserve::tools::ReadCorpus(corpus_path);
  if (!corpus.ok()) return Fail(corpus.status());

  if (!calibrate_path.empty()) {
    calibration.prompt_tokens = options.prompt_tokens;
    auto budgets = kvserve::tools::CalibrateScaleKv(**engine, *corpus, calibration);
    if (!budgets.ok()) return Fail(budgets.status());
    std::ofstream out(calibrate_path, std::ios::binary);
    out << kvserve::engine::ScaleKvBudgetsToJson(*budgets);
    if (!out.good()) {
      return Fail(absl::InternalError(absl::StrCat("cannot write ", calibrate_path)));
    }
    for (int32_t l = 0; l < budgets->num_layers(); ++l) {
      std::fprintf(stderr, "layer %d: ASI %.4f (z %+.2f) %s\n", l, budgets->asi[l],
                   budgets->z[l], budgets->drafter[l] ? "drafter" : "refiner");
    }
    std::fprintf(stderr, "wrote %s (%lld queries)\n", calibrate_path.c_str(),
                 static_cast<long long>(budgets->queries));
    return 0;
  }

  if (!grid) {
    auto r = kvserve::tools::EvaluatePolicy(**engine, *corpus, options);
    if (!r.ok()) return Fail(r.status());
    if (json) {
      std::printf("%s\n", kvserve::tools::ToJson(*r).dump().c_str());
    } else {
      std::printf("%s", kvserve::tools::MarkdownTable({*r}).c_str());
    }
    return 0;
  }

  std::vector<EvalResult> results;
  for (const std::string& kv_dtype : grid_kv_dtypes) {
    for (const std::string& spec :
         grid_specs.empty() ? kvserve::tools::GridSpecs() : grid_specs) {
      EvalOptions cell = options;
      cell.policy_spec = spec;
      cell.kv_dtype = kv_dtype;
      auto r = kvserve::tools::EvaluatePolicy(**engine, *corpus, cell);
      if (!r.ok()) return Fail(r.status());
      std::fprintf(stderr, "%s %s: mean KL %.5f, %.1f s\n", spec.c_str(), kv_dtype.c_str(),
                   r->mean_kl.value, r->wall_s);
      if (json) std::printf("%s\n", kvserve::tools::ToJson(*r).dump().c_str());
      std::fflush(stdout);
      results.push_back(*std::move(r));
    }
  }
  std::printf("\n%s", kvserve::tools::MarkdownTable(results).c_str());

  if (seed_repeats > 0) {
    std::string table =
        "\n| policy | keep | seeds | mean KL (mean ± sd) | ΔPPL % (mean ± sd) | top-1 (mean ± sd) "
        "| first div. (mean ± sd) | KV bytes/seq |\n|---|---|---|---|---|---|---|---|\n";
    for (const char* spec : {"keyformer:keep=0.3", "keyformer:keep=0.2"}) {
      std::vector<double> kl, dppl, top1, div;
      double bytes = 0;
      for (int seed = 1; seed <= seed_repeats; ++seed) {
        EvalOptions cell = options;
        cell.policy_spec = spec;
        cell.policy_seed = static_cast<uint64_t>(seed);
        cell.bootstrap_samples = 0;
        // The grid already ran this cell with the same seed: reuse it.
        absl::StatusOr<EvalResult> r = absl::NotFoundError("");
        for (const EvalResult& done : results) {
          if (done.policy == spec && done.policy_seed == cell.policy_seed &&
              done.kv_dtype == cell.kv_dtype) {
            r = done;
          }
        }
        if (!r.ok()) {
          r = kvserve::tools::EvaluatePolicy(**engine, *corpus, cell);
          if (!r.ok()) return Fail(r.status());
          std::fprintf(stderr, "%s seed %d: mean KL %.5f, %.1f s\n", spec, seed,
                       r->mean_kl.value, r->wall_s);
          if (json) std::printf("%s\n", kvserve::tools::ToJson(*r).dump().c_str());
          std::fflush(stdout);
        }
        kl.push_back(r->mean_kl.value);
        dppl.push_back(r->delta_ppl.value);
        top1.push_back(r->top1_agreement.value);
        div.push_back(r->first_divergence);
        bytes = r->kv_bytes_per_sequence;
      }
      const auto m_kl = kvserve::tools::MeanAndSd(kl);
      const auto m_dppl = kvserve::tools::MeanAndSd(dppl);
      const auto m_top1 = kvserve::tools::MeanAndSd(top1);
      const auto m_div = kvserve::tools::MeanAndSd(div);
      absl::StrAppendFormat(&table,
                            "| keyformer | %s | 1..%d | %.5f ± %.5f | %.3f ± %.3f | %.4f ± %.4f "
                            "| %.1f ± %.1f | %.0f |\n",
                            std::string(spec).substr(std::string(spec).find('=') + 1),
                            seed_repeats, m_kl.mean, m_kl.sd, m_dppl.mean, m_dppl.sd,
                            m_top1.mean, m_top1.sd, m_div.mean, m_div.sd, bytes);
    }
    std::printf("%s", table.c_str());
  }
  return 0;
}
