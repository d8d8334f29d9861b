#!/usr/bin/env bash
# Installs every build, test and run dependency of kvserve from Debian 12's packages.
# Does nothing (quickly) when all are present. Needs root or sudo to install.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libdnnl-dev ocl-icd-opencl-dev opencl-c-headers prometheus-cpp-dev
  libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-grpcio python3-grpc-tools python3-protobuf
  prometheus yamllint  # tests: promtool + a real Prometheus server; deploy/ YAML lint
  openssl             # tests: TLS/mTLS certificates are made at test time
  clang-14 libclang-rt-14-dev  # tests: libFuzzer targets (scripts/fuzz.sh; libclang_rt.fuzzer)
  # The g++ sanitizer runtimes (libasan8, libubsan1, libtsan2) come with build-essential.
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
