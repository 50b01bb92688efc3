//! The one place where everything is wired together: store, partners, use
//! cases, gRPC services, health, reflection and shutdown.

use std::{collections::BTreeMap, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::ServingStatus;

use crate::{
    api::{self, ApiKeys, Required, Role, edge::EdgeLayer, proto},
    clock::{Clock, SystemClock},
    config::Config,
    config::PartnerKind,
    partners::{
        ConfiguredPartner, Partner, Partners, grpc::GrpcPartner, sandbox::Sandbox, walley::Walley,
        wepay::Wepay,
    },
    payments::{Payments, Settings, SettlementSettings},
    store::{
        Store,
        memory::MemoryStore,
        redis::{RedisSettings, RedisStore},
    },
    webhooks::{Secrets, Webhooks},
    workers::deliveries::{DeliveryWorker, FailedKept},
    workers::{readiness::Readiness, resolver::Resolver, settlement_import::SettlementImporter},
};

const SERVICES: [&str; 5] = [
    "payment_orchestrator.v1.SessionService",
    "payment_orchestrator.v1.PaymentService",
    "payment_orchestrator.v1.SettlementService",
    "payment_orchestrator.v1.AdminService",
    "payment_orchestrator.v1.PartnerEventService",
];

#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    /// Partner callbacks over HTTP (see `api::callbacks`), if configured.
    callback_listener: Option<TcpListener>,
    payments: Payments,
    api_keys: Arc<ApiKeys>,
    sandboxes: BTreeMap<String, Sandbox>,
    resolver: Resolver,
    deliveries: DeliveryWorker,
    /// Zero: no background loops (tests step the resolver and the delivery
    /// worker themselves).
    resolver_interval: Duration,
    /// Zero: settlements are imported on demand only.
    settlement_import_interval: Duration,
    server: ServerSettings,
}

/// How the gRPC server protects itself.
#[derive(Debug, Clone)]
struct ServerSettings {
    tls: Option<ServerTlsConfig>,
    health_listener: Option<Arc<TcpListener>>,
    request_timeout: Duration,
    max_in_flight: usize,
    max_in_flight_per_merchant: usize,
    max_message_bytes: usize,
    keepalive_interval: Duration,
    max_connection_age: Duration,
}

/// Payment headers a replica on Redis keeps of those it wrote (about a
/// kilobyte each).
const HEADER_CACHE: usize = 32_768;

/// How often readiness checks the store.
const READINESS_INTERVAL: Duration = Duration::from_secs(2);

impl App {
    /// Binds the listener and builds every component, on the system clock.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        App::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`App::build`], with the clock given (tests control time).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
        let store = store(&config, clock.clone()).await?;
        App::build_with_store(config, clock, store).await
    }

    /// As [`App::build_with_clock`], on the store given (tests wrap the real
    /// stores to inject faults).
    pub async fn build_with_store(
        config: Config,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<App> {
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (setting `listen`)",
                    config.server.listen
                )
            })?;
        let (partners, sandboxes) = partners(&config, clock.clone())?;
        let callback_listener = match config.callback_listen()? {
            Some(address) => match TcpListener::bind(address).await {
                Ok(listener) => Some(listener),
                // The embedded default's port beside the metrics one may be
                // taken: served without callbacks then (lookups find out).
                Err(error) if !config.callback_listen_given() => {
                    tracing::warn!(%error, %address,
                        "no partner callback listener: its default port is taken");
                    None
                }
                Err(error) => {
                    return Err(anyhow::Error::new(error).context(format!(
                        "cannot listen on {address} (setting `callback_listen`)"
                    )));
                }
            },
            None => None,
        };
        let callback_url = match (&config.server.callback_url, &callback_listener) {
            (Some(url), _) => Some(url.trim_end_matches('/').to_owned()),
            (None, Some(listener)) => {
                let mut address = listener.local_addr()?;
                if address.ip().is_unspecified() {
                    address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                Some(format!("http://{address}"))
            }
            (None, None) => None,
        };
        if let Some(url) = &callback_url {
            for sandbox in sandboxes.values() {
                sandbox.serve_hosted_pages(url);
            }
        }
        if !config.redis.redis_url.is_empty() && !sandboxes.is_empty() {
            let names: Vec<&str> = sandboxes.keys().map(String::as_str).collect();
            tracing::warn!(
                partners = %names.join(","),
                "in-process sandbox partners on a shared Redis: each replica has its own \
                 partner ledger, so an operation that another replica continues fails; \
                 point the partners at one sandbox-partner server (name=method@url)"
            );
        }
        // Leases and send claims are judged by the store's clock; a replica
        // whose clock runs ahead may look at work early, but never sends
        // what another replica holds (see `payments::execution`).
        let settings = Settings {
            idempotency_ttl: config.payments.idempotency_ttl,
            idempotency_lease: config.payments.idempotency_lease,
            session_expiry: config.payments.session_expiry,
            priorities: config.priorities(),
            merchant_priorities: config.merchant_priorities(),
            operation_lease: config.payments.operation_lease,
            max_resolution_age: config.payments.max_resolution_age,
            authorization_lifetime: config.partners.authorization_lifetime,
            max_operations_per_payment: config.payments.max_operations_per_payment,
            max_waiters_per_merchant: config.server.max_waiters_per_merchant,
            request_timeout: config.server.request_timeout,
            instrument_key: crate::partners::Secret::new(config.keys.instrument_secret.clone()),
            callback_url,
            payment_retention: config.payments.payment_retention,
            // On Redis a capture then opens on the header this replica
            // wrote, without reading it first; in memory there is no read
            // to save.
            header_cache: if config.redis.redis_url.is_empty() {
                0
            } else {
                HEADER_CACHE
            },
            settlements: SettlementSettings {
                look_back_days: u32::try_from(
                    config.workers.settlement_look_back.as_secs() / 86_400,
                )
                .unwrap_or(u32::MAX),
                retention: config.workers.settlement_retention,
                missing_after: config.workers.settlement_missing_after,
                ..SettlementSettings::default()
            },
            ..Settings::default()
        };
        let secrets = config
            .webhooks
            .webhook_secrets
            .iter()
            .map(|s| (s.merchant.clone(), s.key.clone()));
        let destinations = config.webhook_destinations();
        tracing::info!(
            schemes = %destinations.schemes().join(","),
            networks = %destinations.networks().iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            "webhook destinations: public addresses{}",
            if destinations.networks().is_empty() {
                " only"
            } else {
                ", and loopback or private addresses in these networks"
            }
        );
        let webhooks = Webhooks::new(
            Secrets::new(secrets),
            config.webhooks.webhook_timeout,
            destinations,
            Arc::new(api::events::EventBodies),
        );
        // Partner circuit changes, told to and taken from the other replicas.
        tokio::spawn(crate::workers::partner_health::relay(
            &store,
            partners.health_handle(),
        ));
        let payments = Payments::new(store, partners, clock.clone(), settings, webhooks);
        tokio::spawn(payments.listen_for_finals());
        let merchants = config
            .keys
            .api_keys
            .iter()
            .map(|key| (key.sha256.clone(), Role::Merchant(key.merchant.clone())));
        let admins = config
            .keys
            .admin_api_keys
            .iter()
            .map(|hash| (hash.clone(), Role::Admin));
        let notifiers = config.keys.partner_notifier_api_keys.iter().map(|key| {
            (
                key.sha256.clone(),
                Role::PartnerNotifier(key.partners.clone()),
            )
        });
        let api_keys = Arc::new(ApiKeys::from_hashes(
            merchants.chain(admins).chain(notifiers),
        ));
        let resolver = Resolver::new(
            payments.clone(),
            clock.clone(),
            config.workers.resolver_lease,
            100,
            config.workers.resolver_concurrency.into(),
        );
        let deliveries = DeliveryWorker::new(
            payments.clone(),
            clock,
            config.webhooks.webhook_timeout,
            config.webhooks.webhook_endpoint_concurrency.into(),
            64,
            FailedKept {
                retention: config.webhooks.failed_webhook_retention,
                per_merchant: usize::try_from(config.webhooks.max_failed_webhooks_per_merchant)
                    .unwrap_or(usize::MAX),
            },
        );
        Ok(App {
            listener,
            callback_listener,
            payments,
            api_keys,
            sandboxes,
            resolver,
            deliveries,
            resolver_interval: config.workers.resolver_interval,
            settlement_import_interval: config.workers.settlement_import_interval,
            server: ServerSettings {
                tls: tls_config(&config)?,
                health_listener: match config.server.health_listen {
                    Some(address) => {
                        Some(Arc::new(TcpListener::bind(address).await.with_context(
                            || format!("cannot listen on {address} (setting `health_listen`)"),
                        )?))
                    }
                    None => None,
                },
                request_timeout: config.server.request_timeout,
                max_in_flight: config.server.max_in_flight,
                max_in_flight_per_merchant: config.server.max_in_flight_per_merchant,
                max_message_bytes: config.server.max_message_bytes,
                keepalive_interval: config.server.keepalive_interval,
                max_connection_age: config.server.max_connection_age,
            },
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where the partner callback listener listens, if it does.
    pub fn callback_addr(&self) -> Option<SocketAddr> {
        self.callback_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The resolver (tests call `resolve_due` with the time they choose).
    pub fn resolver(&self) -> Resolver {
        self.resolver.clone()
    }

    /// The delivery worker (tests call `deliver_due` with the time they
    /// choose).
    pub fn deliveries(&self) -> DeliveryWorker {
        self.deliveries.clone()
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
    pub async fn serve(mut self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        // Background tasks stop when the server starts draining.
        let (stopping, stopped) = tokio::sync::watch::channel(false);
        let stopped_signal = stopped.clone();
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

        let auth = |required| self.api_keys.clone().interceptor(required);
        let limit = self.server.max_message_bytes;
        let shared = Arc::new(self.payments.clone());
        let detached = api::Detached::new(self.server.max_in_flight, self.server.request_timeout);
        let sessions = InterceptedService::new(
            proto::session_service_server::SessionServiceServer::new(api::SessionService::new(
                shared.clone(),
                detached.clone(),
            ))
            .max_decoding_message_size(limit),
            auth(Required::Merchant),
        );
        let payments = InterceptedService::new(
            proto::payment_service_server::PaymentServiceServer::new(api::PaymentService::new(
                shared.clone(),
                detached.clone(),
            ))
            .max_decoding_message_size(limit),
            auth(Required::Merchant),
        );
        let admin = InterceptedService::new(
            proto::admin_service_server::AdminServiceServer::new(api::AdminService::new(
                shared.clone(),
                detached.clone(),
            ))
            .max_decoding_message_size(limit),
            auth(Required::Admin),
        );
        let settlements = InterceptedService::new(
            proto::settlement_service_server::SettlementServiceServer::new(
                api::SettlementService::new(self.payments.clone()),
            )
            .max_decoding_message_size(limit),
            auth(Required::MerchantOrAdmin),
        );
        let partner_events = InterceptedService::new(
            proto::partner_event_service_server::PartnerEventServiceServer::new(
                api::PartnerEventService::new(self.payments.clone()),
            )
            .max_decoding_message_size(limit),
            auth(Required::PartnerNotifier),
        );

        let stopped_on = |stopped: &tokio::sync::watch::Receiver<bool>| {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }
        };
        let readiness = tokio::spawn(
            Readiness::new(self.payments.clone(), health.clone(), &SERVICES)
                .run(READINESS_INTERVAL, stopped_on(&stopped_signal)),
        );

        let resolver = (!self.resolver_interval.is_zero()).then(|| {
            tokio::spawn(
                self.resolver
                    .clone()
                    .run(self.resolver_interval, stopped_on(&stopped)),
            )
        });
        let deliveries = (!self.resolver_interval.is_zero()).then(|| {
            tokio::spawn(
                self.deliveries
                    .clone()
                    .run(self.resolver_interval, stopped_on(&stopped)),
            )
        });
        let importer = (!self.settlement_import_interval.is_zero()).then(|| {
            tokio::spawn(
                SettlementImporter::new(self.payments.clone())
                    .run(self.settlement_import_interval, stopped_on(&stopped)),
            )
        });

        let callbacks = self.callback_listener.take().map(|listener| {
            let router =
                api::callbacks::Callbacks::new(self.payments.clone(), self.sandboxes.clone())
                    .router();
            let stop = stopped_on(&stopped);
            tokio::spawn(async move {
                if let Ok(address) = listener.local_addr() {
                    tracing::info!(%address, "serving partner callbacks");
                }
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(stop)
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "callback listener stopped");
                }
            })
        });

        let address = self.listener.local_addr()?;
        tracing::info!(%address, "serving gRPC");
        let drain = async move {
            shutdown.await;
            let _ = stopping.send(true);
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
        let health_only = self.server.health_listener.take().map(|listener| {
            let service = health_service.clone();
            let mut stopped = stopped_signal.clone();
            tokio::spawn(async move {
                let Ok(listener) = Arc::try_unwrap(listener) else {
                    return;
                };
                let stop = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                let served = Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(TcpIncoming::from(listener), stop)
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "health listener stopped");
                }
            })
        });
        let settings = &self.server;
        let mut builder = Server::builder();
        if let Some(tls) = settings.tls.clone() {
            builder = builder.tls_config(tls).context("TLS configuration")?;
        }
        builder
            .timeout(settings.request_timeout)
            .http2_keepalive_interval(Some(settings.keepalive_interval))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .tcp_keepalive(Some(Duration::from_secs(60)))
            .max_connection_age(settings.max_connection_age)
            .max_connection_age_grace(Duration::from_secs(30))
            .layer(EdgeLayer::new(
                settings.max_in_flight,
                settings.max_in_flight_per_merchant,
                self.api_keys.clone(),
            ))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(sessions)
            .add_service(payments)
            .add_service(settlements)
            .add_service(admin)
            .add_service(partner_events)
            // Without TCP_NODELAY small gRPC frames wait for delayed ACKs (~40 ms).
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                drain,
            )
            .await
            .context("gRPC server")?;
        // Work whose callers went away finishes before the process ends.
        if !detached.drained(self.server.request_timeout).await {
            tracing::warn!("stopping with detached work unfinished: the resolver finishes it");
        }
        if let Some(resolver) = resolver {
            let _ = resolver.await;
        }
        if let Some(deliveries) = deliveries {
            let _ = deliveries.await;
        }
        if let Some(importer) = importer {
            let _ = importer.await;
        }
        let _ = readiness.await;
        if let Some(callbacks) = callbacks {
            let _ = callbacks.await;
        }
        if let Some(health_only) = health_only {
            let _ = health_only.await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

fn tls_config(config: &Config) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.server.tls_cert, &config.server.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, setting: &str| {
        std::fs::read(path)
            .with_context(|| format!("cannot read {} (setting `{setting}`)", path.display()))
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
        read(cert, "tls_cert")?,
        read(key, "tls_key")?,
    ));
    if let Some(ca) = &config.server.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca, "tls_client_ca")?));
    }
    Ok(Some(tls))
}

async fn store(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn Store>> {
    if config.redis.redis_url.is_empty() {
        tracing::info!("store: in memory (embedded mode)");
        if !config.demo_keys.is_empty() {
            tracing::warn!(settings = ?config.demo_keys, "demo keys are active (embedded mode)");
        }
        return Ok(Arc::new(MemoryStore::new(
            config.redis.session_retention,
            clock,
        )));
    }
    let settings = RedisSettings {
        urls: config.redis.redis_url.clone(),
        cluster: config.redis.redis_cluster,
        connect_timeout: config.redis.redis_connect_timeout,
        response_timeout: config.redis.redis_response_timeout,
        session_retention: config.redis.session_retention,
        wait_replicas: config.redis.redis_wait_replicas,
        wait_timeout: config.redis.redis_wait_timeout,
    };
    let store = RedisStore::connect(&settings)
        .await
        .context("cannot connect to Redis (settings `redis_url`, `redis_cluster`)")?;
    tracing::info!(cluster = config.redis.redis_cluster, "store: redis");
    if !config.demo_keys.is_empty() {
        tracing::warn!(settings = ?config.demo_keys, "demo keys are active on Redis (demo)");
    }
    // Settings that lose data silently are worth a loud line at startup.
    match store.durability().await {
        Ok((policy, aof)) => {
            if policy != "noeviction" {
                if !config.redis.redis_allow_eviction {
                    anyhow::bail!(
                        "Redis has maxmemory-policy {policy}: it may evict keys and lose payments; \
                         set it to noeviction (or `redis_allow_eviction` = true to accept that)"
                    );
                }
                tracing::warn!(maxmemory_policy = %policy, "Redis may evict keys (allowed by redis_allow_eviction); see docs/redis.md");
            }
            if aof != "yes" {
                tracing::warn!(
                    "Redis has no append-only file: a restart loses recent writes (see docs/redis.md)"
                );
            }
        }
        Err(error) => {
            tracing::info!(%error, "Redis settings not readable (CONFIG may be disabled)")
        }
    }
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

/// The configured partners, and the in-process sandboxes among them (tests
/// read their ledgers).
fn partners(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Partners, BTreeMap<String, Sandbox>)> {
    let mut sandboxes = BTreeMap::new();
    let mut partners = BTreeMap::new();
    for partner in config.partner_configs()? {
        let name = &partner.name;
        let adapter: Arc<dyn Partner> = match &partner.kind {
            PartnerKind::Sandbox => {
                let mut sandbox = Sandbox::with_capabilities(name.clone(), partner.capabilities);
                if let Some(retention) = config.payments.payment_retention {
                    // The service forgets the payments first: an
                    // authorization is forgotten once nothing is held on it
                    // and nothing asked about it for twice the retention
                    // (a refund within the payment's retention finds it).
                    sandbox = sandbox.forgetting_after(retention.saturating_mul(2));
                }
                sandboxes.insert(name.clone(), sandbox.clone());
                Arc::new(sandbox)
            }
            PartnerKind::Grpc { url, ca_pem } => Arc::new(
                GrpcPartner::new(name.clone(), url, partner.timeout, ca_pem.as_deref())
                    .with_context(|| format!("partners.{name}.url"))?,
            ),
            PartnerKind::Walley(settings) => Arc::new(
                Walley::new(settings.clone())
                    .with_context(|| format!("partners.{name}: HTTP client"))?,
            ),
            PartnerKind::Wepay(settings) => Arc::new(
                Wepay::new(settings.clone())
                    .with_context(|| format!("partners.{name}: HTTP client"))?,
            ),
        };
        let settlement_reports = partner
            .settlement_reports
            .unwrap_or_else(|| adapter.settles());
        partners.insert(
            name.clone(),
            ConfiguredPartner {
                adapter,
                kind: partner.kind.as_str(),
                methods: partner.methods,
                currencies: partner.currencies,
                timeout: partner.timeout,
                retry: partner.retry,
                capabilities: partner.capabilities,
                authorization_lifetime: partner.authorization_lifetime,
                merchants: partner.merchants,
                settlement_reports,
                circuit: partner.circuit,
            },
        );
    }
    Ok((Partners::new(partners, clock), sandboxes))
}
