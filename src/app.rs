//! The one place where everything is wired together: store, partners, use
//! cases, gRPC services, health, reflection and shutdown.

use std::{collections::BTreeMap, future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::ServingStatus;

use crate::{
    api::{self, ApiKeys, proto},
    clock::{Clock, SystemClock},
    config::Config,
    partners::{ConfiguredPartner, Partner, Partners, grpc::GrpcPartner, sandbox::Sandbox},
    payments::{Payments, Settings},
    store::{
        PaymentStore,
        memory::MemoryStore,
        redis::{RedisSettings, RedisStore},
    },
};

const SERVICES: [&str; 2] = [
    "payment_orchestrator.v1.SessionService",
    "payment_orchestrator.v1.PaymentService",
];

#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    payments: Payments,
    api_keys: Arc<ApiKeys>,
    sandboxes: BTreeMap<String, Sandbox>,
}

impl App {
    /// Binds the listener and builds every component, on the system clock.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        App::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`App::build`], with the clock given (tests control time).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (setting `listen`)", config.listen))?;
        let mut sandboxes = BTreeMap::new();
        let mut partners = BTreeMap::new();
        for spec in &config.partners {
            let adapter: Arc<dyn Partner> = match &spec.gateway {
                Some(url) => Arc::new(
                    GrpcPartner::new(spec.name.clone(), url, config.partner_timeout)
                        .with_context(|| format!("partner {}: bad gateway URL", spec.name))?,
                ),
                None => {
                    let sandbox = Sandbox::new(spec.name.clone());
                    sandboxes.insert(spec.name.clone(), sandbox.clone());
                    Arc::new(sandbox)
                }
            };
            partners.insert(
                spec.name.clone(),
                ConfiguredPartner {
                    adapter,
                    methods: spec.methods.clone(),
                    timeout: config.partner_timeout,
                },
            );
        }
        let settings = Settings {
            idempotency_ttl: config.idempotency_ttl,
            idempotency_lease: config.idempotency_lease,
            session_expiry: config.session_expiry,
            priorities: config.priorities(),
            ..Settings::default()
        };
        let store = store(&config).await?;
        let payments = Payments::new(store, Partners::new(partners), clock, settings);
        let api_keys = Arc::new(ApiKeys::from_hashes(
            config
                .api_keys
                .iter()
                .map(|key| (key.sha256.clone(), key.merchant.clone())),
        ));
        Ok(App {
            listener,
            payments,
            api_keys,
            sandboxes,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The in-process sandbox partner of that name (tests read its ledger).
    pub fn sandbox(&self, name: &str) -> Option<Sandbox> {
        self.sandboxes.get(name).cloned()
    }

    /// Serves until SIGTERM or Ctrl-C, then drains in-flight calls.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.serve(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes: health turns NOT_SERVING first,
    /// then in-flight calls are drained.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        for service in SERVICES {
            health
                .set_service_status(service, ServingStatus::Serving)
                .await;
        }
        health.set_service_status("", ServingStatus::Serving).await;

        let reflection = || {
            // The descriptor set also holds the partner-facing services, which
            // this server does not serve: list only the ones it does.
            SERVICES.into_iter().chain(["grpc.health.v1.Health"]).fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                |builder, service| builder.with_service_name(service),
            )
        };
        let reflection_v1 = reflection().build_v1().context("reflection v1")?;
        let reflection_v1alpha = reflection().build_v1alpha().context("reflection v1alpha")?;

        let auth = self.api_keys.clone().interceptor();
        let sessions = proto::session_service_server::SessionServiceServer::with_interceptor(
            api::SessionService::new(self.payments.clone()),
            auth.clone(),
        );
        let payments = proto::payment_service_server::PaymentServiceServer::with_interceptor(
            api::PaymentService::new(self.payments.clone()),
            auth,
        );

        let address = self.listener.local_addr()?;
        tracing::info!(%address, "serving gRPC");
        let drain = async move {
            shutdown.await;
            tracing::info!("shutting down: NOT_SERVING, draining in-flight calls");
            for service in SERVICES {
                health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
        };
        Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(sessions)
            .add_service(payments)
            // Without TCP_NODELAY small gRPC frames wait for delayed ACKs (~40 ms).
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                drain,
            )
            .await
            .context("gRPC server")?;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn store(config: &Config) -> anyhow::Result<Arc<dyn PaymentStore>> {
    if config.redis_url.is_empty() {
        tracing::info!("store: in memory (embedded mode)");
        return Ok(Arc::new(MemoryStore::new()));
    }
    let settings = RedisSettings {
        urls: config.redis_url.clone(),
        cluster: config.redis_cluster,
        connect_timeout: config.redis_connect_timeout,
        response_timeout: config.redis_response_timeout,
        session_retention: config.session_retention,
    };
    let store = RedisStore::connect(&settings)
        .await
        .context("cannot connect to Redis (settings `redis_url`, `redis_cluster`)")?;
    tracing::info!(cluster = config.redis_cluster, "store: redis");
    Ok(Arc::new(store))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
