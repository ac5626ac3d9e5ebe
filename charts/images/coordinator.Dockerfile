# The coordinator image: `tessera serve`, `submit`, `status`, `report` (no Burn, no
# LibTorch: built without the `worker` feature). Build from the repository root:
#   docker build -f charts/images/coordinator.Dockerfile --build-arg VERSION=0.1.0 -t tessera-coordinator:0.1.0 .

# --- build stage: the Rust toolchain the workspace asks for (rust-version 1.95).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tessera-orchestrator --no-default-features --bin tessera

# --- runtime stage: a slim Debian with CA certificates (for S3 over TLS).
FROM debian:bookworm-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="tessera-coordinator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.description="Tessera coordinator: sweeps, journal, Parquet results, metrics"
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 tessera \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin tessera \
    && mkdir -p /var/lib/tessera \
    && chown 10001:10001 /var/lib/tessera
COPY --from=build /src/target/release/tessera /usr/local/bin/tessera
USER 10001:10001
WORKDIR /var/lib/tessera
EXPOSE 7946 9464
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["serve", "--listen=0.0.0.0:7946", "--state=/var/lib/tessera", "--metrics-addr=0.0.0.0:9464"]
