//! The standalone sandbox partner server: the same stateful simulator as the
//! in-process sandbox, served over `PartnerGatewayService` (plus its ledger
//! over `SandboxService`), so that several orchestrator replicas share one
//! partner ledger.
//!
//! `sandbox-partner --listen 127.0.0.1:7000`, then start the orchestrator with
//! `--partners 'ingenico=creditcard@http://127.0.0.1:7000,illicado=giftcard@http://127.0.0.1:7000'`.
//!
//! With `--api walley` or `--api wepay` it serves a stateful simulation of
//! that partner's HTTP API instead (see `payment_orchestrator::simulators`),
//! for the orchestrator's `walley` and `wepay` partner kinds.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use payment_orchestrator::{partners::grpc::Gateway, simulators};
use tonic::transport::Server;

#[derive(Debug, Parser)]
#[command(name = "sandbox-partner", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SANDBOX_PARTNER_LISTEN", default_value = "127.0.0.1:7000")]
    listen: SocketAddr,

    /// What to serve: `grpc` (PartnerGatewayService), or a simulation of the
    /// `walley` or `wepay` HTTP API.
    #[arg(long, env = "SANDBOX_PARTNER_API", default_value = "grpc")]
    api: Api,

    /// Walley: the OAuth2 client id accepted.
    #[arg(long, env = "SANDBOX_PARTNER_CLIENT_ID", default_value = "demo-client")]
    client_id: String,

    /// Walley: the OAuth2 client secret accepted.
    #[arg(
        long,
        env = "SANDBOX_PARTNER_CLIENT_SECRET",
        default_value = "demo-secret",
        hide_env_values = true
    )]
    client_secret: String,

    /// WePay: the account served.
    #[arg(long, env = "SANDBOX_PARTNER_ACCOUNT_ID", default_value = "1001")]
    account_id: i64,

    /// WePay: the access token accepted.
    #[arg(
        long,
        env = "SANDBOX_PARTNER_ACCESS_TOKEN",
        default_value = "demo-token",
        hide_env_values = true
    )]
    access_token: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Api {
    Grpc,
    Walley,
    Wepay,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, api = ?args.api, "sandbox partner serving");
    let simulation = match args.api {
        Api::Grpc => None,
        Api::Walley => Some(simulators::walley::router(
            simulators::walley::Credentials {
                client_id: args.client_id,
                client_secret: args.client_secret,
            },
        )),
        Api::Wepay => Some(simulators::wepay::router(simulators::wepay::Account {
            account_id: args.account_id,
            access_token: args.access_token,
        })),
    };
    if let Some(router) = simulation {
        return simulators::serve(listener, router)
            .await
            .context("sandbox partner server");
    }
    let gateway = Gateway::new();
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
