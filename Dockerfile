# kvserve container: build on Debian 12 with the same scripts CI runs, then a slim runtime.
#   docker build -t kvserve .
#   docker run --rm -p 50051:50051 -p 9090:9090 kvserve
#   docker run --rm -p 50051:50051 kvserve --model /models/other.gguf --kv-policy h2o:keep=0.5
#
# The engine is compiled with -march=native for the build machine's CPU (AVX-512 kernels):
# build the image on the CPU family it will run on.
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install_deps.sh scripts/
RUN scripts/install_deps.sh
COPY . .
RUN BUILD_DIR=/src/build scripts/build.sh -DKVSERVE_BUILD_TESTS=OFF

FROM debian:12-slim AS runtime
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 libdnnl2 libgomp1 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libspdlog1.10 libfmt9 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home kvserve
COPY --from=build /src/build/kvserve /src/build/kvserve-cli /usr/local/bin/
COPY models/stories260K.gguf /models/stories260K.gguf
USER 10001
# gRPC API (kvserve.v1, health, reflection) and Prometheus /metrics.
EXPOSE 50051 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["kvserve-cli", "health", "--server", "127.0.0.1:50051", "--timeout", "2"]
ENTRYPOINT ["kvserve"]
# Every flag can be overridden by passing arguments to `docker run`.
CMD ["--model", "/models/stories260K.gguf", "--listen", "0.0.0.0:50051", \
     "--metrics-listen", "0.0.0.0:9090"]
