# The worker image: `tessera worker`, training with Burn.
#   GPU (default): a CUDA runtime base, LibTorch from the torch 2.9.0 wheel (with the
#   NVIDIA libraries it pins), the `tch` build; the binary's rpath finds /opt/torch/lib.
#   CPU:  --build-arg VARIANT=cpu: Burn's pure-Rust flex backend on a slim Debian base.
# Build from the repository root:
#   docker build -f charts/images/worker.Dockerfile --build-arg VERSION=0.1.0 -t tessera-worker:0.1.0-cuda .
#   docker build -f charts/images/worker.Dockerfile --build-arg VARIANT=cpu --build-arg VERSION=0.1.0 -t tessera-worker:0.1.0-cpu .
ARG VARIANT=cuda

# --- LibTorch: the torch wheel's libraries (the GPU variant links and ships them).
FROM python:3.12-slim-bookworm AS torch
ARG VARIANT
RUN if [ "$VARIANT" = "cuda" ]; then \
        pip install --no-cache-dir torch==2.9.0; \
    else \
        mkdir -p /usr/local/lib/python3.12/site-packages/torch/lib \
                 /usr/local/lib/python3.12/site-packages/nvidia; \
    fi

# --- build stage.
FROM rust:1.95-slim-bookworm AS build
ARG VARIANT
# torch-sys compiles its C++ bindings against LibTorch's headers.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY --from=torch /usr/local/lib/python3.12/site-packages/torch /opt/torch
COPY . .
ENV LIBTORCH=/opt/torch
RUN if [ "$VARIANT" = "cuda" ]; then FEATURES="tch"; else FEATURES="worker"; fi \
    && cargo build --release --locked -p tessera-orchestrator --features "$FEATURES" --bin tessera

# --- runtime bases, one per variant.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 AS base-cuda
FROM debian:bookworm-slim AS base-cpu

# --- runtime stage.
# hadolint ignore=DL3006
FROM base-${VARIANT}
ARG VARIANT
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="tessera-worker" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.description="Tessera worker (${VARIANT})"
# Only the GPU variant carries LibTorch and the NVIDIA libraries (empty folders for CPU);
# torch's libraries find the NVIDIA ones through their own rpath ($ORIGIN/../../nvidia).
COPY --from=torch /usr/local/lib/python3.12/site-packages/torch/lib /opt/torch/lib
COPY --from=torch /usr/local/lib/python3.12/site-packages/nvidia /opt/nvidia
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 tessera \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin tessera
COPY --from=build /src/target/release/tessera /usr/local/bin/tessera
USER 10001:10001
EXPOSE 9465
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["worker", "--help"]
