# syntax=docker/dockerfile:1
# Build: the whole workspace, release profile (protoc is vendored by build.rs).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p payment-orchestrator --bins \
    && cp target/release/payment-orchestrator target/release/sandbox-partner /usr/local/bin/

# Run: a slim image with a numeric non-root user. `sleep` is kept for the
# Kubernetes preStop hook. The system's CA certificates are what partner
# connections (Walley, WePay, https gateways) trust besides a configured CA.
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/payment-orchestrator /usr/local/bin/sandbox-partner /usr/local/bin/
USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/payment-orchestrator"]
