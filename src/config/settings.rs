//! The settings, in groups as `--help` shows them. Each field is a flag
//! (`--redis-url`), an environment variable (`PAYMENT_ORCHESTRATOR_REDIS_URL`)
//! and a key of the `--config` file (`redis-url`); its id (`redis_url`) is
//! what errors name.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use super::{
    DEMO_INSTRUMENT_KEY,
    values::{
        ApiKeyHash, MerchantPriority, NotifierKeyHash, PartnerSpec, WebhookSecret, parse_key_hash,
        parse_merchant_priority, parse_rule,
    },
};
use crate::{
    clock::parse_duration,
    domain::priority::{self, PriorityRule},
    webhooks::destinations::{HostPattern, Network},
};

/// The gRPC server: where it listens, TLS, and the limits of each call and connection.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct ServerSettings {
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_LISTEN",
        default_value = "0.0.0.0:50051"
    )]
    pub listen: SocketAddr,

    /// Server certificate chain (PEM) for TLS on the gRPC port.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of the server certificate.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA (PEM) that client certificates must chain to: turns on mutual TLS.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// Partner callbacks over HTTP (Walley's notifications, WePay's IPN,
    /// the sandbox's hosted checkout pages) on this address, meant to sit
    /// behind the ingress; `off` disables. Unset: off, except with the
    /// embedded store, where it listens beside the metrics port (its port
    /// plus one).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_CALLBACK_LISTEN")]
    pub callback_listen: Option<String>,

    /// The URL partners reach the callback listener at (the ingress's, e.g.
    /// `https://pay.example.com`); default `http://` and the listener's
    /// address (loopback for an unspecified one).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_CALLBACK_URL")]
    pub callback_url: Option<String>,

    /// A plaintext listener serving only `grpc.health.v1` (for Kubernetes'
    /// plaintext gRPC probes when the main port uses TLS).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Deadline of one RPC on the server (the handler is dropped past it and
    /// the caller gets CANCELLED; unfinished operations are resolved later).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Calls in flight at most (health and reflection aside); beyond it
    /// RESOURCE_EXHAUSTED with RetryInfo.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_MAX_IN_FLIGHT",
        default_value_t = 1024
    )]
    pub max_in_flight: usize,

    /// Calls in flight at once for one merchant (within `max_in_flight`);
    /// beyond it the merchant's calls get RESOURCE_EXHAUSTED
    /// (`MERCHANT_IN_FLIGHT_LIMIT`) while other merchants' go on.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_MAX_IN_FLIGHT_PER_MERCHANT",
        default_value_t = 256
    )]
    pub max_in_flight_per_merchant: usize,

    /// `WaitOperation` calls open at once for one merchant; beyond it they
    /// get RESOURCE_EXHAUSTED (`TOO_MANY_WAITERS`). Waiting calls do not
    /// count towards the in-flight limits: they hold no work, only a
    /// subscription to the operation's final status.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_MAX_WAITERS_PER_MERCHANT",
        default_value_t = 1000
    )]
    pub max_waiters_per_merchant: usize,

    /// Largest accepted request message, in bytes.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// HTTP/2 keepalive ping interval (its timeout is 20 s).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,

    /// Connections are closed (gracefully) after this age, so that new pods
    /// behind a Kubernetes Service get traffic.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_MAX_CONNECTION_AGE", default_value = "5m", value_parser = parse_duration)]
    pub max_connection_age: Duration,
}

/// Traces, metrics and logs.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Telemetry")]
pub struct TelemetryFlags {
    /// OTLP/gRPC collector for traces, e.g. `http://otel-collector:4317`;
    /// unset: the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, and without those no traces are
    /// exported. `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` apply.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Prometheus metrics (`GET /metrics`) on this address; `off` disables.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: String,

    /// Log format: `text` or `json`.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Who may call, and the secrets that name instruments. Only hashes of API keys are configured.
#[derive(Clone, Args)]
#[command(next_help_heading = "Keys and secrets")]
pub struct KeySettings {
    /// API keys as `merchant:sha256hex` pairs, comma separated. The key
    /// material is never configured, only its SHA-256
    /// (`printf %s KEY | sha256sum`). Default: merchant `demo`, key `sk_test_demo`.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_API_KEYS",
        value_delimiter = ',',
        default_value = "demo:5d48f1024f38b44ad9ddc03dc12b2a8287c7ec690065dcef384cb1fd1753626d"
    )]
    pub api_keys: Vec<ApiKeyHash>,

    /// API keys of operators (`AdminService`), as SHA-256 hex digests, comma
    /// separated. Default: the demo key `sk_test_admin`.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_ADMIN_API_KEYS",
        value_delimiter = ',',
        default_value = "02fe5cec77ed1d76acc1154ee86be9612af6799733949728ec17e098389aa986",
        value_parser = parse_key_hash
    )]
    pub admin_api_keys: Vec<String>,

    /// API keys of partner adapters (`PartnerEventService`), each bound to
    /// the partners it may speak for: `name|name:sha256hex`, or `*:sha256hex`
    /// for every partner; comma separated. Default: the demo key
    /// `sk_test_partner`, for every partner.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_PARTNER_NOTIFIER_API_KEYS",
        value_delimiter = ',',
        default_value = "*:c3184a2cdb9b1560796be0e0bfe501496cf08c23ee9d739157ba54520a509097"
    )]
    pub partner_notifier_api_keys: Vec<NotifierKeyHash>,

    /// The key of the keyed hash (HMAC-SHA256) that names every payment
    /// token in the store, so that which payer an instrument belongs to is
    /// kept without keeping the token (a WePay card id is a small number a
    /// plain hash would give away). The same on every replica; changing it
    /// forgets which payer each instrument belongs to. Default: a demo key.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_INSTRUMENT_SECRET",
        default_value = DEMO_INSTRUMENT_KEY,
        hide_default_value = true,
        hide_env_values = true
    )]
    pub instrument_secret: String,

    /// Let the demo keys (`sk_test_demo`, `sk_test_admin`, `sk_test_partner`,
    /// the demo webhook secret) stand in for key settings that are not configured, also
    /// on Redis. The embedded mode uses them without it.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_DEMO", default_value_t = false)]
    pub demo: bool,
}

/// Which partners, and the defaults their tables may override.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Partners")]
pub struct PartnerSettings {
    /// Partners as `name=method|method`, comma separated: an in-process sandbox,
    /// or with `@URL` a partner behind a `PartnerGatewayService`
    /// (`ingenico=creditcard@https://partners:7000`). Beside the file's
    /// `[partners]`, an entry replaces the partner of the same name.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_PARTNERS",
        value_delimiter = ',',
        default_value = "ingenico=creditcard,illicado=giftcard"
    )]
    pub partners: Vec<PartnerSpec>,

    /// Deadline of one attempt of a partner call (e.g. `10s`, `500ms`), unless
    /// the partner's table says otherwise. A call still unanswered then is
    /// UNCERTAIN.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_PARTNER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub partner_timeout: Duration,

    /// After this, what an authorization still holds is voided (SYSTEM),
    /// unless the partner's table (or its kind: WePay 14d) says otherwise.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_AUTHORIZATION_LIFETIME", default_value = "7d", value_parser = parse_duration)]
    pub authorization_lifetime: Duration,

    /// Consecutive answers that say nothing (`Unavailable`, or an unknown
    /// outcome such as a timeout) after which a partner's circuit opens (its legs walked last by captures and voids, its methods
    /// left out of ListPaymentMethods), unless the partner's table says
    /// otherwise; 0 turns the circuits off.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_CIRCUIT_FAILURES",
        default_value_t = 5
    )]
    pub circuit_failures: u32,

    /// How long an open circuit waits before one trial call.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_CIRCUIT_COOL_DOWN", default_value = "30s", value_parser = parse_duration)]
    pub circuit_cool_down: Duration,
}

/// Sessions, idempotency, routing priorities and operation limits.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Payments")]
pub struct PaymentSettings {
    /// How long idempotency keys and their stored responses are kept.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,

    /// How long a finished payment is kept after its last change (and, for
    /// a leg that captured, after its partner's dispute window): then it is
    /// forgotten with its session, operations and index entries. Off by
    /// default (payments are kept for ever). Set it beyond every partner's
    /// refund window: a payment forgotten cannot be refunded here. At least
    /// the idempotency TTL.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_PAYMENT_RETENTION", value_parser = parse_duration)]
    pub payment_retention: Option<Duration>,

    /// How long a request holds its idempotency key before a retry of a
    /// crashed request may take it over.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_IDEMPOTENCY_LEASE", default_value = "2m", value_parser = parse_duration)]
    pub idempotency_lease: Duration,

    /// Default lifetime of a checkout session (at most 24h).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_SESSION_EXPIRY", default_value = "30m", value_parser = parse_duration)]
    pub session_expiry: Duration,

    /// Default capture priority, `partner:method` rules, `*` matches anything.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_CAPTURE_PRIORITY", value_delimiter = ',', default_value = priority::STANDARD_CAPTURE, value_parser = parse_rule)]
    pub capture_priority: Vec<PriorityRule>,

    /// Default refund priority.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_REFUND_PRIORITY", value_delimiter = ',', default_value = priority::STANDARD_REFUND, value_parser = parse_rule)]
    pub refund_priority: Vec<PriorityRule>,

    /// Default void priority.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_VOID_PRIORITY", value_delimiter = ',', default_value = priority::STANDARD_VOID, value_parser = parse_rule)]
    pub void_priority: Vec<PriorityRule>,

    /// Per-merchant priorities, `merchant:kind=rule|rule` entries separated
    /// by `;` (kind: capture, refund or void), e.g.
    /// `demo:capture=*:creditcard|*:*`. A kind not named keeps the default.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_MERCHANT_PRIORITIES", value_delimiter = ';', value_parser = parse_merchant_priority)]
    pub merchant_priorities: Vec<MerchantPriority>,

    /// How long a leg's send claim lives (by the store's clock): a partner
    /// call is sent only under it, so it must fit one whole call of every
    /// partner (twice its timeout plus its retry window). A request whose
    /// replica died is taken over by the resolver after it.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_OPERATION_LEASE", default_value = "60s", value_parser = parse_duration)]
    pub operation_lease: Duration,

    /// A non-final operation older than this is flagged `requires_review`.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_MAX_RESOLUTION_AGE", default_value = "24h", value_parser = parse_duration)]
    pub max_resolution_age: Duration,

    /// A merchant's capture, refund or void on a payment that already has
    /// this many operations is refused (FAILED_PRECONDITION,
    /// `TOO_MANY_OPERATIONS`).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_MAX_OPERATIONS_PER_PAYMENT", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..))]
    pub max_operations_per_payment: u32,
}

/// Merchant notifications: signing secrets, where they may go, how they are sent.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Webhooks")]
pub struct WebhookSettings {
    /// Webhook signing secrets as `merchant:whsec_<base64 key of 24-64
    /// bytes>`, comma separated; a merchant may have several (each signs
    /// every delivery, so a secret is rotated without downtime). Default: the
    /// demo merchant's `DEMO_WEBHOOK_SECRET`.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_WEBHOOK_SECRETS",
        value_delimiter = ',',
        default_value = "demo:whsec_ZGVtby13ZWJob29rLXNpZ25pbmctc2VjcmV0LW5vdC1mb3ItcHJvZHVjdGlvbg==",
        hide_default_value = true
    )]
    pub webhook_secrets: Vec<WebhookSecret>,

    /// URL schemes webhooks may use, comma separated. Default: `https`
    /// (`http,https` in the embedded mode and with `--demo`).
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_WEBHOOK_ALLOWED_SCHEMES",
        value_delimiter = ','
    )]
    pub webhook_allowed_schemes: Option<Vec<String>>,

    /// Host patterns webhooks may go to (`hooks.example.com`,
    /// `*.example.com`), comma separated. Default: any host.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_WEBHOOK_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub webhook_allowed_hosts: Vec<HostPattern>,

    /// Networks (CIDRs) in which loopback and private addresses may receive
    /// webhooks, comma separated. Public addresses are always allowed;
    /// link-local and cloud metadata addresses never are. Default: none
    /// (`127.0.0.0/8,::1` in the embedded mode and with `--demo`).
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_WEBHOOK_ALLOWED_NETWORKS",
        value_delimiter = ','
    )]
    pub webhook_allowed_networks: Option<Vec<Network>>,

    /// Timeout of one webhook POST.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// At most this many deliveries at a time to one endpoint (scheme, host
    /// and port), per replica.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_WEBHOOK_ENDPOINT_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub webhook_endpoint_concurrency: u16,

    /// How long a delivery that was given up is kept (listed, redeliverable)
    /// before it is deleted.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_FAILED_WEBHOOK_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub failed_webhook_retention: Duration,

    /// At most this many given-up deliveries are kept per merchant (the
    /// newest); older ones are deleted.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_MAX_FAILED_WEBHOOKS_PER_MERCHANT", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_failed_webhooks_per_merchant: u32,
}

/// The resolver and the settlement import.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Background work")]
pub struct WorkerSettings {
    /// How often the resolver looks at the due-queue; `0s` turns it off (tests
    /// drive it by hand).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_RESOLVER_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub resolver_interval: Duration,

    /// How long a replica holds due items it took before another may. A
    /// resolver step starts no item after it (the rest come back when the
    /// lease ends).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_RESOLVER_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub resolver_lease: Duration,

    /// How many due items a replica's resolver works at once.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_RESOLVER_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub resolver_concurrency: u16,

    /// How often every replica imports the partners' new settlements (one
    /// replica per partner at a time); `0s` turns it off
    /// (`AdminService.ImportSettlements` still imports on demand).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_SETTLEMENT_IMPORT_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub settlement_import_interval: Duration,

    /// Settlements are looked for this far back on every import.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_SETTLEMENT_LOOK_BACK", default_value = "7d", value_parser = parse_duration)]
    pub settlement_look_back: Duration,

    /// A successful capture or refund at a partner that reports settlements
    /// and that no settlement showed this long after it succeeded is flagged
    /// `MISSING_FROM_SETTLEMENT`.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_SETTLEMENT_MISSING_AFTER", default_value = "3d", value_parser = parse_duration)]
    pub settlement_missing_after: Duration,

    /// How long imported settlements, their lines and reconciliation issues
    /// are kept.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_SETTLEMENT_RETENTION", default_value = "400d", value_parser = parse_duration)]
    pub settlement_retention: Duration,
}

/// The shared store; unset, the embedded in-memory store.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Redis")]
pub struct RedisSettings {
    /// Redis URL(s), e.g. `redis://:password@redis:6379/0`; comma-separated seed
    /// nodes with `--redis-cluster`. Unset: the embedded in-memory store (one
    /// process only, nothing survives a restart).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_REDIS_URL", value_delimiter = ',')]
    pub redis_url: Vec<String>,

    /// Treat `redis_url` as the seed nodes of a Redis Cluster.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_REDIS_CLUSTER",
        default_value_t = false
    )]
    pub redis_cluster: bool,

    /// Start on a Redis whose `maxmemory-policy` may evict keys. Evicted
    /// keys lose data silently (see docs/redis.md): refused unless this is
    /// set.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_REDIS_ALLOW_EVICTION",
        default_value_t = false
    )]
    pub redis_allow_eviction: bool,

    /// Timeout to establish a Redis connection.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_REDIS_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub redis_connect_timeout: Duration,

    /// Timeout of one Redis command; past it the call fails with UNAVAILABLE.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_REDIS_RESPONSE_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub redis_response_timeout: Duration,

    /// Replicas that must hold every store step before a partner is called
    /// on it or its answer is given (Redis `WAIT`): a master that dies right
    /// after answering then loses nothing a partner saw. 0: replication is
    /// not waited for (see docs/redis.md for what each setting can lose).
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_REDIS_WAIT_REPLICAS",
        default_value_t = 0
    )]
    pub redis_wait_replicas: u32,

    /// How long a step waits for its replicas; fewer in time and nothing is
    /// sent: the client gets ABORTED to retry. Below the response timeout.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_REDIS_WAIT_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    pub redis_wait_timeout: Duration,

    /// How long a session is kept in Redis after its last change.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_SESSION_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub session_retention: Duration,
}

impl fmt::Debug for KeySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySettings")
            .field("api_keys", &self.api_keys)
            .field("admin_api_keys", &self.admin_api_keys)
            .field("partner_notifier_api_keys", &self.partner_notifier_api_keys)
            .field("instrument_secret", &"<redacted>")
            .field("demo", &self.demo)
            .finish()
    }
}
