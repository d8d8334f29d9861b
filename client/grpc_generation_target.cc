#include "client/grpc_generation_target.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/grpc_status.h"
#include "client/server_address.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_callback.h"

namespace kvserve::client {
namespace {

std::chrono::system_clock::time_point DeadlineAfter(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(seconds));
}

}  // namespace

// One streaming Generate RPC. gRPC owns its lifetime from StartCall() until OnDone(), where
// it deletes itself (the callback API's sanctioned pattern), then tells the target.
class GrpcGenerationTarget::GenerateCall final
    : public grpc::ClientReadReactor<kvserve::v1::GenerateResponse> {
 public:
  GenerateCall(GrpcGenerationTarget* owner, const WorkItem& item, GenerationCallbacks callbacks)
      : owner_(owner), callbacks_(std::move(callbacks)) {
    kvserve::v1::GenerationParams* params = request_.mutable_params();
    params->mutable_prompt_token_ids()->Add(item.prompt_token_ids.begin(),
                                            item.prompt_token_ids.end());
    params->set_max_tokens(item.max_tokens);
    if (!item.kv_policy.empty()) params->set_kv_policy(item.kv_policy);
    params->mutable_sampling()->set_temperature(item.temperature);
    params->mutable_sampling()->set_seed(item.seed);
    context_.set_deadline(DeadlineAfter(item.timeout_s));
  }

  void Start(kvserve::v1::Inference::Stub* stub) {
    stub->async()->Generate(&context_, &request_, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // Stream over; OnDone follows with the status.
    if (response_.token_ids_size() > 0) callbacks_.on_tokens(response_.token_ids_size());
    if (response_.finish_reason() != kvserve::v1::FINISH_REASON_UNSPECIFIED) {
      saw_finish_ = true;
      outcome_.prompt_tokens = response_.usage().prompt_tokens();
      outcome_.completion_tokens = response_.usage().completion_tokens();
    }
    response_.Clear();
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    outcome_.status = FromGrpcStatus(status);
    if (outcome_.status.ok() && !saw_finish_) {
      // The API promises a last chunk with the finish reason; its absence is a server bug.
      outcome_.status = absl::InternalError("stream ended OK without a finish reason");
    }
    callbacks_.on_done(outcome_);
    GrpcGenerationTarget* owner = owner_;
    delete this;
    owner->CallFinished();
  }

 private:
  GrpcGenerationTarget* const owner_;
  GenerationCallbacks callbacks_;
  grpc::ClientContext context_;
  kvserve::v1::GenerateRequest request_;
  kvserve::v1::GenerateResponse response_;
  GenerationOutcome outcome_;
  bool saw_finish_ = false;
};

absl::StatusOr<std::unique_ptr<GrpcGenerationTarget>> GrpcGenerationTarget::Create(
    const GrpcTargetOptions& options) {
  absl::StatusOr<ServerAddress> address = ParseServerAddress(options.server);
  if (!address.ok()) return address.status();
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(options.server, grpc::InsecureChannelCredentials());
  return std::make_unique<GrpcGenerationTarget>(PrivateKey(), options.server,
                                                std::move(channel));
}

GrpcGenerationTarget::GrpcGenerationTarget(PrivateKey, std::string server,
                                           std::shared_ptr<grpc::Channel> channel)
    : server_(std::move(server)),
      channel_(std::move(channel)),
      stub_(kvserve::v1::Inference::NewStub(channel_)) {}

GrpcGenerationTarget::~GrpcGenerationTarget() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int64_t* in_flight) { return *in_flight == 0; }, &calls_in_flight_));
}

std::string GrpcGenerationTarget::Describe() const { return absl::StrCat("grpc ", server_); }

absl::StatusOr<TargetInfo> GrpcGenerationTarget::GetInfo(double timeout_s) {
  grpc::ClientContext context;
  context.set_deadline(DeadlineAfter(timeout_s));
  kvserve::v1::GetModelInfoRequest request;
  kvserve::v1::GetModelInfoResponse response;
  const grpc::Status status = stub_->GetModelInfo(&context, request, &response);
  if (!status.ok()) {
    const absl::Status converted = FromGrpcStatus(status);
    return absl::Status(converted.code(),
                        absl::StrCat("GetModelInfo on ", server_, ": ", converted.message()));
  }
  TargetInfo info;
  info.model_name = response.name();
  info.vocab_size = response.vocab_size();
  info.max_tokens_limit = response.max_tokens_limit();
  return info;
}

void GrpcGenerationTarget::StartGenerate(const WorkItem& item, GenerationCallbacks callbacks) {
  {
    absl::MutexLock lock(&mu_);
    ++calls_in_flight_;
  }
  // Owned by gRPC until its OnDone() deletes it.
  auto call = std::make_unique<GenerateCall>(this, item, std::move(callbacks));
  call.release()->Start(stub_.get());
}

void GrpcGenerationTarget::CallFinished() {
  absl::MutexLock lock(&mu_);
  --calls_in_flight_;
}

}  // namespace kvserve::client
