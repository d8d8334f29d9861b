#!/usr/bin/env bash
# Installs what is missing, builds kvserve and serves the bundled model.
# Arguments are passed to the server, e.g. scripts/run.sh --listen 0.0.0.0:50051
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh -DKVSERVE_BUILD_TESTS=OFF
exec "${BUILD_DIR:-build}/kvserve" --model models/stories260K.gguf \
  --scalekv-budgets models/stories260K.scalekv.json "$@"
