// ReactorLink: how the engine side reaches a gRPC reactor that may already be gone.
//
// A reactor and its GenerationStream's notify callback share one link. The callback runs on
// the engine thread and gRPC may delete the reactor (OnDone) at any moment, so the reactor
// pointer lives under the link's mutex and OnDone clears it before deleting the reactor.
#ifndef KVSERVE_SERVER_GRPC_REACTOR_LINK_H_
#define KVSERVE_SERVER_GRPC_REACTOR_LINK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kvserve::server {

template <typename Reactor>
struct ReactorLink {
  absl::Mutex mu;
  Reactor* reactor ABSL_GUARDED_BY(mu) = nullptr;  // Null once gRPC is done with it.
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_REACTOR_LINK_H_
