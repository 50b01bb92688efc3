//! The standalone sandbox partner server: the same stateful simulator as the
//! service's in-process sandbox, served over `PartnerGatewayService` (plus
//! its ledger over `SandboxService`), so that several orchestrator replicas
//! share one partner ledger.
//!
//! `sandbox-partner --listen 127.0.0.1:7000`, then start the orchestrator with
//! `--partners 'ingenico=creditcard@http://127.0.0.1:7000,illicado=giftcard@http://127.0.0.1:7000'`.
//!
//! With `--api walley` or `--api wepay` it serves a stateful simulation of
//! that partner's HTTP API instead, for the orchestrator's `walley` and
//! `wepay` partner kinds.

use anyhow::Context;
use clap::Parser;
use sandbox_partner::Args;

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
    sandbox_partner::serve(args, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
