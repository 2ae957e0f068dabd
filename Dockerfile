# syntax=docker/dockerfile:1
# paygate container image: the `paygate` binary alone on distroless (glibc, CA certificates,
# tzdata), running as the non-root user 65532. Build:  docker build -t paygate:0.1.0 .
# Dependencies are compiled in their own layer (cargo-chef), so a source change rebuilds only
# paygate itself. protoc comes from the protoc-bin-vendored crate (build.rs): no apt packages.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

# The dependency list only: changes when Cargo.toml or Cargo.lock do.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin paygate
COPY . .
RUN cargo build --release --locked --bin paygate \
    && install -D -m 0555 target/release/paygate /out/paygate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/paygate /usr/local/bin/paygate
# Numeric, so Kubernetes' runAsNonRoot can verify it (the chart runs it as 65532 too).
USER 65532:65532
# gRPC API, HTTP (callbacks, returns, checkout pages, probes), Prometheus metrics.
EXPOSE 50051 8080 9090
ENTRYPOINT ["/usr/local/bin/paygate"]
CMD ["serve"]
