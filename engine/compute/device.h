// The oneDNN engine and stream that kvserve's matrix products run on, and the OpenMP thread
// count oneDNN uses.
//
// Thread safety: a Device is thread-compatible. It is meant to be used from the single compute
// thread (OpenMP teams are per calling thread, and oneDNN streams are not thread-safe). The
// shared Workspace it hands out is mutable state: every Linear created on a Device must run on
// the same thread as the others.
#ifndef KVSERVE_ENGINE_COMPUTE_DEVICE_H_
#define KVSERVE_ENGINE_COMPUTE_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace kvserve::engine {

enum class DeviceKind { kCpu, kGpu };

// "cpu" or "gpu"; anything else is INVALID_ARGUMENT naming the choices.
absl::StatusOr<DeviceKind> ParseDeviceKind(std::string_view name);
std::string_view DeviceKindName(DeviceKind kind);

class Device {
 public:
  // kCpu always works where oneDNN does. kGpu is FAILED_PRECONDITION, with a message saying
  // why and what to do, when this oneDNN build has no GPU runtime or finds no GPU device.
  static absl::StatusOr<std::unique_ptr<Device>> Create(DeviceKind kind);

  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  ~Device();

  DeviceKind kind() const { return kind_; }
  dnnl::engine& engine() { return engine_; }
  dnnl::stream& stream() { return stream_; }

  // e.g. "cpu (oneDNN 2.6.3, isa avx512_core_bf16)".
  std::string Describe() const;

  // A host buffer shared by every Linear on this device (padded activations, oneDNN
  // scratchpads). Each Linear asks for the bytes its largest primitive needs when it creates
  // that primitive, so the buffer only grows during warm-up; Forward calls then reuse it
  // without allocating. The pointer is valid until the next Reserve call that grows it.
  // 64-byte aligned.
  class Workspace {
   public:
    // Grows the buffer to at least `bytes` (keeping nothing: contents are scratch).
    // RESOURCE_EXHAUSTED if the memory cannot be allocated.
    absl::Status Reserve(size_t bytes);
    uint8_t* data() const { return data_.get(); }
    size_t size() const { return size_; }

   private:
    struct Free {
      void operator()(uint8_t* p) const;
    };
    std::unique_ptr<uint8_t, Free> data_;
    size_t size_ = 0;
  };
  Workspace& workspace() { return workspace_; }

  // Use Create(); public only for std::make_unique, and only Device can make the key.
  class PrivateKey {
    friend class Device;
    PrivateKey() = default;
  };
  Device(PrivateKey, DeviceKind kind, dnnl::engine engine, dnnl::stream stream);

 private:
  const DeviceKind kind_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  Workspace workspace_;
};

// Sets the number of OpenMP threads oneDNN uses for calls made from the CALLING thread (each
// thread that calls oneDNN has its own team). n <= 0 means one per available core. Also turns
// off OpenMP's dynamic adjustment and caps n at OMP_THREAD_LIMIT for that thread: oneDNN
// needs every thread it was promised.
void SetComputeThreads(int n);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_COMPUTE_DEVICE_H_
