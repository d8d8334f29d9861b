#include "tests/integration/test_client.h"

#include <chrono>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/unknown_field_set.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/impl/codegen/client_context.h"
#include "grpcpp/impl/codegen/rpc_method.h"
#include "grpcpp/impl/codegen/sync_stream.h"
#include "nlohmann/json.hpp"

namespace kvserve::testing {
namespace {

void SetTimeout(grpc::ClientContext& context, absl::Duration timeout) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

grpc::ByteBuffer ToByteBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromByteBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (!buffer.Dump(&slices).ok()) return bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return bytes;
}

}  // namespace

std::shared_ptr<grpc::Channel> Connect(const std::string& address) {
  return grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
}

GenerateResult Generate(v1::Inference::Stub& stub, const v1::GenerationParams& params,
                        absl::Duration timeout) {
  GenerateResult result;
  grpc::ClientContext context;
  SetTimeout(context, timeout);
  v1::GenerateRequest request;
  *request.mutable_params() = params;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub.Generate(&context, request);
  v1::GenerateResponse chunk;
  while (reader->Read(&chunk)) {
    result.token_ids.insert(result.token_ids.end(), chunk.token_ids().begin(),
                            chunk.token_ids().end());
    result.text += chunk.text();
    result.finish_reason = chunk.finish_reason();
    result.usage = chunk.usage();
    result.chunks.push_back(chunk);
  }
  result.status = reader->Finish();
  return result;
}

CompleteResult Complete(v1::Inference::Stub& stub, const v1::GenerationParams& params,
                        absl::Duration timeout) {
  CompleteResult result;
  grpc::ClientContext context;
  SetTimeout(context, timeout);
  v1::CompleteRequest request;
  *request.mutable_params() = params;
  result.status = stub.Complete(&context, request, &result.response);
  return result;
}

absl::StatusOr<std::string> HealthCheck(grpc::Channel& channel, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(
      std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  SetTimeout(context, absl::Seconds(10));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
}

absl::StatusOr<std::vector<std::string>> ReflectionListServices(grpc::Channel& channel) {
  const grpc::internal::RpcMethod method(
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      grpc::internal::RpcMethod::BIDI_STREAMING);
  grpc::ClientContext context;
  SetTimeout(context, absl::Seconds(10));
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          &channel, method, &context));

  // ServerReflectionRequest { list_services (field 7, string) = "*" }.
  std::string request;
  {
    google::protobuf::io::StringOutputStream output(&request);
    google::protobuf::io::CodedOutputStream coded(&output);
    coded.WriteTag(google::protobuf::internal::WireFormatLite::MakeTag(
        7, google::protobuf::internal::WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
    coded.WriteVarint32(1);
    coded.WriteString("*");
  }
  if (!stream->Write(ToByteBuffer(request))) return absl::UnavailableError("write failed");
  stream->WritesDone();
  grpc::ByteBuffer reply;
  const bool got = stream->Read(&reply);
  const grpc::Status status = stream->Finish();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  if (!got) return absl::InternalError("no reflection response");

  // ServerReflectionResponse.list_services_response (6) -> ListServiceResponse.service (1,
  // repeated) -> ServiceResponse.name (1).
  google::protobuf::UnknownFieldSet response;
  if (!response.ParseFromString(FromByteBuffer(reply))) {
    return absl::InternalError("unparsable reflection response");
  }
  std::vector<std::string> names;
  for (int i = 0; i < response.field_count(); ++i) {
    const google::protobuf::UnknownField& field = response.field(i);
    if (field.number() != 6 || field.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      continue;
    }
    google::protobuf::UnknownFieldSet list;
    if (!list.ParseFromString(field.length_delimited())) {
      return absl::InternalError("unparsable list_services_response");
    }
    for (int j = 0; j < list.field_count(); ++j) {
      if (list.field(j).number() != 1) continue;
      google::protobuf::UnknownFieldSet service;
      if (!service.ParseFromString(list.field(j).length_delimited())) {
        return absl::InternalError("unparsable ServiceResponse");
      }
      for (int k = 0; k < service.field_count(); ++k) {
        if (service.field(k).number() == 1) names.push_back(service.field(k).length_delimited());
      }
    }
  }
  return names;
}

absl::StatusOr<Reference> LoadReference() {
  const std::string path =
      std::string(KVSERVE_SOURCE_DIR) + "/tests/testdata/stories260K_reference.json";
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  const nlohmann::json json = nlohmann::json::parse(file, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.contains("results") || json["results"].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not the expected JSON"));
  }
  const nlohmann::json& first = json["results"][0];
  Reference reference;
  reference.prompt = first.value("prompt", "");
  reference.prompt_ids = first.value("prompt_ids", std::vector<int32_t>{});
  reference.generated_ids = first.value("generated_ids", std::vector<int32_t>{});
  reference.generated_text = first.value("generated_text", "");
  return reference;
}

}  // namespace kvserve::testing
