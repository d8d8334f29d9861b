#include "engine/compute/device.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvserve::engine {
namespace {

// Abseil 20220623 (Debian) has its own string_view type, which StrCat takes.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string_view CpuIsaName(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::all:
      return "all";
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx512_mic:
      return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops:
      return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx2_vnni";
  }
  return "unknown";
}

constexpr size_t kWorkspaceAlignment = 64;

}  // namespace

absl::StatusOr<DeviceKind> ParseDeviceKind(std::string_view name) {
  if (name == "cpu") return DeviceKind::kCpu;
  if (name == "gpu") return DeviceKind::kGpu;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device \"", Sv(name), "\"; choose one of: cpu, gpu"));
}

std::string_view DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kCpu:
      return "cpu";
    case DeviceKind::kGpu:
      return "gpu";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Device>> Device::Create(DeviceKind kind) {
  dnnl::engine::kind engine_kind = dnnl::engine::kind::cpu;
  if (kind == DeviceKind::kGpu) {
    if (dnnl_version()->gpu_runtime == DNNL_RUNTIME_NONE) {
      return absl::FailedPreconditionError(
          "this oneDNN build has no GPU runtime (it was built for CPU only); use --device=cpu "
          "or install a oneDNN built with a GPU runtime");
    }
    engine_kind = dnnl::engine::kind::gpu;
  }
  try {
    if (dnnl::engine::get_count(engine_kind) == 0) {
      if (kind == DeviceKind::kGpu) {
        return absl::FailedPreconditionError(
            "oneDNN has an OpenCL GPU runtime but found no GPU device (no OpenCL ICD / driver "
            "installed); use --device=cpu");
      }
      return absl::FailedPreconditionError("oneDNN found no CPU engine");
    }
    dnnl::engine engine(engine_kind, 0);
    dnnl::stream stream(engine);
    return std::make_unique<Device>(PrivateKey(), kind, std::move(engine), std::move(stream));
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("could not create the oneDNN ",
                                            Sv(DeviceKindName(kind)), " engine: ", e.what()));
  }
}

Device::Device(PrivateKey, DeviceKind kind, dnnl::engine engine, dnnl::stream stream)
    : kind_(kind), engine_(std::move(engine)), stream_(std::move(stream)) {}

Device::~Device() = default;

std::string Device::Describe() const {
  const dnnl_version_t* v = dnnl_version();
  std::string out = absl::StrFormat("%s (oneDNN %d.%d.%d", Sv(DeviceKindName(kind_)), v->major,
                                    v->minor, v->patch);
  if (kind_ == DeviceKind::kCpu) {
    absl::StrAppend(&out, ", isa ", Sv(CpuIsaName(dnnl::get_effective_cpu_isa())));
  }
  absl::StrAppend(&out, ")");
  return out;
}

void Device::Workspace::Free::operator()(uint8_t* p) const { std::free(p); }

absl::Status Device::Workspace::Reserve(size_t bytes) {
  if (bytes <= size_) return absl::OkStatus();
  const size_t rounded =
      (bytes + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(kWorkspaceAlignment, rounded));
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("could not allocate a ", rounded, "-byte compute workspace"));
  }
  data_.reset(p);
  size_ = rounded;
  return absl::OkStatus();
}

void SetComputeThreads(int n) {
  // oneDNN sizes its work split by omp_get_max_threads() when a primitive runs and computes
  // wrong results if OpenMP then gives it fewer threads: with dynamic adjustment on
  // (OMP_DYNAMIC=true) a team may come out smaller, and a team never exceeds
  // omp_get_thread_limit() (OMP_THREAD_LIMIT) although omp_get_max_threads() may. So turn
  // dynamic adjustment off and never ask for more threads than the limit allows.
  omp_set_dynamic(0);
  const int wanted = n > 0 ? n : omp_get_num_procs();
  omp_set_num_threads(std::max(1, std::min(wanted, omp_get_thread_limit())));
}

}  // namespace kvserve::engine
