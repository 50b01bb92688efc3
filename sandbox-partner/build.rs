//! Generates the partner gateway's server and the sandbox's ledger service
//! (server and client, for the tests that read ledgers) from the
//! repository's `proto/`, with a vendored `protoc`.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "../proto/payment_orchestrator/partner/v1/gateway.proto",
        "../proto/payment_orchestrator/partner/v1/sandbox.proto",
    ];
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.btree_map(["."]);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("sandbox_partner_descriptor.bin"))
        .compile_with_config(config, &protos, &["../proto"])?;
    println!("cargo:rerun-if-changed=../proto/payment_orchestrator/partner");
    Ok(())
}
