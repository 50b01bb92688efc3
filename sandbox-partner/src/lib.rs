//! Test doubles of the partners payment-orchestrator talks to, kept out of
//! the service:
//!
//! - [`gateway`]: the service's in-process sandbox partner served over
//!   `PartnerGatewayService` (and its ledger over `SandboxService`), so that
//!   several orchestrator replicas share one partner ledger.
//! - [`walley`] and [`wepay`]: stateful simulations of those partners' HTTP
//!   APIs, each parsing requests with its own structs written from the
//!   partner's documentation (never the connector's), on the shared
//!   [`simulation`] machinery (clock, injected failures, ledger).
//!
//! [`serve`] runs one of them on a listener; the `sandbox-partner` binary
//! and the service's tests (which re-run their own binary as this server)
//! both call it.

pub mod gateway;
pub mod simulation;
pub mod walley;
pub mod wepay;

use std::net::SocketAddr;

use anyhow::Context;
use tonic::transport::Server;

pub use gateway::Gateway;

/// Generated code of `proto/payment_orchestrator/partner/v1`: the gateway's
/// server, and the sandbox ledger's server and client.
pub mod proto {
    #![allow(missing_docs, clippy::all, missing_debug_implementations)]
    tonic::include_proto!("payment_orchestrator.partner.v1");

    /// For server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("sandbox_partner_descriptor");
}

/// What to serve, and the credentials a simulation accepts.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "sandbox-partner", version, about)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "SANDBOX_PARTNER_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,

    /// What to serve: `grpc` (PartnerGatewayService), or a simulation of the
    /// `walley` or `wepay` HTTP API.
    #[arg(long, env = "SANDBOX_PARTNER_API", default_value = "grpc")]
    pub api: Api,

    /// Walley: the OAuth2 client id accepted.
    #[arg(long, env = "SANDBOX_PARTNER_CLIENT_ID", default_value = "demo-client")]
    pub client_id: String,

    /// Walley: the OAuth2 client secret accepted.
    #[arg(
        long,
        env = "SANDBOX_PARTNER_CLIENT_SECRET",
        default_value = "demo-secret",
        hide_env_values = true
    )]
    pub client_secret: String,

    /// WePay: the account served.
    #[arg(long, env = "SANDBOX_PARTNER_ACCOUNT_ID", default_value = "1001")]
    pub account_id: i64,

    /// WePay: the access token accepted.
    #[arg(
        long,
        env = "SANDBOX_PARTNER_ACCESS_TOKEN",
        default_value = "demo-token",
        hide_env_values = true
    )]
    pub access_token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    Grpc,
    Walley,
    Wepay,
}

/// Serves what `args` asks for on `listener` (its address is not re-read
/// from `args`) until `shutdown` completes.
pub async fn serve(
    args: Args,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let simulation = match args.api {
        Api::Grpc => None,
        Api::Walley => Some(walley::router(walley::Credentials {
            client_id: args.client_id,
            client_secret: args.client_secret,
        })),
        Api::Wepay => Some(wepay::router(wepay::Account {
            account_id: args.account_id,
            access_token: args.access_token,
        })),
    };
    if let Some(router) = simulation {
        return simulation::serve(listener, router, shutdown)
            .await
            .context("sandbox partner server");
    }
    let gateway = Gateway::new();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
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
            shutdown,
        )
        .await
        .context("sandbox partner server")
}
