// The project's logging: spdlog (Debian's libspdlog-dev) behind one header so call sites
// read the same everywhere. Thread-safe (spdlog's default logger is).
//
//   KV_LOG_INFO("listening on {}", address);
#ifndef KVSERVE_ENGINE_COMMON_LOGGING_H_
#define KVSERVE_ENGINE_COMMON_LOGGING_H_

#include <spdlog/spdlog.h>

#define KV_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define KV_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define KV_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define KV_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)

#endif  // KVSERVE_ENGINE_COMMON_LOGGING_H_
