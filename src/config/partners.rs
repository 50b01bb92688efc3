//! Partners and merchants as the configuration file describes them:
//!
//! ```toml
//! [partners.walley]
//! kind = "walley"                      # sandbox | grpc | walley | wepay
//! methods = ["invoice"]
//! currencies = ["SEK", "EUR"]          # default: any
//! base_url = "https://api.walleypay.com"
//! client_id = "checkout-prod"
//! client_secret_env = "WALLEY_CLIENT_SECRET"   # or client_secret_file
//! timeout = "10s"
//! retry_window = "10s"
//! authorization_lifetime = "28d"
//! capabilities = { partial_void = false }
//! settlement_reports = true           # default: the kind's (wepay: false)
//! paths = { capture = "/manage/orders/{id}/capture" }  # walley; defaults below
//! store_id = 123                      # walley: hosted checkouts' store (default: the account's)
//! country_code = "SE"                 # walley: hosted checkouts' country (default SE)
//! circuit = { failures = 5, cool_down = "30s" }  # default: the --circuit-* flags
//!
//! [merchants.demo]
//! priorities = { capture = ["*:giftcard", "*:*"] }
//! ```
//!
//! Credentials come from an environment variable (`…_env`) or a mounted file
//! (`…_file`), never from the file itself. Every error names the setting.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::PartnerSpec;
use crate::{
    clock::parse_duration,
    domain::{capabilities::Capabilities, money::Currency, priority::PriorityRule},
    partners::{RetryPolicy, Secret, health::CircuitSettings, walley, wepay},
};

/// The `[partners]` and `[merchants]` tables of the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tables {
    #[serde(default)]
    pub partners: BTreeMap<String, PartnerEntry>,
    #[serde(default)]
    pub merchants: BTreeMap<String, MerchantEntry>,
}

/// One `[partners.<name>]` table, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerEntry {
    kind: String,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    currencies: Vec<String>,
    #[serde(default)]
    merchants: Vec<String>,
    /// A gRPC gateway (`grpc`).
    url: Option<String>,
    /// An HTTP API (`walley`, `wepay`).
    base_url: Option<String>,
    /// A private CA (PEM) the partner's certificate chains to, beside the
    /// system's roots.
    ca_file: Option<PathBuf>,
    client_id: Option<String>,
    scope: Option<String>,
    /// Walley: the store hosted checkouts are opened for, and its country.
    store_id: Option<i64>,
    country_code: Option<String>,
    account_id: Option<String>,
    // Refused: a secret is never written in the file. Kept as values only to
    // say so by name.
    client_secret: Option<toml::Value>,
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
    access_token: Option<toml::Value>,
    access_token_env: Option<String>,
    access_token_file: Option<PathBuf>,
    timeout: Option<String>,
    retry_window: Option<String>,
    retry_first_pause: Option<String>,
    authorization_lifetime: Option<String>,
    #[serde(default)]
    capabilities: CapabilitiesEntry,
    /// Whether its settlements are imported (and our captures and refunds
    /// expected in them); default: whether its kind reports settlements.
    settlement_reports: Option<bool>,
    /// Walley: each call's path template.
    #[serde(default)]
    paths: PathsEntry,
    /// When its circuit opens, and for how long.
    #[serde(default)]
    circuit: CircuitEntry,
}

/// A partner's circuit as written: what is not written keeps the default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CircuitEntry {
    enabled: Option<bool>,
    failures: Option<u32>,
    cool_down: Option<String>,
}

/// Walley's paths as written: what is not written keeps its default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathsEntry {
    order: Option<String>,
    capture: Option<String>,
    refund: Option<String>,
    cancel: Option<String>,
}

impl PathsEntry {
    fn paths(
        &self,
        fail: impl Fn(&str, String) -> SettingError,
    ) -> Result<walley::Paths, SettingError> {
        let defaults = walley::Paths::default();
        let pick = |key: &str, written: &Option<String>, default: String| match written {
            None => Ok(default),
            Some(template) => walley::Paths::check(template)
                .map(|()| template.clone())
                .map_err(|why| fail(&format!("paths.{key}"), why)),
        };
        Ok(walley::Paths {
            order: pick("order", &self.order, defaults.order)?,
            capture: pick("capture", &self.capture, defaults.capture)?,
            refund: pick("refund", &self.refund, defaults.refund)?,
            cancel: pick("cancel", &self.cancel, defaults.cancel)?,
        })
    }
}

/// Capabilities as written: what is not written keeps the kind's default.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilitiesEntry {
    partial_capture: Option<bool>,
    multiple_captures: Option<bool>,
    partial_refund: Option<bool>,
    multiple_refunds: Option<bool>,
    partial_void: Option<bool>,
    concurrent_refunds: Option<bool>,
}

/// One `[merchants.<name>]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantEntry {
    #[serde(default)]
    pub priorities: PrioritiesEntry,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrioritiesEntry {
    pub capture: Option<Vec<String>>,
    pub refund: Option<Vec<String>>,
    pub void: Option<Vec<String>>,
}

/// A partner ready to be built.
#[derive(Debug, Clone)]
pub struct PartnerConfig {
    pub name: String,
    pub kind: PartnerKind,
    pub methods: Vec<String>,
    pub currencies: Vec<Currency>,
    pub merchants: Vec<String>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub capabilities: Capabilities,
    pub authorization_lifetime: Duration,
    /// `None`: as the kind does.
    pub settlement_reports: Option<bool>,
    pub circuit: CircuitSettings,
}

#[derive(Debug, Clone)]
pub enum PartnerKind {
    /// The in-process sandbox.
    Sandbox,
    /// A `PartnerGatewayService`, over TLS for an `https://` URL.
    Grpc {
        url: String,
        ca_pem: Option<Vec<u8>>,
    },
    Walley(walley::Settings),
    Wepay(wepay::Settings),
}

impl PartnerKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PartnerKind::Sandbox => "sandbox",
            PartnerKind::Grpc { .. } => "grpc",
            PartnerKind::Walley(_) => "walley",
            PartnerKind::Wepay(_) => "wepay",
        }
    }
}

/// A configuration error, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct SettingError {
    pub setting: String,
    pub problem: String,
}

/// What a partner gets when its table does not say.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub timeout: Duration,
    pub authorization_lifetime: Duration,
    pub circuit: CircuitSettings,
}

/// Partner and method names: 1-64 of a-z 0-9 _ -.
pub fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
}

impl PartnerEntry {
    /// Checks the table and reads its credentials.
    pub fn resolve(&self, name: &str, defaults: Defaults) -> Result<PartnerConfig, SettingError> {
        let at = |key: &str| format!("partners.{name}.{key}");
        let fail = |key: &str, problem: String| SettingError {
            setting: at(key),
            problem,
        };
        if !is_identifier(name) {
            return Err(SettingError {
                setting: format!("partners.{name}"),
                problem: "partner names are 1-64 of a-z 0-9 _ -".into(),
            });
        }
        if self.methods.is_empty() || !self.methods.iter().all(|m| is_identifier(m)) {
            return Err(fail(
                "methods",
                "one or more methods, each 1-64 of a-z 0-9 _ -".into(),
            ));
        }
        let currencies = self
            .currencies
            .iter()
            .map(|code| Currency::parse(code).map_err(|e| fail("currencies", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let duration = |key: &str, value: &Option<String>, default: Duration| match value {
            Some(text) => parse_duration(text).map_err(|problem| fail(key, problem)),
            None => Ok(default),
        };
        let ca_pem = match &self.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| fail("ca_file", format!("cannot read {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let base_url = || {
            let url = self
                .base_url
                .clone()
                .ok_or_else(|| fail("base_url", format!("required for kind {}", self.kind)))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(fail("base_url", "must be an http(s) URL".into()));
            }
            Ok(url.trim_end_matches('/').to_owned())
        };
        let required = |key: &str, value: &Option<String>| {
            value
                .clone()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| fail(key, format!("required for kind {}", self.kind)))
        };
        let (kind, kind_defaults) = match self.kind.as_str() {
            "sandbox" => (PartnerKind::Sandbox, KindDefaults::ALL),
            "grpc" => {
                let url = required("url", &self.url)?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(fail("url", "must be an http(s) URL".into()));
                }
                (PartnerKind::Grpc { url, ca_pem }, KindDefaults::ALL)
            }
            "walley" => (
                PartnerKind::Walley(walley::Settings {
                    base_url: base_url()?,
                    client_id: required("client_id", &self.client_id)?,
                    client_secret: secret(
                        name,
                        "client_secret",
                        &self.client_secret,
                        &self.client_secret_env,
                        &self.client_secret_file,
                    )?,
                    scope: self.scope.clone().unwrap_or_default(),
                    ca_pem,
                    paths: self.paths.paths(fail)?,
                    store_id: self.store_id,
                    country_code: self.country_code.clone().unwrap_or_else(|| "SE".into()),
                }),
                KindDefaults::WALLEY,
            ),
            "wepay" => (
                PartnerKind::Wepay(wepay::Settings {
                    base_url: base_url()?,
                    account_id: required("account_id", &self.account_id)?
                        .parse()
                        .map_err(|_| fail("account_id", "a WePay account id (digits)".into()))?,
                    access_token: secret(
                        name,
                        "access_token",
                        &self.access_token,
                        &self.access_token_env,
                        &self.access_token_file,
                    )?,
                    ca_pem,
                }),
                KindDefaults::WEPAY,
            ),
            other => {
                return Err(fail(
                    "kind",
                    format!("{other:?} is not one of sandbox, grpc, walley, wepay"),
                ));
            }
        };
        let retry = RetryPolicy {
            first_pause: duration(
                "retry_first_pause",
                &self.retry_first_pause,
                kind_defaults.retry.first_pause,
            )?,
            window: duration(
                "retry_window",
                &self.retry_window,
                kind_defaults.retry.window,
            )?,
        };
        let c = self.capabilities;
        let d = kind_defaults.capabilities;
        // What a kind's connector cannot do is not granted by a setting: a
        // WePay refund has no idempotency key (one at a time), a Walley
        // cancel releases all that is not captured (no partial void).
        for (key, asked, can) in [
            ("partial_capture", c.partial_capture, d.partial_capture),
            (
                "multiple_captures",
                c.multiple_captures,
                d.multiple_captures,
            ),
            ("partial_refund", c.partial_refund, d.partial_refund),
            ("multiple_refunds", c.multiple_refunds, d.multiple_refunds),
            ("partial_void", c.partial_void, d.partial_void),
            (
                "concurrent_refunds",
                c.concurrent_refunds,
                d.concurrent_refunds,
            ),
        ] {
            if asked == Some(true) && !can {
                return Err(fail(
                    &format!("capabilities.{key}"),
                    "this kind of partner cannot: an override may only take a capability away"
                        .into(),
                ));
            }
        }
        Ok(PartnerConfig {
            name: name.to_owned(),
            kind,
            methods: self.methods.clone(),
            currencies,
            merchants: self.merchants.clone(),
            timeout: duration("timeout", &self.timeout, defaults.timeout)?,
            retry,
            capabilities: Capabilities {
                partial_capture: c.partial_capture.unwrap_or(d.partial_capture),
                multiple_captures: c.multiple_captures.unwrap_or(d.multiple_captures),
                partial_refund: c.partial_refund.unwrap_or(d.partial_refund),
                multiple_refunds: c.multiple_refunds.unwrap_or(d.multiple_refunds),
                partial_void: c.partial_void.unwrap_or(d.partial_void),
                concurrent_refunds: c.concurrent_refunds.unwrap_or(d.concurrent_refunds),
            },
            authorization_lifetime: duration(
                "authorization_lifetime",
                &self.authorization_lifetime,
                kind_defaults
                    .authorization_lifetime
                    .unwrap_or(defaults.authorization_lifetime),
            )?,
            settlement_reports: self.settlement_reports,
            circuit: CircuitSettings {
                enabled: self.circuit.enabled.unwrap_or(defaults.circuit.enabled),
                failures: match self.circuit.failures {
                    Some(0) => return Err(fail("circuit.failures", "at least 1".into())),
                    Some(failures) => failures,
                    None => defaults.circuit.failures,
                },
                cool_down: duration(
                    "circuit.cool_down",
                    &self.circuit.cool_down,
                    defaults.circuit.cool_down,
                )?,
            },
        })
    }
}

/// What each kind of partner supports and needs unless its table says
/// otherwise: the APIs' documented behaviour.
#[derive(Debug, Clone, Copy)]
struct KindDefaults {
    capabilities: Capabilities,
    retry: RetryPolicy,
    authorization_lifetime: Option<Duration>,
}

impl KindDefaults {
    const ALL: KindDefaults = KindDefaults {
        capabilities: Capabilities::ALL,
        retry: RetryPolicy::SHORT,
        authorization_lifetime: None,
    };

    /// Captures and refunds of any part, any number of times; a cancel
    /// releases all that is not captured (no partial void). A new order is
    /// `404`/`403` for a while: retried for 10 s, from a 1 s pause.
    const WALLEY: KindDefaults = KindDefaults {
        capabilities: Capabilities {
            partial_void: false,
            ..Capabilities::ALL
        },
        retry: RetryPolicy {
            first_pause: Duration::from_secs(1),
            window: Duration::from_secs(10),
        },
        authorization_lifetime: None,
    };

    /// One capture of the whole checkout; refunds of any part but without
    /// an idempotency key, so one at a time; cancel releases all. An
    /// uncaptured checkout is cancelled after 14 days.
    const WEPAY: KindDefaults = KindDefaults {
        capabilities: Capabilities {
            partial_capture: false,
            multiple_captures: false,
            partial_void: false,
            concurrent_refunds: false,
            ..Capabilities::ALL
        },
        retry: RetryPolicy::SHORT,
        authorization_lifetime: Some(Duration::from_secs(14 * 86_400)),
    };
}

/// A credential from `<key>_env` or `<key>_file`; `<key>` itself is refused.
fn secret(
    partner: &str,
    key: &str,
    inline: &Option<toml::Value>,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Secret, SettingError> {
    let setting = |suffix: &str| format!("partners.{partner}.{key}{suffix}");
    let fail = |suffix: &str, problem: String| SettingError {
        setting: setting(suffix),
        problem,
    };
    if inline.is_some() {
        return Err(fail(
            "",
            format!(
                "credentials are not written in the configuration file; \
                 name an environment variable ({key}_env) or a mounted file ({key}_file)"
            ),
        ));
    }
    let value = match (env, file) {
        (Some(_), Some(_)) => {
            return Err(fail(
                "_env",
                format!("give {key}_env or {key}_file, not both"),
            ));
        }
        (Some(variable), None) => std::env::var(variable).map_err(|_| {
            fail(
                "_env",
                format!("environment variable {variable} is not set"),
            )
        })?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| fail("_file", format!("cannot read {}: {e}", path.display())))?,
        (None, None) => {
            return Err(fail("_env", format!("required: {key}_env or {key}_file")));
        }
    };
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(fail(
            if env.is_some() { "_env" } else { "_file" },
            "the credential is empty".into(),
        ));
    }
    Ok(Secret::new(value))
}

impl PartnerSpec {
    /// A partner given by flag: an in-process sandbox, or a gateway.
    pub fn resolve(&self, defaults: Defaults) -> PartnerConfig {
        PartnerConfig {
            name: self.name.clone(),
            kind: match &self.gateway {
                Some(url) => PartnerKind::Grpc {
                    url: url.clone(),
                    ca_pem: None,
                },
                None => PartnerKind::Sandbox,
            },
            methods: self.methods.clone(),
            currencies: Vec::new(),
            merchants: Vec::new(),
            timeout: defaults.timeout,
            retry: RetryPolicy::SHORT,
            capabilities: Capabilities::ALL,
            authorization_lifetime: defaults.authorization_lifetime,
            settlement_reports: None,
            circuit: defaults.circuit,
        }
    }
}

impl MerchantEntry {
    /// The priorities it sets, by kind name, parsed.
    pub fn priorities(
        &self,
        merchant: &str,
    ) -> Result<Vec<(&'static str, Vec<PriorityRule>)>, SettingError> {
        let mut set = Vec::new();
        for (kind, rules) in [
            ("capture", &self.priorities.capture),
            ("refund", &self.priorities.refund),
            ("void", &self.priorities.void),
        ] {
            let Some(rules) = rules else { continue };
            let parsed = rules
                .iter()
                .map(|rule| {
                    PriorityRule::parse(rule).ok_or_else(|| SettingError {
                        setting: format!("merchants.{merchant}.priorities.{kind}"),
                        problem: format!("{rule:?}: expected partner:method, * for any"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            set.push((kind, parsed));
        }
        Ok(set)
    }
}
