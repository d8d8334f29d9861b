#include "server/grpc/kserve_tensors.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/common/status_macros.h"

namespace kvserve::server {
namespace {

using inference::InferParameter;
using inference::InferTensorContents;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

// ---------------------------------------------------------------------------------------
// Datatypes

enum class DataType {
  kBool, kUint8, kUint16, kUint32, kUint64, kInt8, kInt16, kInt32, kInt64,
  kFp16, kBf16, kFp32, kFp64, kBytes,
};

struct DataTypeInfo {
  const char* name;
  DataType type;
  int raw_bytes;  // Size of one element in raw form; 0 for BYTES (length-prefixed).
};

// The specification's datatypes, in its order.
constexpr DataTypeInfo kDataTypes[] = {
    {"BOOL", DataType::kBool, 1},   {"UINT8", DataType::kUint8, 1},
    {"UINT16", DataType::kUint16, 2}, {"UINT32", DataType::kUint32, 4},
    {"UINT64", DataType::kUint64, 8}, {"INT8", DataType::kInt8, 1},
    {"INT16", DataType::kInt16, 2}, {"INT32", DataType::kInt32, 4},
    {"INT64", DataType::kInt64, 8}, {"FP16", DataType::kFp16, 2},
    {"BF16", DataType::kBf16, 2},   {"FP32", DataType::kFp32, 4},
    {"FP64", DataType::kFp64, 8},   {"BYTES", DataType::kBytes, 0},
};

const DataTypeInfo* FindDataType(std::string_view name) {
  for (const DataTypeInfo& info : kDataTypes) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

const char* DataTypeName(DataType type) {
  for (const DataTypeInfo& info : kDataTypes) {
    if (info.type == type) return info.name;
  }
  return "?";
}

std::string AllDataTypeNames() {
  std::vector<std::string> names;
  for (const DataTypeInfo& info : kDataTypes) names.push_back(info.name);
  return absl::StrJoin(names, ", ");
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// ---------------------------------------------------------------------------------------
// The inputs this model takes

// One element of a decoded tensor, widened: every integer type to int64/uint64, every float
// type to double.
using Element = std::variant<bool, int64_t, uint64_t, double, std::string>;

enum class Form {
  kScalar,  // Shape [1] or [1, 1].
  kList,    // Shape [N] or [1, N].
};

struct InputSpec {
  const char* name;
  Form form;
  std::vector<DataType> accepted;
};

const std::vector<InputSpec>& InputSpecs() {
  static const std::vector<InputSpec>* const kSpecs = new std::vector<InputSpec>{
      {kTextInput, Form::kScalar, {DataType::kBytes}},
      {"max_tokens", Form::kScalar,
       {DataType::kInt32, DataType::kInt64, DataType::kUint32, DataType::kUint64}},
      {"temperature", Form::kScalar, {DataType::kFp32, DataType::kFp64}},
      {"top_k", Form::kScalar,
       {DataType::kInt32, DataType::kInt64, DataType::kUint32, DataType::kUint64}},
      {"top_p", Form::kScalar, {DataType::kFp32, DataType::kFp64}},
      {"seed", Form::kScalar,
       {DataType::kUint64, DataType::kInt64, DataType::kUint32, DataType::kInt32}},
      {"stream", Form::kScalar, {DataType::kBool}},
      {"stop_words", Form::kList, {DataType::kBytes}},
  };
  return *kSpecs;
}

const InputSpec* FindInputSpec(std::string_view name) {
  for (const InputSpec& spec : InputSpecs()) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

std::string AllInputNames() {
  std::vector<std::string> names;
  for (const InputSpec& spec : InputSpecs()) names.push_back(spec.name);
  return absl::StrJoin(names, ", ");
}

std::string AcceptedNames(const InputSpec& spec) {
  std::vector<std::string> names;
  for (DataType type : spec.accepted) names.push_back(DataTypeName(type));
  return absl::StrJoin(names, " or ");
}

// The element count of a valid shape for `spec`, or INVALID_ARGUMENT.
absl::StatusOr<int64_t> CheckShape(const InputSpec& spec,
                                   const ModelInferRequest::InferInputTensor& tensor) {
  const auto& shape = tensor.shape();
  const bool scalar_ok = (shape.size() == 1 && shape[0] == 1) ||
                         (shape.size() == 2 && shape[0] == 1 && shape[1] == 1);
  const bool list_ok = (shape.size() == 1 && shape[0] >= 0) ||
                       (shape.size() == 2 && shape[0] == 1 && shape[1] >= 0);
  if (spec.form == Form::kScalar && !scalar_ok) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "input '%s' has shape %s; it must be [1] or [1, 1] (one value per request)", spec.name,
        ShapeString(shape)));
  }
  if (spec.form == Form::kList && !list_ok) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "input '%s' has shape %s; it must be [N] or [1, N]", spec.name, ShapeString(shape)));
  }
  return shape.empty() ? 0 : shape[shape.size() - 1];
}

// ---------------------------------------------------------------------------------------
// Decoding contents

// Reads an unsigned little-endian integer of `n` bytes.
uint64_t LoadLittleEndian(const char* p, int n) {
  uint64_t value = 0;
  for (int i = n - 1; i >= 0; --i) value = (value << 8) | static_cast<uint8_t>(p[i]);
  return value;
}

int64_t SignExtend(uint64_t value, int bytes) {
  if (bytes == 8) return static_cast<int64_t>(value);
  const int shift = 64 - 8 * bytes;
  return static_cast<int64_t>(value << shift) >> shift;
}

absl::StatusOr<std::vector<Element>> DecodeRaw(const std::string& name, const DataTypeInfo& type,
                                               int64_t count, const std::string& raw) {
  std::vector<Element> elements;
  if (type.type == DataType::kBytes) {
    size_t offset = 0;
    while (offset < raw.size()) {
      if (raw.size() - offset < 4) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "raw contents of input '%s' end inside an element's 4-byte length prefix", name));
      }
      const uint64_t length = LoadLittleEndian(raw.data() + offset, 4);
      offset += 4;
      if (length > raw.size() - offset) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "raw contents of input '%s': element %d declares %d bytes but only %d remain", name,
            elements.size(), length, raw.size() - offset));
      }
      elements.emplace_back(std::string(raw.data() + offset, length));
      offset += length;
    }
    if (static_cast<int64_t>(elements.size()) != count) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "raw contents of input '%s' hold %d BYTES elements; its shape needs %d", name,
          elements.size(), count));
    }
    return elements;
  }
  const int n = type.raw_bytes;
  if (static_cast<int64_t>(raw.size()) != count * n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "raw contents of input '%s' are %d bytes; %d %s elements need %d", name, raw.size(),
        count, type.name, count * n));
  }
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t bits = LoadLittleEndian(raw.data() + i * n, n);
    switch (type.type) {
      case DataType::kBool: elements.emplace_back(bits != 0); break;
      case DataType::kUint8:
      case DataType::kUint16:
      case DataType::kUint32:
      case DataType::kUint64: elements.emplace_back(bits); break;
      case DataType::kInt8:
      case DataType::kInt16:
      case DataType::kInt32:
      case DataType::kInt64: elements.emplace_back(SignExtend(bits, n)); break;
      case DataType::kFp32: {
        const uint32_t bits32 = static_cast<uint32_t>(bits);
        float value;
        std::memcpy(&value, &bits32, sizeof(value));
        elements.emplace_back(static_cast<double>(value));
        break;
      }
      case DataType::kFp64: {
        double value;
        std::memcpy(&value, &bits, sizeof(value));
        elements.emplace_back(value);
        break;
      }
      case DataType::kFp16:
      case DataType::kBf16:
      case DataType::kBytes:
        return absl::InvalidArgumentError(
            absl::StrFormat("input '%s': %s is not decoded", name, type.name));
    }
  }
  return elements;
}

template <typename Repeated>
absl::Status CheckTypedCount(const std::string& name, const DataTypeInfo& type,
                             const char* field, const Repeated& values, int64_t count) {
  if (values.size() == count) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "input '%s' (%s) has %d elements in contents.%s; its shape needs %d", name, type.name,
      values.size(), field, count));
}

absl::StatusOr<std::vector<Element>> DecodeTyped(const std::string& name,
                                                 const DataTypeInfo& type, int64_t count,
                                                 const InferTensorContents& contents) {
  std::vector<Element> elements;
  switch (type.type) {
    case DataType::kBool:
      KV_RETURN_IF_ERROR(
          CheckTypedCount(name, type, "bool_contents", contents.bool_contents(), count));
      for (bool v : contents.bool_contents()) elements.emplace_back(v);
      break;
    case DataType::kInt8:
    case DataType::kInt16:
    case DataType::kInt32:
      KV_RETURN_IF_ERROR(
          CheckTypedCount(name, type, "int_contents", contents.int_contents(), count));
      for (int32_t v : contents.int_contents()) elements.emplace_back(int64_t{v});
      break;
    case DataType::kInt64:
      KV_RETURN_IF_ERROR(
          CheckTypedCount(name, type, "int64_contents", contents.int64_contents(), count));
      for (int64_t v : contents.int64_contents()) elements.emplace_back(v);
      break;
    case DataType::kUint8:
    case DataType::kUint16:
    case DataType::kUint32:
      KV_RETURN_IF_ERROR(
          CheckTypedCount(name, type, "uint_contents", contents.uint_contents(), count));
      for (uint32_t v : contents.uint_contents()) elements.emplace_back(uint64_t{v});
      break;
    case DataType::kUint64:
      KV_RETURN_IF_ERROR(
          CheckTypedCount(name, type, "uint64_contents", contents.uint64_contents(), count));
      for (uint64_t v : contents.uint64_contents()) elements.emplace_back(v);
      break;
    case DataType::kFp32:
      KV_RETURN_IF_ERROR(
          CheckTypedCount(name, type, "fp32_contents", contents.fp32_contents(), count));
      for (float v : contents.fp32_contents()) elements.emplace_back(static_cast<double>(v));
      break;
    case DataType::kFp64:
      KV_RETURN_IF_ERROR(
          CheckTypedCount(name, type, "fp64_contents", contents.fp64_contents(), count));
      for (double v : contents.fp64_contents()) elements.emplace_back(v);
      break;
    case DataType::kBytes:
      KV_RETURN_IF_ERROR(
          CheckTypedCount(name, type, "bytes_contents", contents.bytes_contents(), count));
      for (const std::string& v : contents.bytes_contents()) elements.emplace_back(v);
      break;
    case DataType::kFp16:
    case DataType::kBf16:
      return absl::InvalidArgumentError(absl::StrFormat(
          "input '%s': %s has no typed contents field; send it as raw_input_contents", name,
          type.name));
  }
  return elements;
}

// ---------------------------------------------------------------------------------------
// Values: from a decoded element or from a request parameter

absl::StatusOr<int64_t> AsInt(std::string_view what, const Element& element, int64_t min,
                              int64_t max) {
  int64_t value = 0;
  if (const int64_t* v = std::get_if<int64_t>(&element)) {
    value = *v;
  } else if (const uint64_t* u = std::get_if<uint64_t>(&element)) {
    if (*u > static_cast<uint64_t>(max)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s is %d; it must be at most %d", what, *u, max));
    }
    value = static_cast<int64_t>(*u);
  } else {
    return absl::InvalidArgumentError(absl::StrFormat("%s must be an integer", what));
  }
  if (value < min || value > max) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s is %d; it must be in [%d, %d]", what, value, min, max));
  }
  return value;
}

absl::StatusOr<uint64_t> AsUint(std::string_view what, const Element& element) {
  if (const uint64_t* u = std::get_if<uint64_t>(&element)) return *u;
  if (const int64_t* v = std::get_if<int64_t>(&element)) {
    if (*v < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s is %d; it must be >= 0", what, *v));
    }
    return static_cast<uint64_t>(*v);
  }
  return absl::InvalidArgumentError(absl::StrFormat("%s must be an integer", what));
}

absl::StatusOr<double> AsFloat(std::string_view what, const Element& element) {
  if (const double* d = std::get_if<double>(&element)) return *d;
  if (const int64_t* v = std::get_if<int64_t>(&element)) return static_cast<double>(*v);
  if (const uint64_t* u = std::get_if<uint64_t>(&element)) return static_cast<double>(*u);
  return absl::InvalidArgumentError(absl::StrFormat("%s must be a number", what));
}

// Request parameters as elements. Which oneof choices a name takes is checked by the As*
// functions; a bool or string where a number is wanted is rejected there.
Element ParameterElement(const InferParameter& parameter) {
  switch (parameter.parameter_choice_case()) {
    case InferParameter::kBoolParam: return parameter.bool_param();
    case InferParameter::kInt64Param: return parameter.int64_param();
    case InferParameter::kStringParam: return parameter.string_param();
    case InferParameter::kDoubleParam: return parameter.double_param();
    case InferParameter::kUint64Param: return parameter.uint64_param();
    case InferParameter::PARAMETER_CHOICE_NOT_SET: break;
  }
  return std::string();
}

absl::StatusOr<bool> BoolParameter(std::string_view name, const InferParameter& parameter) {
  if (parameter.parameter_choice_case() != InferParameter::kBoolParam) {
    return absl::InvalidArgumentError(
        absl::StrFormat("parameter '%s' must be a bool_param", name));
  }
  return parameter.bool_param();
}

absl::StatusOr<std::string> StringParameter(std::string_view name,
                                            const InferParameter& parameter) {
  if (parameter.parameter_choice_case() != InferParameter::kStringParam) {
    return absl::InvalidArgumentError(
        absl::StrFormat("parameter '%s' must be a string_param", name));
  }
  return parameter.string_param();
}

// Applies one scalar value (a tensor's single element or a parameter) to `out`.
absl::Status ApplyScalar(std::string_view name, const Element& element, KServeRequest* out) {
  constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  v1::GenerationParams& params = out->params;
  if (name == "max_tokens") {
    KV_ASSIGN_OR_RETURN(const int64_t v, AsInt(name, element, kInt32Min, kInt32Max));
    params.set_max_tokens(static_cast<int32_t>(v));
  } else if (name == "top_k") {
    KV_ASSIGN_OR_RETURN(const int64_t v, AsInt(name, element, kInt32Min, kInt32Max));
    params.mutable_sampling()->set_top_k(static_cast<int32_t>(v));
  } else if (name == "temperature") {
    KV_ASSIGN_OR_RETURN(const double v, AsFloat(name, element));
    params.mutable_sampling()->set_temperature(static_cast<float>(v));
  } else if (name == "top_p") {
    KV_ASSIGN_OR_RETURN(const double v, AsFloat(name, element));
    params.mutable_sampling()->set_top_p(static_cast<float>(v));
  } else if (name == "seed") {
    KV_ASSIGN_OR_RETURN(const uint64_t v, AsUint(name, element));
    params.mutable_sampling()->set_seed(v);
  } else if (name == "stream") {
    const bool* v = std::get_if<bool>(&element);
    if (v == nullptr) {
      return absl::InvalidArgumentError("stream must be a boolean");
    }
    out->stream = *v;
  }
  return absl::OkStatus();
}

// Parameters that may stand in for a scalar input tensor.
constexpr const char* kScalarParameters[] = {"max_tokens", "temperature", "top_k", "top_p",
                                             "seed", "stream"};

absl::Status ReadInputs(const ModelInferRequest& request, KServeRequest* out,
                        std::map<std::string, bool>* given) {
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "raw_input_contents has %d entries for %d inputs; give one per input, in order",
        request.raw_input_contents_size(), request.inputs_size()));
  }
  out->raw_output = raw;
  bool has_text = false;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const ModelInferRequest::InferInputTensor& tensor = request.inputs(i);
    const InputSpec* spec = FindInputSpec(tensor.name());
    if (spec == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "unexpected input '%s'; this model takes %s", tensor.name(), AllInputNames()));
    }
    if ((*given)[tensor.name()]) {
      return absl::InvalidArgumentError(
          absl::StrFormat("input '%s' is given twice", tensor.name()));
    }
    (*given)[tensor.name()] = true;
    const DataTypeInfo* type = FindDataType(tensor.datatype());
    if (type == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "input '%s' has unknown datatype '%s'; datatypes are %s", tensor.name(),
          tensor.datatype(), AllDataTypeNames()));
    }
    bool accepted = false;
    for (DataType t : spec->accepted) accepted = accepted || t == type->type;
    if (!accepted) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "input '%s' has datatype %s; it must be %s", tensor.name(), type->name,
          AcceptedNames(*spec)));
    }
    KV_ASSIGN_OR_RETURN(const int64_t count, CheckShape(*spec, tensor));
    if (raw && tensor.has_contents()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "input '%s' sets contents but the request uses raw_input_contents; use one form "
          "for all inputs",
          tensor.name()));
    }
    KV_ASSIGN_OR_RETURN(std::vector<Element> elements,
                        raw ? DecodeRaw(tensor.name(), *type, count, request.raw_input_contents(i))
                            : DecodeTyped(tensor.name(), *type, count, tensor.contents()));
    if (tensor.name() == kTextInput) {
      std::string& text = std::get<std::string>(elements[0]);
      if (text.empty()) {
        return absl::InvalidArgumentError("input 'text_input' is empty; it must hold the prompt");
      }
      out->params.set_prompt(std::move(text));
      out->batch_dim = tensor.shape_size() == 2;
      has_text = true;
    } else if (tensor.name() == "stop_words") {
      for (Element& element : elements) {
        out->params.add_stop(std::move(std::get<std::string>(element)));
      }
    } else {
      KV_RETURN_IF_ERROR(ApplyScalar(tensor.name(), elements[0], out));
    }
  }
  if (!has_text) {
    return absl::InvalidArgumentError(
        "missing input 'text_input' (BYTES, shape [1]): the prompt text");
  }
  return absl::OkStatus();
}

absl::Status ReadParameters(const ModelInferRequest& request,
                            const std::map<std::string, bool>& given, KServeRequest* out) {
  for (const auto& [name, parameter] : request.parameters()) {
    if (name == "kv_policy") {
      KV_ASSIGN_OR_RETURN(std::string spec, StringParameter(name, parameter));
      out->params.set_kv_policy(std::move(spec));
    } else if (name == "priority") {
      KV_ASSIGN_OR_RETURN(
          const int64_t priority,
          AsInt("parameter 'priority'", ParameterElement(parameter),
                std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()));
      out->params.set_priority(static_cast<int32_t>(priority));
    } else if (name == "triton_enable_empty_final_response") {
      KV_ASSIGN_OR_RETURN(out->empty_final_response, BoolParameter(name, parameter));
    } else {
      for (const char* scalar : kScalarParameters) {
        if (name != scalar) continue;
        if (given.count(name) > 0) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "'%s' is given both as an input tensor and as a request parameter; give it once",
              name));
        }
        if (name == "stream") {
          KV_ASSIGN_OR_RETURN(const bool stream, BoolParameter(name, parameter));
          out->stream = stream;
        } else {
          KV_RETURN_IF_ERROR(
              ApplyScalar(name, ParameterElement(parameter), out));
        }
      }
      // Other parameters are ignored, as the protocol allows (clients add their own).
    }
  }
  return absl::OkStatus();
}

absl::Status ReadRequestedOutputs(const ModelInferRequest& request, KServeRequest* out) {
  if (request.outputs_size() == 0) return absl::OkStatus();
  out->want_text = false;
  out->want_ids = false;
  for (const auto& output : request.outputs()) {
    bool* want = nullptr;
    if (output.name() == kTextOutput) {
      want = &out->want_text;
    } else if (output.name() == kOutputIds) {
      want = &out->want_ids;
      out->ids_first = !out->want_text;
    } else {
      return absl::InvalidArgumentError(absl::StrFormat(
          "unknown output '%s'; this model's outputs are %s and %s", output.name(),
          kTextOutput, kOutputIds));
    }
    if (*want) {
      return absl::InvalidArgumentError(
          absl::StrFormat("output '%s' is requested twice", output.name()));
    }
    *want = true;
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// Outputs

void AppendLittleEndian32(uint32_t value, std::string* out) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

void AddTextOutput(const KServeRequest& request, std::string_view text,
                   ModelInferResponse* response) {
  ModelInferResponse::InferOutputTensor* output = response->add_outputs();
  output->set_name(kTextOutput);
  output->set_datatype("BYTES");
  if (request.batch_dim) output->add_shape(1);
  output->add_shape(1);
  if (request.raw_output) {
    std::string* raw = response->add_raw_output_contents();
    AppendLittleEndian32(static_cast<uint32_t>(text.size()), raw);
    raw->append(text);
  } else {
    output->mutable_contents()->add_bytes_contents(std::string(text));
  }
}

void AddIdsOutput(const KServeRequest& request, absl::Span<const TokenId> ids,
                  ModelInferResponse* response) {
  ModelInferResponse::InferOutputTensor* output = response->add_outputs();
  output->set_name(kOutputIds);
  output->set_datatype("INT32");
  if (request.batch_dim) output->add_shape(1);
  output->add_shape(static_cast<int64_t>(ids.size()));
  if (request.raw_output) {
    std::string* raw = response->add_raw_output_contents();
    raw->reserve(4 * ids.size());
    for (const TokenId id : ids) AppendLittleEndian32(static_cast<uint32_t>(id), raw);
  } else {
    output->mutable_contents()->mutable_int_contents()->Add(ids.begin(), ids.end());
  }
}

void AddInt64Parameter(std::string_view name, int64_t value, ModelInferResponse* response) {
  (*response->mutable_parameters())[std::string(name)].set_int64_param(value);
}

std::string FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kStopString: return "stop_string";
    case FinishReason::kContextLength: return "context_length";
    case FinishReason::kUnspecified: break;
  }
  return "unspecified";
}

void AddTensorMetadata(std::string_view name, std::string_view datatype,
                       std::initializer_list<int64_t> shape,
                       google::protobuf::RepeatedPtrField<
                           inference::ModelMetadataResponse::TensorMetadata>* into) {
  inference::ModelMetadataResponse::TensorMetadata* tensor = into->Add();
  tensor->set_name(std::string(name));
  tensor->set_datatype(std::string(datatype));
  for (int64_t dim : shape) tensor->add_shape(dim);
}

}  // namespace

absl::Status CheckKServeModel(std::string_view name, std::string_view version,
                              std::string_view served) {
  KV_RETURN_IF_ERROR(CheckModelName(name, served));
  if (version.empty() || version == kKServeModelVersion) return absl::OkStatus();
  return absl::NotFoundError(absl::StrFormat(
      "model '%s' has no version '%s'; the served version is \"%s\" (or leave it empty)",
      served, version, kKServeModelVersion));
}

absl::StatusOr<KServeRequest> ParseKServeRequest(const ModelInferRequest& request) {
  KServeRequest out;
  out.id = request.id();
  std::map<std::string, bool> given;
  KV_RETURN_IF_ERROR(ReadInputs(request, &out, &given));
  KV_RETURN_IF_ERROR(ReadParameters(request, given, &out));
  KV_RETURN_IF_ERROR(ReadRequestedOutputs(request, &out));
  return out;
}

void FillKServeIdentity(const KServeRequest& request, std::string_view model_name,
                        ModelInferResponse* response) {
  response->set_model_name(std::string(model_name));
  response->set_model_version(kKServeModelVersion);
  response->set_id(request.id);
}

void FillKServeOutputs(const KServeRequest& request, std::string_view model_name,
                       std::string_view text, absl::Span<const TokenId> token_ids,
                       ModelInferResponse* response) {
  FillKServeIdentity(request, model_name, response);
  if (request.ids_first && request.want_ids) AddIdsOutput(request, token_ids, response);
  if (request.want_text) AddTextOutput(request, text, response);
  if (!request.ids_first && request.want_ids) AddIdsOutput(request, token_ids, response);
}

void AddKServeFinishParameters(FinishReason reason, const Usage& usage,
                               ModelInferResponse* response) {
  (*response->mutable_parameters())["finish_reason"].set_string_param(FinishReasonName(reason));
  AddInt64Parameter("prompt_tokens", usage.prompt_tokens, response);
  AddInt64Parameter("completion_tokens", usage.completion_tokens, response);
  AddInt64Parameter("cached_prompt_tokens", usage.cached_prompt_tokens, response);
}

void SetKServeBoolParameter(std::string_view name, bool value, ModelInferResponse* response) {
  (*response->mutable_parameters())[std::string(name)].set_bool_param(value);
}

void FillKServeModelMetadata(const ModelDescription& model, const RequestLimits& limits,
                             inference::ModelMetadataResponse* response) {
  response->set_name(limits.model_name);
  response->add_versions(kKServeModelVersion);
  response->set_platform("kvserve");
  auto* inputs = response->mutable_inputs();
  AddTensorMetadata(kTextInput, "BYTES", {1}, inputs);
  AddTensorMetadata("max_tokens", "INT32", {1}, inputs);
  AddTensorMetadata("temperature", "FP32", {1}, inputs);
  AddTensorMetadata("top_k", "INT32", {1}, inputs);
  AddTensorMetadata("top_p", "FP32", {1}, inputs);
  AddTensorMetadata("seed", "UINT64", {1}, inputs);
  AddTensorMetadata("stream", "BOOL", {1}, inputs);
  AddTensorMetadata("stop_words", "BYTES", {-1}, inputs);
  auto* outputs = response->mutable_outputs();
  AddTensorMetadata(kTextOutput, "BYTES", {1}, outputs);
  AddTensorMetadata(kOutputIds, "INT32", {-1}, outputs);

  const engine::ModelConfig& config = model.config;
  auto& properties = *response->mutable_properties();
  properties["architecture"] = config.architecture;
  properties["format"] = model.format;
  properties["device"] = model.device;
  properties["context_length"] = absl::StrCat(config.context_length);
  properties["vocab_size"] = absl::StrCat(config.vocab_size);
  properties["parameters"] = absl::StrCat(model.parameters);
  properties["bos_token_id"] = absl::StrCat(model.bos_id);
  properties["eos_token_id"] = absl::StrCat(model.eos_id);
  properties["max_tokens_limit"] = absl::StrCat(limits.max_tokens_limit);
  properties["default_max_tokens"] = absl::StrCat(limits.default_max_tokens);
  properties["default_kv_policy"] =
      limits.default_kv_policy != nullptr ? limits.default_kv_policy->spec().ToString() : "full";
  properties["request_parameters"] =
      "kv_policy, priority, stream, triton_enable_empty_final_response, max_tokens, "
      "temperature, top_k, top_p, seed";
}

}  // namespace kvserve::server
