//! Configuration: every setting is a flag and an environment variable
//! (`PAYMENT_ORCHESTRATOR_*`) and shows in `--help`. Defaults make
//! `cargo run` a working embedded service: in-memory store, the two sandbox
//! partners and the demo merchant.

mod file;
mod partners;
mod settings;
mod values;

use std::{ffi::OsString, fmt, time::Duration};

use clap::{CommandFactory, FromArgMatches, Parser, parser::ValueSource};

pub use partners::{PartnerConfig, PartnerKind, SettingError};
pub use settings::{
    KeySettings, PartnerSettings, PaymentSettings, RedisSettings, ServerSettings, TelemetryFlags,
    WebhookSettings, WorkerSettings,
};
pub use values::{ApiKeyHash, MerchantPriority, NotifierKeyHash, PartnerSpec, WebhookSecret};

use crate::{
    domain::{operation::OperationKind, priority::DefaultPriorities},
    partners::health::CircuitSettings,
    webhooks::destinations::Destinations,
};

/// The settings whose defaults are demo keys.
const DEMO_KEY_SETTINGS: [&str; 5] = [
    "api_keys",
    "admin_api_keys",
    "partner_notifier_api_keys",
    "webhook_secrets",
    "instrument_secret",
];

/// The longest `--payment-retention` (times beyond it do not add up).
const MAX_RETENTION: Duration = Duration::from_secs(100 * 366 * 86_400);

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

    /// The key settings left at their demo default (neither given by flag,
    /// environment nor file).
    #[arg(skip)]
    pub demo_keys: Vec<&'static str>,

    #[command(flatten)]
    pub server: ServerSettings,

    #[command(flatten)]
    pub telemetry: TelemetryFlags,

    #[command(flatten)]
    pub keys: KeySettings,

    #[command(flatten)]
    pub partners: PartnerSettings,

    #[command(flatten)]
    pub payments: PaymentSettings,

    #[command(flatten)]
    pub webhooks: WebhookSettings,

    #[command(flatten)]
    pub workers: WorkerSettings,

    #[command(flatten)]
    pub redis: RedisSettings,
}

impl Config {
    /// Whether the callback listener's address was given (rather than
    /// derived from the metrics port on the embedded default).
    pub fn callback_listen_given(&self) -> bool {
        self.server.callback_listen.is_some()
    }

    /// Where the partner callback listener listens, if anywhere (see
    /// `--callback-listen`).
    pub fn callback_listen(&self) -> anyhow::Result<Option<std::net::SocketAddr>> {
        use anyhow::Context;
        let written = match self.server.callback_listen.as_deref() {
            Some("off") => return Ok(None),
            Some(address) => address.to_owned(),
            None if self.redis.redis_url.is_empty() && self.telemetry.metrics_listen != "off" => {
                let metrics: std::net::SocketAddr = self
                    .telemetry
                    .metrics_listen
                    .parse()
                    .context("setting `metrics_listen`: expected host:port or off")?;
                let port = match metrics.port() {
                    0 => 0,
                    port => port.checked_add(1).context(
                        "setting `metrics_listen`: no port beside it for the callback listener",
                    )?,
                };
                return Ok(Some(std::net::SocketAddr::new(metrics.ip(), port)));
            }
            None => return Ok(None),
        };
        written
            .parse()
            .map(Some)
            .context("setting `callback_listen`: expected host:port or off")
    }
}

impl Config {
    /// The embedded mode, or `--demo`: demo keys, and webhooks to this
    /// machine over HTTP, are allowed.
    pub fn demo_mode(&self) -> bool {
        self.redis.redis_url.is_empty() || self.keys.demo
    }

    /// Where webhooks may go: what is configured, or in the demo mode HTTP(S)
    /// to loopback besides public hosts.
    pub fn webhook_destinations(&self) -> Destinations {
        let demo = self.demo_mode();
        let schemes = self
            .webhooks
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
        let networks = self
            .webhooks
            .webhook_allowed_networks
            .clone()
            .unwrap_or_else(|| {
                if demo {
                    ["127.0.0.0/8", "::1/128"]
                        .iter()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                } else {
                    Vec::new()
                }
            });
        Destinations::new(
            schemes,
            self.webhooks.webhook_allowed_hosts.clone(),
            networks,
        )
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
            let (settings, file_tables) = file::read_file(path)?;
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
        if !config.redis.redis_url.is_empty() && !config.keys.demo && !config.demo_keys.is_empty() {
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
        if config.keys.instrument_secret.len() < 16 {
            return Err(SettingError {
                setting: "instrument_secret".into(),
                problem: "must be at least 16 characters (a long random secret)".into(),
            }
            .into());
        }
        if let Some(retention) = config.payments.payment_retention
            && (retention < config.payments.idempotency_ttl
                || retention.is_zero()
                || retention > MAX_RETENTION)
        {
            // A retry within the TTL must find its payment (or its answer).
            return Err(SettingError {
                setting: "payment_retention".into(),
                problem: format!(
                    "{retention:?} must be above zero, at least the idempotency TTL ({:?}) \
                     and at most 100 years",
                    config.payments.idempotency_ttl
                ),
            }
            .into());
        }
        let wait = config.redis.redis_wait_timeout;
        if config.redis.redis_wait_replicas > 0
            && (wait >= config.redis.redis_response_timeout || wait < Duration::from_millis(1))
        {
            return Err(SettingError {
                setting: "redis_wait_timeout".into(),
                problem: format!(
                    "{:?} must be at least 1ms (WAIT 0 waits for ever) and below the response \
                     timeout ({:?})",
                    config.redis.redis_wait_timeout, config.redis.redis_response_timeout
                ),
            }
            .into());
        }
        for key in &config.keys.partner_notifier_api_keys {
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
        let mut merchants: Vec<&str> = self
            .keys
            .api_keys
            .iter()
            .map(|k| k.merchant.as_str())
            .collect();
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
            timeout: self.partners.partner_timeout,
            authorization_lifetime: self.partners.authorization_lifetime,
            circuit: CircuitSettings {
                enabled: self.partners.circuit_failures > 0,
                // Off by default, a partner's table may still turn it on.
                failures: match self.partners.circuit_failures {
                    0 => CircuitSettings::default().failures,
                    failures => failures,
                },
                cool_down: self.partners.circuit_cool_down,
            },
        };
        let mut by_name = std::collections::BTreeMap::new();
        for (name, entry) in &self.tables.partners {
            by_name.insert(name.clone(), entry.resolve(name, defaults)?);
        }
        if by_name.is_empty() || self.partners_given {
            for spec in &self.partners.partners {
                by_name.insert(spec.name.clone(), spec.resolve(defaults));
            }
        }
        for partner in by_name.values() {
            // A leg is sent only under a send claim that lives the operation
            // lease: one whole call (every attempt in the retry window, a
            // read before a guarded send) must fit in it.
            let call = partner.timeout * 2 + partner.retry.window;
            if call > self.payments.operation_lease {
                let setting = if partner.retry.window * 2 > self.payments.operation_lease {
                    "retry_window"
                } else {
                    "timeout"
                };
                return Err(SettingError {
                    setting: format!("partners.{}.{setting}", partner.name),
                    problem: format!(
                        "2 × timeout ({:?}) + retry window ({:?}) = {:?} does not fit in the \
                         operation lease ({:?}) that each send claim lives",
                        partner.timeout, partner.retry.window, call, self.payments.operation_lease
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
            capture: self.payments.capture_priority.clone(),
            refund: self.payments.refund_priority.clone(),
            void: self.payments.void_priority.clone(),
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
        for entry in &self.payments.merchant_priorities {
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
            .field("listen", &self.server.listen)
            .field(
                "merchants",
                &self
                    .keys
                    .api_keys
                    .iter()
                    .map(|k| &k.merchant)
                    .collect::<Vec<_>>(),
            )
            .field("partners", &self.partners.partners)
            .field("partner_timeout", &self.partners.partner_timeout)
            .field("idempotency_ttl", &self.payments.idempotency_ttl)
            .field("session_expiry", &self.payments.session_expiry)
            // URLs may carry a password: say only which store is used.
            .field(
                "store",
                &match (self.redis.redis_url.is_empty(), self.redis.redis_cluster) {
                    (true, _) => "memory",
                    (false, false) => "redis",
                    (false, true) => "redis-cluster",
                },
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
