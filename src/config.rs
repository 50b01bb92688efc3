//! Configuration: every setting is a flag and an environment variable
//! (`PAYMENT_ORCHESTRATOR_*`) and shows in `--help`. Defaults make
//! `cargo run` a working embedded service: in-memory store, the two sandbox
//! partners and the demo merchant.

mod partners;

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use std::ffi::OsString;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, parser::ValueSource};

pub use partners::{PartnerConfig, PartnerKind, SettingError};

use crate::{
    domain::{
        operation::OperationKind,
        priority::{self, DefaultPriorities, PriorityRule},
    },
    webhooks::{
        SigningKey,
        destinations::{Destinations, HostPattern, Network},
    },
};

/// The settings whose defaults are demo keys.
const DEMO_KEY_SETTINGS: [&str; 5] = [
    "api_keys",
    "admin_api_keys",
    "partner_notifier_api_keys",
    "webhook_secrets",
    "instrument_secret",
];

/// The instrument secret of the embedded mode and `--demo`.
pub const DEMO_INSTRUMENT_KEY: &str = "demo-instrument-key-not-for-production";

/// SHA-256 of `sk_test_demo`, the demo merchant's API key.
pub const DEMO_KEY_HASH: &str = "5d48f1024f38b44ad9ddc03dc12b2a8287c7ec690065dcef384cb1fd1753626d";

#[derive(Clone, Parser)]
#[command(name = "payment-orchestrator", version, about)]
pub struct Config {
    /// A TOML file: any setting by its flag name (`session-expiry = "10m"`),
    /// and `[partners.<name>]` and `[merchants.<name>]` tables. Precedence:
    /// defaults < file < env < flags.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// The file's `[partners]` and `[merchants]` tables.
    #[arg(skip)]
    pub tables: partners::Tables,

    /// Whether `--partners` was given (flag or environment); when the file
    /// has partners, the flag's default is not used.
    #[arg(skip)]
    pub partners_given: bool,

    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_LISTEN",
        default_value = "0.0.0.0:50051"
    )]
    pub listen: SocketAddr,

    /// Server certificate chain (PEM) for TLS on the gRPC port.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// Private key (PEM) of the server certificate.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// CA (PEM) that client certificates must chain to: turns on mutual TLS.
    #[arg(
        long,
        env = "PAYMENT_ORCHESTRATOR_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// A plaintext listener serving only `grpc.health.v1` (for Kubernetes'
    /// plaintext gRPC probes when the main port uses TLS).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

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

    /// How long idempotency keys and their stored responses are kept.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,

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

    /// How often the resolver looks at the due-queue; `0s` turns it off (tests
    /// drive it by hand).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_RESOLVER_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub resolver_interval: Duration,

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

    /// How long a replica holds due items it took before another may. A
    /// resolver step starts no item after it (the rest come back when the
    /// lease ends).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_RESOLVER_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub resolver_lease: Duration,

    /// How many due items a replica's resolver works at once.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_RESOLVER_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub resolver_concurrency: u16,

    /// How long a leg's send claim lives (by the store's clock): a partner
    /// call is sent only under it, so it must fit one whole call of every
    /// partner (twice its timeout plus its retry window). A request whose
    /// replica died is taken over by the resolver after it.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_OPERATION_LEASE", default_value = "60s", value_parser = parse_duration)]
    pub operation_lease: Duration,

    /// A non-final operation older than this is flagged `requires_review`.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_MAX_RESOLUTION_AGE", default_value = "24h", value_parser = parse_duration)]
    pub max_resolution_age: Duration,

    /// After this, what an authorization still holds is voided (SYSTEM),
    /// unless the partner's table (or its kind: WePay 14d) says otherwise.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_AUTHORIZATION_LIFETIME", default_value = "7d", value_parser = parse_duration)]
    pub authorization_lifetime: Duration,

    /// A merchant's capture, refund or void on a payment that already has
    /// this many operations is refused (FAILED_PRECONDITION,
    /// `TOO_MANY_OPERATIONS`).
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_MAX_OPERATIONS_PER_PAYMENT", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..))]
    pub max_operations_per_payment: u32,

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

    /// Let the demo keys (`sk_test_demo`, `sk_test_admin`, `sk_test_partner`,
    /// the demo webhook secret) stand in for key settings that are not configured, also
    /// on Redis. The embedded mode uses them without it.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_DEMO", default_value_t = false)]
    pub demo: bool,

    /// The key settings left at their demo default (neither given by flag,
    /// environment nor file).
    #[arg(skip)]
    pub demo_keys: Vec<&'static str>,

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

    /// Log format: `text` or `json`.
    #[arg(long, env = "PAYMENT_ORCHESTRATOR_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Config {
    /// The embedded mode, or `--demo`: demo keys, and webhooks to this
    /// machine over HTTP, are allowed.
    pub fn demo_mode(&self) -> bool {
        self.redis_url.is_empty() || self.demo
    }

    /// Where webhooks may go: what is configured, or in the demo mode HTTP(S)
    /// to loopback besides public hosts.
    pub fn webhook_destinations(&self) -> Destinations {
        let demo = self.demo_mode();
        let schemes = self
            .webhook_allowed_schemes
            .clone()
            .filter(|s| !s.iter().all(String::is_empty))
            .unwrap_or_else(|| {
                let mut schemes = vec!["https".to_owned()];
                if demo {
                    schemes.push("http".to_owned());
                }
                schemes
            });
        let networks = self.webhook_allowed_networks.clone().unwrap_or_else(|| {
            if demo {
                ["127.0.0.0/8", "::1/128"]
                    .iter()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            } else {
                Vec::new()
            }
        });
        Destinations::new(schemes, self.webhook_allowed_hosts.clone(), networks)
    }

    /// Every flag's long name (for tests that try them all).
    pub fn command_flags() -> Vec<String> {
        Config::command()
            .get_arguments()
            .filter_map(|arg| arg.get_long().map(str::to_owned))
            .collect()
    }

    /// From the process's arguments, environment and `--config` file; a
    /// command-line error (or `--help`, `--version`) prints clap's message
    /// and exits.
    pub fn load() -> anyhow::Result<Config> {
        Config::load_from(std::env::args_os().collect()).map_err(|error| {
            match error.downcast::<clap::Error>() {
                Ok(clap) => clap.exit(),
                Err(error) => error,
            }
        })
    }

    /// As [`Config::load`], from the given arguments (the first is the
    /// program name), returning every error (a command-line one as a
    /// `clap::Error`). The file's values become the defaults, so the
    /// environment and the flags override them.
    pub fn load_from(args: Vec<OsString>) -> anyhow::Result<Config> {
        let mut command = Config::command();
        // Only `--config` matters here; `--help` and the like are answered
        // by the full parse below (as an error: this never exits).
        let path = Config::command()
            .ignore_errors(true)
            .try_get_matches_from(args.clone())
            .ok()
            .and_then(|matches| matches.get_one::<std::path::PathBuf>("config").cloned());
        let mut tables = partners::Tables::default();
        let mut from_file = std::collections::BTreeSet::new();
        if let Some(path) = &path {
            let (settings, file_tables) = read_file(path)?;
            tables = file_tables;
            for (name, value) in settings {
                let id = name.replace('-', "_");
                from_file.insert(id.clone());
                if id == "config"
                    || !command
                        .get_arguments()
                        .any(|arg| arg.get_id() == id.as_str())
                {
                    anyhow::bail!("{}: unknown setting `{name}`", path.display());
                }
                // Startup only: the few bytes of each value live as long as the process.
                let value: &'static str = Box::leak(value.into_boxed_str());
                command = command.mut_arg(id, |arg| arg.default_value(value));
            }
        }
        let matches = command.try_get_matches_from(args)?;
        let mut config = Config::from_arg_matches(&matches)?;
        config.partners_given = matches!(
            matches.value_source("partners"),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        config.demo_keys = DEMO_KEY_SETTINGS
            .into_iter()
            .filter(|id| {
                matches!(matches.value_source(id), Some(ValueSource::DefaultValue))
                    && !from_file.contains(*id)
            })
            .collect();
        if !config.redis_url.is_empty() && !config.demo && !config.demo_keys.is_empty() {
            anyhow::bail!(
                "on Redis every key setting must be configured: {} not set (the demo keys \
                 apply in the embedded mode, or with `demo` = true)",
                config.demo_keys.join(", ")
            );
        }
        config.tables = tables;
        // Invalid partners stop startup here, naming the setting.
        let partners = config.partner_configs()?;
        config.partners_name_their_merchants(&partners)?;
        if config.instrument_secret.len() < 16 {
            return Err(SettingError {
                setting: "instrument_secret".into(),
                problem: "must be at least 16 characters (a long random secret)".into(),
            }
            .into());
        }
        let wait = config.redis_wait_timeout;
        if config.redis_wait_replicas > 0
            && (wait >= config.redis_response_timeout || wait < Duration::from_millis(1))
        {
            return Err(SettingError {
                setting: "redis_wait_timeout".into(),
                problem: format!(
                    "{:?} must be at least 1ms (WAIT 0 waits for ever) and below the response \
                     timeout ({:?})",
                    config.redis_wait_timeout, config.redis_response_timeout
                ),
            }
            .into());
        }
        for key in &config.partner_notifier_api_keys {
            for name in key.partners.iter().flatten() {
                if !partners.iter().any(|p| p.name == *name) {
                    return Err(SettingError {
                        setting: "partner_notifier_api_keys".into(),
                        problem: format!("names partner {name:?}, which is not configured"),
                    }
                    .into());
                }
            }
        }
        config.merchant_priorities_checked()?;
        Ok(config)
    }

    /// On Redis (outside the demo mode) with several merchants, every
    /// partner names the merchants that may use it: a partner that serves
    /// "everyone" by default would let one merchant authorize against
    /// another merchant's contract.
    fn partners_name_their_merchants(
        &self,
        partners: &[PartnerConfig],
    ) -> Result<(), SettingError> {
        let mut merchants: Vec<&str> = self.api_keys.iter().map(|k| k.merchant.as_str()).collect();
        merchants.sort_unstable();
        merchants.dedup();
        if self.demo_mode() || merchants.len() < 2 {
            return Ok(());
        }
        match partners.iter().find(|p| p.merchants.is_empty()) {
            Some(partner) => Err(SettingError {
                setting: format!("partners.{}.merchants", partner.name),
                problem: format!(
                    "several merchants are configured ({}): list those that may use partner {}",
                    merchants.join(", "),
                    partner.name
                ),
            }),
            None => Ok(()),
        }
    }

    /// Every partner: the file's, then those given by flag (which replace
    /// the file's of the same name). Credentials are read here.
    pub fn partner_configs(&self) -> Result<Vec<PartnerConfig>, SettingError> {
        let defaults = partners::Defaults {
            timeout: self.partner_timeout,
            authorization_lifetime: self.authorization_lifetime,
        };
        let mut by_name = std::collections::BTreeMap::new();
        for (name, entry) in &self.tables.partners {
            by_name.insert(name.clone(), entry.resolve(name, defaults)?);
        }
        if by_name.is_empty() || self.partners_given {
            for spec in &self.partners {
                by_name.insert(spec.name.clone(), spec.resolve(defaults));
            }
        }
        for partner in by_name.values() {
            // A leg is sent only under a send claim that lives the operation
            // lease: one whole call (every attempt in the retry window, a
            // read before a guarded send) must fit in it.
            let call = partner.timeout * 2 + partner.retry.window;
            if call > self.operation_lease {
                let setting = if partner.retry.window * 2 > self.operation_lease {
                    "retry_window"
                } else {
                    "timeout"
                };
                return Err(SettingError {
                    setting: format!("partners.{}.{setting}", partner.name),
                    problem: format!(
                        "2 × timeout ({:?}) + retry window ({:?}) = {:?} does not fit in the \
                         operation lease ({:?}) that each send claim lives",
                        partner.timeout, partner.retry.window, call, self.operation_lease
                    ),
                });
            }
        }
        Ok(by_name.into_values().collect())
    }

    /// The defaults, as `cargo run` with no flags or environment gets them.
    pub fn embedded() -> Config {
        Config::parse_from(["payment-orchestrator"])
    }

    pub fn priorities(&self) -> DefaultPriorities {
        DefaultPriorities {
            capture: self.capture_priority.clone(),
            refund: self.refund_priority.clone(),
            void: self.void_priority.clone(),
        }
    }

    /// The defaults with each merchant's overrides applied: the file's
    /// `[merchants]`, then `--merchant-priorities` (which wins).
    pub fn merchant_priorities(&self) -> std::collections::BTreeMap<String, DefaultPriorities> {
        // Checked at load; a merchant table that does not parse sets nothing.
        self.merchant_priorities_checked().unwrap_or_default()
    }

    fn merchant_priorities_checked(
        &self,
    ) -> Result<std::collections::BTreeMap<String, DefaultPriorities>, SettingError> {
        let mut by_merchant = std::collections::BTreeMap::new();
        for (merchant, entry) in &self.tables.merchants {
            let priorities = by_merchant
                .entry(merchant.clone())
                .or_insert_with(|| self.priorities());
            for (kind, rules) in entry.priorities(merchant)? {
                let kind = match kind {
                    "capture" => OperationKind::Capture,
                    "refund" => OperationKind::Refund,
                    _ => OperationKind::Void,
                };
                priorities.set(kind, rules);
            }
        }
        for entry in &self.merchant_priorities {
            by_merchant
                .entry(entry.merchant.clone())
                .or_insert_with(|| self.priorities())
                .set(entry.kind, entry.rules.clone());
        }
        Ok(by_merchant)
    }
}

// Hashes are not secret, but keep `Debug` short and uniform with future
// secret settings.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field(
                "merchants",
                &self
                    .api_keys
                    .iter()
                    .map(|k| &k.merchant)
                    .collect::<Vec<_>>(),
            )
            .field("partners", &self.partners)
            .field("partner_timeout", &self.partner_timeout)
            .field("idempotency_ttl", &self.idempotency_ttl)
            .field("session_expiry", &self.session_expiry)
            // URLs may carry a password: say only which store is used.
            .field(
                "store",
                &match (self.redis_url.is_empty(), self.redis_cluster) {
                    (true, _) => "memory",
                    (false, false) => "redis",
                    (false, true) => "redis-cluster",
                },
            )
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyHash {
    pub merchant: String,
    pub sha256: String,
}

impl FromStr for ApiKeyHash {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (merchant, sha256) = text.split_once(':').ok_or("expected merchant:sha256hex")?;
        let hex_ok = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if merchant.is_empty() || !hex_ok {
            return Err("expected merchant:sha256hex (64 hex digits)".into());
        }
        Ok(ApiKeyHash {
            merchant: merchant.to_owned(),
            sha256: sha256.to_ascii_lowercase(),
        })
    }
}

/// A partner notifier's key and the partners it speaks for (`None`: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierKeyHash {
    pub partners: Option<Vec<String>>,
    pub sha256: String,
}

impl FromStr for NotifierKeyHash {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expected = "expected partner|partner:sha256hex (or *:sha256hex for every partner)";
        let (partners, sha256) = text.split_once(':').ok_or(expected)?;
        let sha256 = parse_key_hash(sha256).map_err(|_| expected)?;
        let partners = match partners {
            "*" => None,
            names => {
                let names: Vec<String> = names.split('|').map(str::to_owned).collect();
                if names.iter().any(String::is_empty) {
                    return Err(expected.into());
                }
                Some(names)
            }
        };
        Ok(NotifierKeyHash { partners, sha256 })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerSpec {
    pub name: String,
    pub methods: Vec<String>,
    /// A `PartnerGatewayService` to reach it through; in-process sandbox if unset.
    pub gateway: Option<String>,
}

impl FromStr for PartnerSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, rest) = text
            .split_once('=')
            .ok_or("expected name=method|method[@url]")?;
        let (methods, gateway) = match rest.split_once('@') {
            Some((methods, url)) if url.starts_with("http://") || url.starts_with("https://") => {
                (methods, Some(url.to_owned()))
            }
            Some(_) => return Err("the gateway after @ must be an http(s) URL".into()),
            None => (rest, None),
        };
        let methods: Vec<String> = methods.split('|').map(str::to_owned).collect();
        if !partners::is_identifier(name) || !methods.iter().all(|m| partners::is_identifier(m)) {
            return Err("partner and method names are 1-64 of a-z 0-9 _ -".into());
        }
        Ok(PartnerSpec {
            name: name.to_owned(),
            methods,
            gateway,
        })
    }
}

/// Reads the configuration file: its top-level settings as text (strings
/// as they are, numbers and booleans printed, arrays joined with commas), and
/// its tables.
fn read_file(path: &std::path::Path) -> anyhow::Result<(Vec<(String, String)>, partners::Tables)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} (setting `config`)", path.display()))?;
    let mut document: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let mut tables = toml::Table::new();
    for name in ["partners", "merchants"] {
        if let Some(table) = document.remove(name) {
            tables.insert(name.to_owned(), table);
        }
    }
    let tables: partners::Tables = toml::Value::Table(tables)
        .try_into()
        .with_context(|| format!("{}: in [partners] or [merchants]", path.display()))?;
    let mut settings = Vec::new();
    for (name, value) in document {
        let text = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            toml::Value::Array(values) => values
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(text) => Ok(text),
                    _ => anyhow::bail!("{}: `{name}`: a list of strings", path.display()),
                })
                .collect::<anyhow::Result<Vec<_>>>()?
                .join(","),
            _ => anyhow::bail!(
                "{}: unknown setting `{name}` (tables are [partners] and [merchants])",
                path.display()
            ),
        };
        settings.push((name, text));
    }
    Ok((settings, tables))
}

/// A merchant's webhook signing secret, `merchant:whsec_<base64>`. Never
/// printed. A merchant may have several (every one signs).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    pub merchant: String,
    pub key: SigningKey,
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecret({}, <redacted>)", self.merchant)
    }
}

impl FromStr for WebhookSecret {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            Some((merchant, secret)) if !merchant.is_empty() => Ok(WebhookSecret {
                merchant: merchant.to_owned(),
                key: SigningKey::parse(secret)?,
            }),
            _ => Err("expected merchant:whsec_<base64>".into()),
        }
    }
}

fn parse_key_hash(text: &str) -> Result<String, String> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err("expected a SHA-256 hex digest (64 hex digits)".into())
    }
}

/// One merchant's priority for one kind of operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantPriority {
    pub merchant: String,
    pub kind: OperationKind,
    pub rules: Vec<PriorityRule>,
}

fn parse_merchant_priority(text: &str) -> Result<MerchantPriority, String> {
    let invalid = || format!("{text:?}: expected merchant:kind=partner:method|partner:method");
    let (merchant, rest) = text.trim().split_once(':').ok_or_else(invalid)?;
    let (kind, rules) = rest.split_once('=').ok_or_else(invalid)?;
    let kind = match kind {
        "capture" => OperationKind::Capture,
        "refund" => OperationKind::Refund,
        "void" => OperationKind::Void,
        _ => return Err(format!("{text:?}: the kind is capture, refund or void")),
    };
    let rules = rules
        .split('|')
        .map(parse_rule)
        .collect::<Result<Vec<_>, _>>()?;
    if merchant.is_empty() {
        return Err(invalid());
    }
    Ok(MerchantPriority {
        merchant: merchant.to_owned(),
        kind,
        rules,
    })
}

fn parse_rule(text: &str) -> Result<PriorityRule, String> {
    PriorityRule::parse(text).ok_or_else(|| format!("{text:?}: expected partner:method, * for any"))
}

/// `500ms`, `10s`, `30m`, `24h`, `30d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?}: expected a number with ms, s, m, h or d");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let seconds = |factor: u64| {
        number
            .checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(invalid)
    };
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86400),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_demo_key_hash_is_the_hash_of_the_documented_key() {
        assert_eq!(hex::encode(Sha256::digest(b"sk_test_demo")), DEMO_KEY_HASH);
        let config = Config::embedded();
        assert_eq!(config.api_keys[0].sha256, DEMO_KEY_HASH);
        assert_eq!(config.partners.len(), 2);
    }

    #[test]
    fn a_config_file_sits_between_the_defaults_and_the_flags() {
        let path = std::env::temp_dir().join(format!("po-config-{}.conf", std::process::id()));
        std::fs::write(
            &path,
            "# comment\nsession-expiry = \"10m\"\npartner_timeout = \"3s\"\nlisten = \"127.0.0.1:6000\"\n",
        )
        .unwrap();
        let args = |extra: &[&str]| -> Vec<OsString> {
            ["payment-orchestrator", "--config", path.to_str().unwrap()]
                .iter()
                .chain(extra)
                .map(OsString::from)
                .collect()
        };
        let config = Config::load_from(args(&["--partner-timeout", "7s"])).unwrap();
        assert_eq!(
            config.session_expiry,
            Duration::from_secs(600),
            "from the file"
        );
        assert_eq!(
            config.partner_timeout,
            Duration::from_secs(7),
            "the flag wins"
        );
        assert_eq!(config.listen.to_string(), "127.0.0.1:6000");
        assert_eq!(
            config.idempotency_ttl,
            Duration::from_secs(86400),
            "default kept"
        );
        std::fs::write(&path, "no-such-setting = 1\n").unwrap();
        let error = Config::load_from(args(&[])).unwrap_err().to_string();
        assert!(
            error.contains("unknown setting `no-such-setting`"),
            "{error}"
        );
        let _ = std::fs::remove_file(&path);
    }

    fn load_file(content: &str) -> anyhow::Result<Config> {
        let path = std::env::temp_dir().join(format!("po-config-{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(&path, content).unwrap();
        let result = Config::load_from(vec![
            "payment-orchestrator".into(),
            "--config".into(),
            path.clone().into_os_string(),
        ]);
        let _ = std::fs::remove_file(&path);
        result
    }

    #[test]
    fn partner_tables_resolve_with_their_kinds_defaults_and_credentials_from_files() {
        let secret = std::env::temp_dir().join(format!("po-secret-{}", uuid::Uuid::now_v7()));
        std::fs::write(&secret, "s3cret\n").unwrap();
        let config = load_file(&format!(
            r#"
[partners.walley]
kind = "walley"
methods = ["invoice"]
currencies = ["SEK", "EUR"]
base_url = "https://api.walleypay.example/"
client_id = "checkout"
client_secret_file = "{secret}"

[partners.wepay]
kind = "wepay"
methods = ["creditcard"]
base_url = "https://wepayapi.example/v2"
account_id = "1001"
access_token_file = "{secret}"
capabilities = {{ partial_refund = false }}

[merchants.demo]
priorities = {{ capture = ["wepay:*", "*:*"] }}
"#,
            secret = secret.display()
        ))
        .unwrap();
        let partners = config.partner_configs().unwrap();
        let _ = std::fs::remove_file(&secret);
        let names: Vec<&str> = partners.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["walley", "wepay"], "the file's partners only");
        let (walley, wepay) = (&partners[0], &partners[1]);
        assert!(walley.capabilities.partial_capture && !walley.capabilities.partial_void);
        assert_eq!(walley.retry.window, Duration::from_secs(10));
        assert_eq!(walley.currencies.len(), 2);
        assert!(!wepay.capabilities.partial_capture && !wepay.capabilities.partial_refund);
        assert!(!wepay.capabilities.concurrent_refunds);
        assert_eq!(
            wepay.authorization_lifetime,
            Duration::from_secs(14 * 86_400)
        );
        match &walley.kind {
            partners::PartnerKind::Walley(settings) => {
                assert_eq!(settings.client_secret.expose(), "s3cret");
                assert_eq!(settings.base_url, "https://api.walleypay.example");
                assert!(!format!("{settings:?}").contains("s3cret"));
            }
            other => panic!("{other:?}"),
        }
        let priorities = config.merchant_priorities();
        assert_eq!(priorities["demo"].capture[0].to_string(), "wepay:*");
    }

    #[test]
    fn an_invalid_partner_table_stops_startup_naming_the_setting() {
        let walley = |extra: &str| {
            format!(
                "[partners.walley]\nkind = \"walley\"\nmethods = [\"invoice\"]\n\
                 base_url = \"https://w.example\"\nclient_id = \"c\"\n{extra}"
            )
        };
        for (content, setting) in [
            (
                "[partners.x]\nkind = \"paypal\"\nmethods = [\"m\"]\n".to_owned(),
                "partners.x.kind",
            ),
            (
                "[partners.x]\nkind = \"sandbox\"\nmethods = []\n".to_owned(),
                "partners.x.methods",
            ),
            (
                "[partners.x]\nkind = \"grpc\"\nmethods = [\"m\"]\n".to_owned(),
                "partners.x.url",
            ),
            (
                walley("client_secret = \"inline\"\n"),
                "partners.walley.client_secret",
            ),
            (walley(""), "partners.walley.client_secret_env"),
            (
                walley("client_secret_env = \"PO_TEST_SURELY_UNSET_VARIABLE\"\n"),
                "partners.walley.client_secret_env",
            ),
            (
                walley("client_secret_file = \"/nonexistent/secret\"\n"),
                "partners.walley.client_secret_file",
            ),
            (
                "[partners.x]\nkind = \"sandbox\"\nmethods = [\"m\"]\ncurrencies = [\"EURO\"]\n"
                    .to_owned(),
                "partners.x.currencies",
            ),
            (
                "[partners.x]\nkind = \"sandbox\"\nmethods = [\"m\"]\ntimeout = \"soon\"\n"
                    .to_owned(),
                "partners.x.timeout",
            ),
            (
                "[partners.x]\nkind = \"sandbox\"\nmethods = [\"m\"]\nretry_window = \"2m\"\n"
                    .to_owned(),
                "partners.x.retry_window",
            ),
        ] {
            let error = load_file(&content).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("{setting}:")),
                "{setting}: {error}"
            );
        }
    }

    #[test]
    fn durations_and_partner_specs_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert!(parse_duration("soon").is_err());
        assert!("bad spec".parse::<PartnerSpec>().is_err());
        let spec: PartnerSpec = "adyen=creditcard|paypal".parse().unwrap();
        assert_eq!(spec.methods, vec!["creditcard", "paypal"]);
    }

    #[test]
    fn merchant_priorities_override_one_kind_each() {
        let config = Config::parse_from([
            "payment-orchestrator",
            "--merchant-priorities",
            "demo:capture=*:creditcard|*:*;demo:void=illicado:*",
        ]);
        let demo = &config.merchant_priorities()["demo"];
        assert_eq!(demo.capture[0].to_string(), "*:creditcard");
        assert_eq!(demo.void[0].to_string(), "illicado:*");
        assert_eq!(demo.refund, config.priorities().refund, "unchanged");
        assert!(parse_merchant_priority("demo:authorize=*:*").is_err());
    }
}
