//! Generates the gRPC code from `proto/` with a vendored `protoc`, so a fresh
//! machine builds with `cargo build` alone, and writes the descriptor set that
//! server reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "proto/payment_orchestrator/v1/admin.proto",
        "proto/payment_orchestrator/v1/common.proto",
        "proto/payment_orchestrator/v1/errors.proto",
        "proto/payment_orchestrator/v1/partner_event.proto",
        "proto/payment_orchestrator/v1/payment.proto",
        "proto/payment_orchestrator/v1/session.proto",
        "proto/payment_orchestrator/v1/settlement.proto",
        "proto/payment_orchestrator/v1/webhook.proto",
    ];
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // BTreeMap keeps map fields in a stable order, so an idempotent replay
    // encodes to exactly the same bytes as the first response.
    config.btree_map(["."]);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("payment_orchestrator_descriptor.bin"))
        .compile_with_config(config, &protos, &["proto"])?;
    // Partners behind a gateway: only the client (the server is the
    // sandbox-partner crate's).
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.btree_map(["."]);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(
            config,
            &["proto/payment_orchestrator/partner/v1/gateway.proto"],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
