# syntax=docker/dockerfile:1
# Build: the release profile (protoc is vendored by build.rs). Only the
# sources are copied, so a documentation change rebuilds nothing; the registry
# and the target directory are BuildKit caches, so a source change rebuilds
# only the crates that changed, not every dependency.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY client client
COPY sandbox-partner sandbox-partner
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p payment-orchestrator --bin payment-orchestrator \
    && cargo build --release --locked -p sandbox-partner --bin sandbox-partner \
    && cp target/release/payment-orchestrator target/release/sandbox-partner /usr/local/bin/

# The partners' test doubles (`docker build --target sandbox-partner`): the
# sandbox behind PartnerGatewayService and the Walley and WePay simulations.
# For trying the chart, never for real money; the service's image below does
# not contain them.
FROM gcr.io/distroless/cc-debian12:nonroot AS sandbox-partner
COPY --from=build /usr/local/bin/sandbox-partner /usr/local/bin/
USER 65532:65532
EXPOSE 7000
ENTRYPOINT ["/usr/local/bin/sandbox-partner"]

# The service (the default, last stage): distroless (glibc, CA certificates —
# what partner connections to Walley, WePay and https gateways trust besides a
# configured CA — and nothing else: no shell; the chart's preStop uses
# Kubernetes' native sleep), as the numeric non-root user, the service alone.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/payment-orchestrator /usr/local/bin/
USER 65532:65532
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/payment-orchestrator"]
