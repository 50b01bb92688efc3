# syntax=docker/dockerfile:1
# Build: only what the image ships (the service and the sandbox partner), in
# the release profile (protoc is vendored by build.rs). Only the sources are
# copied, so a documentation change rebuilds nothing; the registry and the
# target directory are BuildKit caches, so a source change rebuilds only the
# crates that changed, not every dependency.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY client client
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p payment-orchestrator \
        --bin payment-orchestrator --bin sandbox-partner \
    && cp target/release/payment-orchestrator target/release/sandbox-partner /usr/local/bin/

# Run: distroless (glibc, CA certificates — what partner connections to
# Walley, WePay and https gateways trust besides a configured CA — and
# nothing else: no shell; the chart's preStop uses Kubernetes' native sleep),
# as the numeric non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/payment-orchestrator /usr/local/bin/sandbox-partner /usr/local/bin/
USER 65532:65532
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/payment-orchestrator"]
