//! Setting values that are more than a number or a duration: API key
//! hashes, partner specs, webhook secrets, priorities. Durations are
//! [`clock::parse_duration`](crate::clock::parse_duration)'s.

use std::{fmt, str::FromStr};

use super::partners;
use crate::{
    domain::{operation::OperationKind, priority::PriorityRule},
    webhooks::SigningKey,
};

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

pub(super) fn parse_key_hash(text: &str) -> Result<String, String> {
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

pub(super) fn parse_merchant_priority(text: &str) -> Result<MerchantPriority, String> {
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

pub(super) fn parse_rule(text: &str) -> Result<PriorityRule, String> {
    PriorityRule::parse(text).ok_or_else(|| format!("{text:?}: expected partner:method, * for any"))
}
