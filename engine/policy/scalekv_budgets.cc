#include "engine/policy/scalekv_budgets.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvserve::engine {

namespace {
constexpr char kFormat[] = "kvserve-scalekv-budgets/1";
}  // namespace

double AttentionSelectivity(absl::Span<const float> attention, int32_t window, int32_t top_k) {
  const int64_t n = static_cast<int64_t>(attention.size());
  const int64_t history = std::max<int64_t>(0, n - std::max(window, 1));
  double current = 0;
  for (int64_t j = history; j < n; ++j) current += attention[j];
  std::vector<float> past(attention.begin(), attention.begin() + history);
  const int64_t k = std::min<int64_t>(std::max(top_k, 0), history);
  std::partial_sort(past.begin(), past.begin() + k, past.end(), std::greater<float>());
  double top = 0;
  for (int64_t j = 0; j < k; ++j) top += past[j];
  return current + top;
}

absl::Status ClassifyLayers(int32_t drafters, ScaleKvBudgets& budgets) {
  const int32_t layers = budgets.num_layers();
  if (drafters < 1 || drafters >= layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ScaleKV needs 1 <= drafters < layers (", layers, "), got ", drafters));
  }
  const double mean = std::accumulate(budgets.asi.begin(), budgets.asi.end(), 0.0) / layers;
  double var = 0;
  for (double a : budgets.asi) var += (a - mean) * (a - mean);
  const double sd = std::sqrt(var / layers);
  budgets.z.resize(layers);
  for (int32_t l = 0; l < layers; ++l) budgets.z[l] = (budgets.asi[l] - mean) / (sd + 1e-6);
  std::vector<int32_t> order(layers);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return budgets.z[a] < budgets.z[b]; });
  budgets.drafter.assign(layers, false);
  for (int32_t i = 0; i < drafters; ++i) budgets.drafter[order[i]] = true;
  return absl::OkStatus();
}

std::vector<double> LayerBudgetScales(const std::vector<bool>& drafter, double keep,
                                      double refiner) {
  const double layers = static_cast<double>(drafter.size());
  const double n_d = static_cast<double>(std::count(drafter.begin(), drafter.end(), true));
  const double n_r = layers - n_d;
  double r = refiner;
  double d = n_d > 0 ? (layers - n_r * r) / n_d : 1.0;
  const double cap = 1.0 / keep;  // A drafter cannot keep more than everything.
  if (d > cap && n_r > 0) {
    d = cap;
    r = (layers - n_d * d) / n_r;
  }
  std::vector<double> scales(drafter.size());
  for (size_t l = 0; l < drafter.size(); ++l) scales[l] = drafter[l] ? d : r;
  return scales;
}

std::string ScaleKvBudgetsToJson(const ScaleKvBudgets& b) {
  nlohmann::json j = {{"format", kFormat},     {"model", b.model}, {"window", b.window},
                      {"top_k", b.top_k},      {"queries", b.queries}};
  nlohmann::json layers = nlohmann::json::array();
  for (int32_t l = 0; l < b.num_layers(); ++l) {
    layers.push_back({{"layer", l},
                      {"asi", b.asi[l]},
                      {"z", l < static_cast<int32_t>(b.z.size()) ? b.z[l] : 0.0},
                      {"role", l < static_cast<int32_t>(b.drafter.size()) && b.drafter[l]
                                   ? "drafter"
                                   : "refiner"}});
  }
  j["layers"] = std::move(layers);
  return j.dump(2) + "\n";
}

absl::StatusOr<ScaleKvBudgets> ParseScaleKvBudgets(std::string_view text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("ScaleKV budget file is not a JSON object");
  }
  if (j.value("format", "") != kFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat("ScaleKV budget file: \"format\" must be \"", kFormat, "\""));
  }
  const auto layers = j.find("layers");
  if (layers == j.end() || !layers->is_array() || layers->size() < 2) {
    return absl::InvalidArgumentError("ScaleKV budget file: \"layers\" must list >= 2 layers");
  }
  ScaleKvBudgets b;
  b.model = j.value("model", "");
  b.window = j.value("window", 16);
  b.top_k = j.value("top_k", 16);
  b.queries = j.value("queries", int64_t{0});
  int32_t drafters = 0;
  for (size_t l = 0; l < layers->size(); ++l) {
    const nlohmann::json& e = (*layers)[l];
    if (!e.is_object() || e.value("layer", -1) != static_cast<int>(l) ||
        !e.contains("asi") || !e["asi"].is_number()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ScaleKV budget file: layers[", l, "] needs \"layer\": ", l, " and a numeric \"asi\""));
    }
    const std::string role = e.value("role", "");
    if (role != "drafter" && role != "refiner") {
      return absl::InvalidArgumentError(absl::StrCat(
          "ScaleKV budget file: layers[", l, "].role must be \"drafter\" or \"refiner\""));
    }
    b.asi.push_back(e["asi"].get<double>());
    b.z.push_back(e.value("z", 0.0));
    b.drafter.push_back(role == "drafter");
    drafters += role == "drafter";
  }
  if (drafters == 0 || drafters == b.num_layers()) {
    return absl::InvalidArgumentError(
        "ScaleKV budget file: needs at least one drafter and one refiner layer");
  }
  return b;
}

absl::StatusOr<ScaleKvBudgets> LoadScaleKvBudgets(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open ScaleKV budget file ", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<ScaleKvBudgets> b = ParseScaleKvBudgets(text.str());
  if (!b.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", b.status().message()));
  }
  return b;
}

absl::StatusOr<KvPolicyContext> LoadKvPolicyContext(const std::string& scalekv_budgets_path) {
  KvPolicyContext context;
  if (scalekv_budgets_path.empty()) return context;
  absl::StatusOr<ScaleKvBudgets> budgets = LoadScaleKvBudgets(scalekv_budgets_path);
  if (!budgets.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--scalekv-budgets: ", budgets.status().message()));
  }
  context.scalekv_budgets = std::make_shared<const ScaleKvBudgets>(*std::move(budgets));
  return context;
}

absl::Status CheckScaleKvBudgetsFit(const ScaleKvBudgets& budgets, std::string_view path,
                                    std::string_view model_name, int32_t model_layers) {
  if (budgets.num_layers() == model_layers) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "--scalekv-budgets %s has %d layers; model %s has %d (calibrate it on this model)", path,
      budgets.num_layers(), model_name, model_layers));
}

}  // namespace kvserve::engine
