//! The standalone sandbox partner server: the same stateful simulator as the
//! in-process sandbox, served over `PartnerGatewayService` (plus its ledger
//! over `SandboxService`), so that several orchestrator replicas share one
//! partner ledger.
//!
//! `sandbox-partner --listen 127.0.0.1:7000`, then start the orchestrator with
//! `--partners 'ingenico=creditcard@http://127.0.0.1:7000,illicado=giftcard@http://127.0.0.1:7000'`.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use payment_orchestrator::partners::grpc::Gateway;
use tonic::transport::Server;

#[derive(Debug, Parser)]
#[command(name = "sandbox-partner", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SANDBOX_PARTNER_LISTEN", default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let gateway = Gateway::new();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "sandbox partner serving");
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(
                payment_orchestrator::api::proto::FILE_DESCRIPTOR_SET,
            )
            .with_service_name("payment_orchestrator.partner.v1.PartnerGatewayService")
            .with_service_name("payment_orchestrator.partner.v1.SandboxService")
    };
    Server::builder()
        .add_service(reflection().build_v1().context("reflection")?)
        .add_service(reflection().build_v1alpha().context("reflection")?)
        .add_service(gateway.gateway_service())
        .add_service(gateway.sandbox_service())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await
        .context("sandbox partner server")
}
