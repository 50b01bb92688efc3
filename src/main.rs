//! Thin entry point: configuration, telemetry, then the app.

use clap::Parser;
use payment_orchestrator::{app::App, config::Config};
use tracing_subscriber::{EnvFilter, fmt};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if config.log_format == "json" {
        fmt().json().with_env_filter(filter).init();
    } else {
        fmt().with_env_filter(filter).init();
    }
    tracing::info!(?config, "starting");
    App::build(config).await?.run_until_stopped().await
}
