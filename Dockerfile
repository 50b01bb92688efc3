# syntax=docker/dockerfile:1
# Build: the whole workspace, release profile (protoc is vendored by build.rs).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
    && cp target/release/payment-orchestrator target/release/sandbox-partner /usr/local/bin/

# Run: a slim image with a numeric non-root user. `sleep` is kept for the
# Kubernetes preStop hook; no packages are added (webhook TLS uses the
# bundled webpki roots).
FROM debian:bookworm-slim
COPY --from=build /usr/local/bin/payment-orchestrator /usr/local/bin/sandbox-partner /usr/local/bin/
USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/payment-orchestrator"]
