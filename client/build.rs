//! Generates the client code from the service's `proto/` with a vendored
//! `protoc` (no server code).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../proto/payment_orchestrator/v1/admin.proto",
        "../proto/payment_orchestrator/v1/common.proto",
        "../proto/payment_orchestrator/v1/errors.proto",
        "../proto/payment_orchestrator/v1/partner_event.proto",
        "../proto/payment_orchestrator/v1/payment.proto",
        "../proto/payment_orchestrator/v1/session.proto",
        "../proto/payment_orchestrator/v1/settlement.proto",
        "../proto/payment_orchestrator/v1/webhook.proto",
    ];
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(config, &protos, &["../proto"])?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
