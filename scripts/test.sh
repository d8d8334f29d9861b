#!/usr/bin/env bash
# Installs what is missing, builds kvserve and runs the whole test suite
# (unit, integration over real gRPC on loopback, end-to-end with the CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
# oneDNN's OpenMP threads spin while waiting; tests run one at a time on small machines.
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${TEST_JOBS:-1}" "$@"
